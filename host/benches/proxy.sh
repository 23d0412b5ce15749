#!/usr/bin/env bash
# Data-plane overhead, in one run on this machine: requests/s at 32
# connections and latency at 1 connection, against an instant upstream
# (`router sim-worker --fixed-response`), for going direct, for this router
# with round_robin.wasm and cache_aware.wasm, and for sglang-router 0.3.2 with
# round_robin and cache_aware. Prints a Markdown table.
#
#   ./host/benches/proxy.sh [seconds per measurement, default 10]
#
# Installs wrk (Debian) and sglang-router==0.3.2 (PyPI, in a venv under
# target/) if missing. Loopback only; every load run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
source host/benches/common.sh
need_wrk
sglang_router_venv

instant_upstreams
generate_lua

# measure NAME PORT -> "rps p50_us p99_us"
measure() {
    local rps lat p50 p99
    rps=$(wrk -t2 -c32 -d"${secs}s" -s "$lua" "http://127.0.0.1:$2/generate" | awk '/Requests\/sec/ {print $2}')
    lat=$(wrk -t1 -c1 -d"${secs}s" --latency -s "$lua" "http://127.0.0.1:$2/generate")
    p50=$(echo "$lat" | awk '$1=="50%" {print $2}')
    p99=$(echo "$lat" | awk '$1=="99%" {print $2}')
    echo "$1|$rps|$(to_us "$p50")|$(to_us "$p99")"
}
to_us() { python3 -c "import re,sys; v,u=re.match(r'([\d.]+)(\w+)','$1').groups(); print(round(float(v)*{'us':1,'ms':1e3,'s':1e6}[u]))"; }

results=("$(measure direct "$up1")")
for policy in round_robin cache_aware; do
    port=$(free_port)
    # shellcheck disable=SC2086
    "$router" --port "$port" --prometheus-port "$(free_port)" --policy "$policy" --worker-urls $urls \
        --max-concurrent-requests 0 --log-level warn & pids+=($!)
    wait_port "$port"; sleep 1
    results+=("$(measure "wasm-router $policy.wasm" "$port")")
    stop_last
done
for policy in round_robin cache_aware; do
    port=$(free_port)
    # shellcheck disable=SC2086
    "$venv/bin/python" -m sglang_router.launch_router --host 127.0.0.1 --port "$port" --policy "$policy" \
        --worker-urls $urls --prometheus-port "$(free_port)" --log-level warn >/dev/null 2>&1 & pids+=($!)
    wait_port "$port"; sleep 2
    results+=("$(measure "sglang-router 0.3.2 $policy" "$port")")
    stop_last
done

direct_p50=$(echo "${results[0]}" | cut -d'|' -f3)
direct_p99=$(echo "${results[0]}" | cut -d'|' -f4)
sgl_rr=$(printf '%s\n' "${results[@]}" | awk -F'|' '/sglang-router 0.3.2 round_robin/ {print $2}')
sgl_ca=$(printf '%s\n' "${results[@]}" | awk -F'|' '/sglang-router 0.3.2 cache_aware/ {print $2}')
echo "| target | req/s @32 conns | vs sglang-router (same policy) | p50 @1 conn | p99 @1 conn | added p50 | added p99 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in "${results[@]}"; do
    IFS='|' read -r name rps p50 p99 <<<"$r"
    base=""
    case "$name" in *round_robin*) base=$sgl_rr ;; *cache_aware*) base=$sgl_ca ;; esac
    ratio=$([ -n "$base" ] && python3 -c "print(f'{$rps/$base:.2f}x')" || echo "")
    echo "| $name | $rps | $ratio | ${p50} µs | ${p99} µs | $((p50 - direct_p50)) µs | $((p99 - direct_p99)) µs |"
done
