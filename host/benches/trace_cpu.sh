#!/usr/bin/env bash
# Router CPU per request on a production-like trace, against sglang-router
# 0.3.2 in the same run: REQUESTS streamed /generate requests of about 3 KB
# (16 shared system prompts, Pareto-popular) sent open-loop at RATE per
# second (host/benches/trace_cpu.py) through 1 and 4 replicas of each
# router (cache_aware), to four simulated workers (`router sim-worker`, 64
# output tokens in 16 events, 1 ms per decoded token). Every router is
# pinned to core 1, the workers and the client to core 0; the CPU is each
# router process's utime+stime over the run, from /proc, summed over the
# replicas. Prints a Markdown table.
#
#   ./host/benches/trace_cpu.sh [requests, default 600] [rate, default 18]
#
# Installs sglang-router 0.3.2 in a venv under target/ if missing. Loopback
# only; bounded by the request count and a cap per request.
set -euo pipefail
cd "$(dirname "$0")/../.."
requests="${1:-600}"
rate="${2:-18}"
source host/benches/common.sh
sglang_router_venv
tick=$(getconf CLK_TCK)

urls=()
for _ in 1 2 3 4; do
    p=$(free_port)
    taskset -c 0 "$router" sim-worker --port "$p" --output-tokens 64 --stream-pieces 16 \
        --decode-us-per-token 1000 --prefill-us-per-token 20 --log-level warn & pids+=($!)
    wait_port "$p"
    urls+=("http://127.0.0.1:$p")
done

# start NAME: one replica of NAME (ours or sglang) on a free port; sets
# port, pid.
start() {
    port=$(free_port)
    case "$1" in
        ours) taskset -c 1 "$router" --port "$port" --prometheus-port "$(free_port)" --policy cache_aware \
                  --worker-urls "${urls[@]}" --log-level warn & pids+=($!) ;;
        sglang) taskset -c 1 "$venv/bin/python" -m sglang_router.launch_router --host 127.0.0.1 --port "$port" \
                    --policy cache_aware --worker-urls "${urls[@]}" --prometheus-port "$(free_port)" \
                    --log-level warn >/dev/null 2>&1 & pids+=($!) ;;
    esac
    pid=${pids[-1]}
    wait_port "$port"
}

# run NAME REPLICAS: "cpu ms per request|ok|failed"
run() {
    local ports=() procs=() before after out
    for _ in $(seq "$2"); do start "$1"; ports+=("http://127.0.0.1:$port"); procs+=("$pid"); done
    sleep 3
    before=$(cpu_ticks "${procs[@]}")
    out=$(taskset -c 0 python3 host/benches/trace_cpu.py "$requests" "$rate" 64 "${ports[@]}")
    after=$(cpu_ticks "${procs[@]}")
    for _ in "${procs[@]}"; do stop_last; done
    for u in "${urls[@]}"; do curl -s -X POST "$u/flush_cache" >/dev/null; done
    python3 - "$out" "$before" "$after" "$tick" <<'PY'
import json, sys
out, before, after, tick = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"{(after - before) / tick * 1000 / out['sent']:.3f}|{out['ok']}|{out['failed']}")
PY
}

echo "| router (cache_aware) | replicas | CPU per request (summed over replicas) | vs sglang-router, same replicas | answered | failed |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for replicas in 1 4; do
    theirs=$(run sglang "$replicas")
    ours=$(run ours "$replicas")
    python3 - "$replicas" "$theirs" "$ours" <<'PY'
import sys
replicas, theirs, ours = sys.argv[1], sys.argv[2].split("|"), sys.argv[3].split("|")
for name, row in (("sglang-router 0.3.2", theirs), ("wasm-router", ours)):
    print(f"| {name} | {replicas} | {float(row[0]):.3f} ms | {float(row[0]) / float(theirs[0]):.2f}x | {row[1]} | {row[2]} |")
PY
done
