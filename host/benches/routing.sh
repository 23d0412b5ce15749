#!/usr/bin/env bash
# Routing quality, in one run: the same simulated fleet (4 `router
# sim-worker`s with a small KV cache) and the same seeded workloads through
# wasm-router (round_robin.wasm, cache_aware.wasm) and sglang-router 0.3.2
# (round_robin, cache_aware). Cache hit rate comes from the workers' own
# counters. Prints a Markdown table.
#
#   ./host/benches/routing.sh
#
# Installs sglang-router==0.3.2 (PyPI, in a venv under target/) if missing.
# Loopback only; each run is bounded by `router bench --max-secs`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh
sglang_router_venv

workers=()
for _ in 1 2 3 4; do
    p=$(free_port)
    "$router" sim-worker --port "$p" --cache-tokens 2500 --log-level warn & pids+=($!)
    wait_port "$p"
    workers+=("http://127.0.0.1:$p")
done

start_ours() { "$router" --port "$1" --prometheus-port "$(free_port)" --policy "$2" --worker-urls "${workers[@]}" --log-level warn & pids+=($!); }
start_sglang() {
    "$venv/bin/python" -m sglang_router.launch_router --host 127.0.0.1 --port "$1" --policy "$2" \
        --worker-urls "${workers[@]}" --prometheus-port "$(free_port)" --log-level warn >/dev/null 2>&1 & pids+=($!)
}

echo "| workload | router | policy | cache hit rate | TTFT p50 | TTFT p99 | req/s | failed |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
for workload in shared-prefix zipf multi-turn; do
    case "$workload" in
        multi-turn) shape=(--groups 8 --prompts-per-group 6 --system-chars 2000 --question-chars 300) ;;
        *) shape=(--groups 8 --prompts-per-group 24) ;;
    esac
    for router_kind in wasm-router sglang-router; do
        for policy in round_robin cache_aware; do
            for w in "${workers[@]}"; do curl -s -X POST "$w/flush_cache" >/dev/null; done
            port=$(free_port)
            if [ "$router_kind" = wasm-router ]; then start_ours "$port" "$policy"; else start_sglang "$port" "$policy"; fi
            wait_port "$port"; sleep 1
            report=$("$router" bench --url "http://127.0.0.1:$port" --workload "$workload" "${shape[@]}" \
                --max-secs 120 --worker-metrics "${workers[@]}" --log-level warn)
            stop_last
            python3 - "$workload" "$router_kind" "$policy" "$report" <<'PY'
import json, sys
w, r, p, rep = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
hit = rep["cache_hit_rate"]
print(f"| {w} | {r} | {p} | {hit*100:.1f}% | {rep['ttft_p50_ms']:.1f} ms | {rep['ttft_p99_ms']:.1f} ms | {rep['requests_per_sec']:.1f} | {rep['failed']} |")
PY
        done
    done
done
