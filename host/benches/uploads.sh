#!/usr/bin/env bash
# The router's peak memory under 200 concurrent 10 MB uploads with
# `--max-concurrent-requests 16 --queue-size 16`, against the same 200
# requests with small bodies; each in a fresh router, peak RSS (VmHWM).
# Bodies are read only once admitted, so at most 16 are held whatever the
# number of uploads (RELIABILITY.md, bounded memory).
#
#   ./host/benches/uploads.sh            # the release router
#   ROUTER=target/debug/router ./host/benches/uploads.sh
#
# Each upload is sent at 2 MB/s (curl --limit-rate), so all 200 are in
# flight at once. Loopback only; bounded: 200 requests per run, curl gives
# up after 60 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh

instant_upstreams
big=$(mktemp)
small=$(mktemp)
python3 - "$big" "$small" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    json.dump({"text": "x" * (10 * 1024 * 1024)}, f)
with open(sys.argv[2], "w") as f:
    json.dump({"text": "What is the capital of France?"}, f)
PY

# run BODY: a fresh router, 200 concurrent POSTs of BODY; prints the
# router's peak RSS and the statuses seen.
run() {
    local body=$1 port
    port=$(free_port)
    # shellcheck disable=SC2086
    "$router" --port "$port" --prometheus-port "$(free_port)" --policy round_robin \
        --worker-urls $urls --max-concurrent-requests 16 --queue-size 16 \
        --log-level "${LOG_LEVEL:-error}" & pids+=($!)
    wait_port "$port"
    local router_pid=${pids[-1]} statuses
    statuses=$(mktemp)
    for _ in $(seq 200); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 60 --limit-rate 2M \
            -H 'content-type: application/json' --data-binary "@$body" \
            "http://127.0.0.1:$port/generate" >>"$statuses" &
    done
    wait_curls
    local peak
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$router_pid/status")
    echo "$peak kB | $(sort "$statuses" | uniq -c | awk '{printf "%s× %s ", $1, $2}')"
    stop_last
}

# Wait for every background job but the router and upstreams.
wait_curls() {
    local job
    for job in $(jobs -p); do
        case " ${pids[*]} " in *" $job "*) ;; *) wait "$job" || true ;; esac
    done
}

echo "| 200 concurrent requests | router peak RSS | statuses |"
echo "| --- | ---: | --- |"
echo "| small bodies | $(run "$small") |"
echo "| 10 MB uploads | $(run "$big") |"
