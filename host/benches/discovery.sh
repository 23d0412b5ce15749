#!/usr/bin/env bash
# Service discovery's figures (issue 32): pod Ready -> first request
# routed, pod deleted -> last new request (PODS pods, 20 unless set), and
# discovery of LARGE pods (1,000 unless set) with the router's RSS, all
# against `router sim-kube-api` on loopback. host/benches/discovery.py
# says how each is measured; it prints Markdown table rows.
#
#   ./host/benches/discovery.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh
echo "| figure | value |"
echo "| --- | --- |"
ROUTER="$router" python3 host/benches/discovery.py
