#!/usr/bin/env bash
# The router's memory under sustained load, never scraped: RSS after each of
# ROUNDS rounds of 15 s of wrk (32 connections, POST /generate) against two
# instant upstreams. Flat is the promise (RELIABILITY.md, bounded memory).
#
#   ./host/benches/memory.sh [rounds, default 4]
#
# Installs wrk (Debian) if missing. Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-4}"
source host/benches/common.sh
need_wrk

instant_upstreams
generate_lua
port=$(free_port)
# shellcheck disable=SC2086
"$router" --port "$port" --prometheus-port "$(free_port)" --policy round_robin --worker-urls $urls \
    --max-concurrent-requests 0 --log-level warn & pids+=($!)
wait_port "$port"
router_pid=${pids[-1]}
rss() { awk '/VmRSS/ {print $2}' "/proc/$router_pid/status"; }
echo "| after | requests (total) | router RSS |"
echo "| --- | ---: | ---: |"
echo "| start | 0 | $(rss) kB |"
total=0
for round in $(seq "$rounds"); do
    n=$(wrk -t2 -c32 -d15s -s "$lua" "http://127.0.0.1:$port/generate" | awk '/requests in/ {print $1}')
    total=$((total + n))
    sleep 6 # past the recorder's 5 s upkeep
    echo "| round $round | $total | $(rss) kB |"
done
