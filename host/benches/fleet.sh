#!/usr/bin/env bash
# One router in front of a thousand simulated workers (one `router
# sim-worker --count N` process, each worker publishing SGLang's KV events
# over ZMQ), the router following them all (`--kv-events`, health checks,
# load reads): how long until every worker is healthy and followed, the
# router's CPU at rest (after some requests, then SECONDS of nothing, from
# /proc), its RSS, and the size of its /metrics. The workers are pinned to
# core 0, the router to core 1.
#
#   ./host/benches/fleet.sh [workers, default 1000] [seconds at rest, default 30] [health check interval, default 60]
#
# Loopback only; every wait and load run is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-1000}"
secs="${2:-30}"
health="${3:-60}"
source host/benches/common.sh
ulimit -n "$(ulimit -Hn)"
tokenizer=host/cli/assets/tokenizer/tokenizer.json

list=$(mktemp)
taskset -c 0 "$router" sim-worker --count "$n" --tokenizer "$tokenizer" --kv-events-port 0 \
    --time-scale 0 --log-level warn >"$list" & pids+=($!)
for _ in $(seq 600); do [ "$(wc -l <"$list")" -ge "$n" ] && break; sleep 0.1; done
[ "$(wc -l <"$list")" -ge "$n" ] || { echo "the fleet never came up" >&2; exit 1; }

port=$(free_port); metrics=$(free_port)
started=$(date +%s.%N)
# shellcheck disable=SC2046
taskset -c 1 "$router" --port "$port" --prometheus-port "$metrics" --policy cache_aware \
    --worker-urls $(cat "$list") --kv-events --tokenizer-path "$tokenizer" \
    --health-check-interval-secs "$health" --log-level warn & pids+=($!)
pid=$!
wait_port "$port"
followed() { curl -s "http://127.0.0.1:$metrics/metrics" | awk '$1 == "wasm_router_kv_event_workers" {print $2}'; }
healthy() { curl -s "http://127.0.0.1:$metrics/metrics" | awk '$1 == "wasm_router_workers{state=\"healthy\"}" {print $2}'; }
for _ in $(seq 1200); do
    [ "$(healthy)" = "$n" ] && [ "$(followed)" = "$n" ] && break
    sleep 0.1
done
ready=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
[ "$(healthy)" = "$n" ] || { echo "only $(healthy) of $n workers healthy after 120 s" >&2; exit 1; }

generate_lua
secs_load=5
wrk -t1 -c8 -d"${secs_load}s" -s "$lua" "http://127.0.0.1:$port/generate" >/dev/null
sleep 2
tick=$(getconf CLK_TCK)
before=$(cpu_ticks "$pid")
sleep "$secs"
after=$(cpu_ticks "$pid")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
text=$(curl -s "http://127.0.0.1:$metrics/metrics")
python3 - "$n" "$ready" "$before" "$after" "$tick" "$secs" "$rss" "${#text}" "$(followed)" "$health" <<'PY'
import sys
n, ready, before, after, tick, secs, rss, size, followed, health = sys.argv[1:]
cpu = (int(after) - int(before)) / int(tick)
print(f"| workers | followed (KV events) | health checks every | ready after | router CPU at rest | RSS | /metrics |")
print(f"| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
print(f"| {n} | {followed} | {health} s | {ready} s | {100 * cpu / int(secs):.1f}% of a core ({cpu:.2f} s in {secs} s) "
      f"| {int(rss) / 1024:.0f} MiB | {int(size) / 1024:.0f} KiB |")
PY
rm -f "$list"
