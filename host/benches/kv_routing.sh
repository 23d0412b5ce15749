#!/usr/bin/env bash
# Precise routing from KV events against approximate routing, behind 1, 2
# and 4 router replicas (issue 18), in one run: the same simulated fleet
# (4 `router sim-worker`s paging prompts with the repository's BPE
# tokenizer and publishing SGLang's KV events) and the same seeded
# workloads through sglang-router 0.3.2 cache_aware, wasm-router
# cache_aware and wasm-router precise_cache_aware; ROWS may add smg 1.13's
# cache_aware alone (smg:cache_aware) or with its mesh joining the
# replicas (smg-mesh:cache_aware). Requests alternate
# between the replicas, as behind an L4 balancer. The cache hit rate comes
# from the workers' own counters; makespan is the time to serve the whole
# workload. Each row is run REPEATS times (3 unless set) and its medians
# shown: one run's placement of a few dozen prompts is a roll of the dice.
# Prints a Markdown table, then the issue's ratios.
#
# The workers prefill one request at a time (`--serial-prefill`), as a
# GPU's compute is shared: a request's time to first token is the prefill
# queued ahead of it plus its own, so where a router sends it shows in
# time, not only in hits. SERIAL_PREFILL=0 lets prefills overlap (the
# runs before issue 31's third step). SIM_ROUTER names the binary that
# runs the workers (ROUTER's unless set), to compare an older router on
# the same workers.
#
# Routers run on the cores ROUTER_CPUS names (0 unless set), the workers
# and the client on WORKER_CPUS (1): a router's CPU then shows as its own
# cost, not as slower workers. Each row reports the routers' CPU seconds
# during the run (all replicas, from /proc) and per request.
#
#   ./host/benches/kv_routing.sh
#
# WORKLOADS, REPLICAS and ROWS (space-separated) narrow a run, e.g.
# WORKLOADS=multi-turn REPLICAS=4 ROWS=wasm-router:cache_aware.
#
# Installs sglang-router==0.3.2 (PyPI, in a venv under target/) if missing.
# Loopback only; each run is bounded by `router bench --max-secs`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh
sglang_router_venv
smg_venv

tokenizer=host/cli/assets/tokenizer/tokenizer.json
sim=${SIM_ROUTER:-$router}
serial=()
[ "${SERIAL_PREFILL:-1}" = 1 ] && serial=(--serial-prefill)
results=$(mktemp)
on_routers=(taskset -c "${ROUTER_CPUS:-0}")
on_workers=(taskset -c "${WORKER_CPUS:-1}")
tick=$(getconf CLK_TCK)

