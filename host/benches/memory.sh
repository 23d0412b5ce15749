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

up1=$(free_port); up2=$(free_port); port=$(free_port)
for p in "$up1" "$up2"; do
    "$router" sim-worker --port "$p" --fixed-response --log-level warn & pids+=($!)
    wait_port "$p"
done
"$router" --port "$port" --prometheus-port "$(free_port)" --policy round_robin \
    --worker-urls "http://127.0.0.1:$up1" "http://127.0.0.1:$up2" \
    --max-concurrent-requests 0 --log-level warn & pids+=($!)
wait_port "$port"
router_pid=${pids[-1]}
lua=$(mktemp)
cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"text": "What is the capital of France? Answer in one word."}'
LUA
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