# Four workers of $1 cache tokens each, publishing KV events: sets workers.
start_fleet() {
    workers=()
    fleet_pids=()
    for _ in 1 2 3 4; do
        local p e
        p=$(free_port); e=$(free_port)
        "${on_workers[@]}" "$sim" sim-worker --port "$p" --cache-tokens "$1" --tokenizer "$tokenizer" \
            --kv-events-port "$e" "${serial[@]}" --log-level warn & pids+=($!); fleet_pids+=($!)
        wait_port "$p"
        workers+=("http://127.0.0.1:$p")
    done
}
stop_fleet() {
    kill "${fleet_pids[@]}" 2>/dev/null || true
    for p in "${fleet_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    local keep=()
    for p in "${pids[@]}"; do [[ " ${fleet_pids[*]} " == *" $p "* ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# Wait until the router whose metrics are on port $1 follows every
# worker's events, then let the SUB sockets settle (ZMQ's slow joiner).
wait_following() {
    for _ in $(seq 100); do
        n=$(curl -s "http://127.0.0.1:$1/metrics" | awk '$1 == "wasm_router_kv_event_workers" {print $2}')
        [ "${n:-0}" = "${#workers[@]}" ] && { sleep 0.5; return; }
        sleep 0.1
    done
    echo "the router on metrics port $1 never followed ${#workers[@]} workers' events" >&2
    exit 1
}

# Start $3 replicas of router kind $1 with policy $2: sets urls. Kinds:
# sglang-router, smg (1.13, each replica on its own), smg-mesh (the
# replicas joined in smg's mesh, each told the others' mesh ports),
# wasm-router.
start_replicas() {
    urls=()
    replica_pids=()
    local mesh_ports=() i
    for _ in $(seq "$3"); do mesh_ports+=("$(free_port)"); done
    for i in $(seq 0 $(($3 - 1))); do
        local port metrics peers=()
        port=$(free_port); metrics=$(free_port)
        if [ "$1" = smg ] || [ "$1" = smg-mesh ]; then
            local mesh=()
            if [ "$1" = smg-mesh ]; then
                for p in "${mesh_ports[@]}"; do [ "$p" = "${mesh_ports[$i]}" ] || peers+=("127.0.0.1:$p"); done
                mesh=(--enable-mesh --mesh-host 127.0.0.1 --mesh-port "${mesh_ports[$i]}")
                [ "${#peers[@]}" -gt 0 ] && mesh+=(--mesh-peer-urls "${peers[@]}")
            fi
            "${on_routers[@]}" "$smg" launch --host 127.0.0.1 --port "$port" --policy "$2" \
                --worker-urls "${workers[@]}" --prometheus-port "$metrics" --log-level warn "${mesh[@]}" >/dev/null 2>&1 &
        elif [ "$1" = sglang-router ]; then
            "${on_routers[@]}" "$venv/bin/python" -m sglang_router.launch_router --host 127.0.0.1 --port "$port" --policy "$2" \
                --worker-urls "${workers[@]}" --prometheus-port "$metrics" --log-level warn >/dev/null 2>&1 &
        elif [ "$2" = precise_cache_aware ]; then
            "${on_routers[@]}" "$router" --port "$port" --prometheus-port "$metrics" --policy "$2" --worker-urls "${workers[@]}" \
                --kv-events --tokenizer-path "$tokenizer" --log-level warn &
        else
            "${on_routers[@]}" "$router" --port "$port" --prometheus-port "$metrics" --policy "$2" --worker-urls "${workers[@]}" \
                --log-level warn &
        fi
        pids+=($!); replica_pids+=($!)
        wait_port "$port"
        [ "$2" = precise_cache_aware ] && wait_following "$metrics"
        urls+=("http://127.0.0.1:$port")
    done
    sleep 1
}
stop_replicas() { for _ in "${replica_pids[@]}"; do stop_last; done; }

echo "| workload | cache tokens per worker | router | policy | replicas | cache hit rate | makespan | TTFT p50 | TTFT p99 | router CPU | CPU per request | failed (all runs) |"
echo "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for workload in ${WORKLOADS:-shared-prefix zipf multi-turn eviction}; do
    # A system prompt of 2,400 characters is about 1,840 tokens here: eight
    # groups fill 15k tokens, which 12k-token caches hold when each worker
    # keeps its share; in 3k-token caches (eviction) a worker holds one.
    case "$workload" in
        # 12 conversations of 8 turns end near 3,400 tokens each: three
        # fit a worker.
        multi-turn) kind=multi-turn; cache=12000; shape=(--groups 12 --prompts-per-group 8 --system-chars 1200 --question-chars 200) ;;
        eviction) kind=shared-prefix; cache=3000; shape=(--groups 8 --prompts-per-group 24) ;;
        *) kind=$workload; cache=12000; shape=(--groups 8 --prompts-per-group 24) ;;
    esac
    start_fleet "$cache"
    for replicas in ${REPLICAS:-1 2 4}; do
        for row in ${ROWS:-sglang-router:cache_aware wasm-router:cache_aware wasm-router:precise_cache_aware}; do
            router_kind=${row%%:*}; policy=${row#*:}
            runs=()
            for _ in $(seq "${REPEATS:-3}"); do
                for w in "${workers[@]}"; do curl -s -X POST "$w/flush_cache" >/dev/null; done
                start_replicas "$router_kind" "$policy" "$replicas"
                before=$(cpu_ticks "${replica_pids[@]}")
                run=$("${on_workers[@]}" "$router" bench --url "${urls[@]}" --workload "$kind" "${shape[@]}" \
                    --max-secs 120 --worker-metrics "${workers[@]}" --log-level warn)
                cpu=$(( $(cpu_ticks "${replica_pids[@]}") - before ))
                runs+=("$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); r["router_cpu_secs"] = int(sys.argv[2]) / int(sys.argv[3]); print(json.dumps(r))' "$run" "$cpu" "$tick")")
                stop_replicas
            done
            python3 - "$workload" "$cache" "$router_kind" "$policy" "$replicas" "$results" "${runs[@]}" <<'PY'
import json, statistics, sys
w, cache, r, p, n, out, *runs = sys.argv[1:]
runs = [json.loads(x) for x in runs]
med = lambda key: statistics.median(x[key] for x in runs)
row = dict(workload=w, router=r, policy=p, replicas=int(n), hit=med("cache_hit_rate"),
           makespan=med("elapsed_secs"), failed=sum(x["failed"] for x in runs),
           cpu=med("router_cpu_secs"), ttft_p50=med("ttft_p50_ms"), ttft_p99=med("ttft_p99_ms"),
           cpu_per_request=statistics.median(x["router_cpu_secs"] / x["requests"] for x in runs))
open(out, "a").write(json.dumps(row) + "\n")
print(f"| {w} | {cache} | {r} | {p} | {n} | {row['hit']*100:.1f}% | {row['makespan']:.2f} s "
      f"| {med('ttft_p50_ms'):.1f} ms | {med('ttft_p99_ms'):.1f} ms | {row['cpu']:.2f} s "
      f"| {row['cpu_per_request']*1e3:.2f} ms | {row['failed']} |", flush=True)
PY
        done
    done
    stop_fleet
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def get(w, r, p, n):
    return next(x for x in rows if (x["workload"], x["router"], x["policy"], x["replicas"]) == (w, r, p, n))
print()
print("| workload | replicas | precise CPU per request / cache_aware's |")
print("| --- | ---: | ---: |")
for x in rows:
    if (x["router"], x["policy"]) != ("wasm-router", "precise_cache_aware"):
        continue
    try:
        ca = get(x["workload"], "wasm-router", "cache_aware", x["replicas"])
    except StopIteration:
        continue
    print(f"| {x['workload']} | {x['replicas']} | {x['cpu_per_request'] / ca['cpu_per_request']:.2f}x |")
print()
print("| workload | precise x4 hit / sglang-router x1 hit | precise x4 makespan / sglang-router x1 makespan | precise x4 TTFT p99 / sglang-router x1 TTFT p99 | precise x1 makespan / sglang-router x1 makespan | precise x1 hit / sglang-router x1 hit |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for w in sorted({x["workload"] for x in rows}, key=[x["workload"] for x in rows].index):
    try:
        base = get(w, "sglang-router", "cache_aware", 1)
        p4 = get(w, "wasm-router", "precise_cache_aware", 4)
        p1 = get(w, "wasm-router", "precise_cache_aware", 1)
    except StopIteration:  # a narrowed run (ROWS, REPLICAS)
        continue
    print(f"| {w} | {p4['hit']/base['hit']:.2f}x | {p4['makespan']/base['makespan']:.2f}x "
          f"| {p4['ttft_p99']/base['ttft_p99']:.2f}x "
          f"| {p1['makespan']/base['makespan']:.2f}x | {p1['hit']/base['hit']:.2f}x |")
PY
