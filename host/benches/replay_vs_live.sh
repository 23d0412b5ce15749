#!/usr/bin/env bash
# Replay against live (issue 34): for each policy, the same seeded
# workload (`router bench`, shared-prefix, streamed /generate) through one
# router in front of 4 simulated workers (`router sim-worker
# --serial-prefill`), recorded with --decision-log; then `router replay`
# of those records through the simulated fleet with the same settings.
# Prints, per policy, the live run's cache hit rate (the workers'
# counters) and TTFT p50 (the records' time to first byte), the replay's,
# and their differences.
#
#   ./host/benches/replay_vs_live.sh
#
# POLICIES (space-separated, "round_robin cache_aware" unless set) narrow
# or widen it; PREFILL_US is the workers' prefill cost per uncached
# token (100 us unless set); CONCURRENCY is the client's (4 unless set: more, and the
# four workers and the client outgrow their one core, whose delays no
# simulation of the workers' model predicts). Router on core 0, workers
# and client on core 1. Loopback only; each run is bounded by `router
# bench --max-secs`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh
on_router=(taskset -c 0)
on_workers=(taskset -c 1)
cache_tokens=12000
prefill_us=${PREFILL_US:-100}
decode_us=5000
max_running=16
dir=$(mktemp -d)

echo "| policy | live: hit rate, TTFT p50 | replay: hit rate, TTFT p50 | hit rate difference | TTFT p50 ratio |"
echo "| --- | --- | --- | ---: | ---: |"
for policy in ${POLICIES:-round_robin cache_aware}; do
    urls=()
    for _ in 1 2 3 4; do
        p=$(free_port)
        "${on_workers[@]}" "$router" sim-worker --port "$p" --serial-prefill --cache-tokens "$cache_tokens" \
            --prefill-us-per-token "$prefill_us" --decode-us-per-token "$decode_us" --max-running "$max_running" \
            --log-level warn & pids+=($!)
        wait_port "$p"
        urls+=("http://127.0.0.1:$p")
    done
    port=$(free_port)
    log="$dir/$policy.jsonl"
    "${on_router[@]}" "$router" --port "$port" --prometheus-port "$(free_port)" --policy "$policy" \
        --worker-urls "${urls[@]}" --worker-load-check-interval 1 --decision-log "$log" --log-level warn & pids+=($!)
    wait_port "$port"; sleep 2
    live=$("${on_workers[@]}" "$router" bench --url "http://127.0.0.1:$port" --workload shared-prefix \
        --groups 12 --prompts-per-group 40 --concurrency "${CONCURRENCY:-4}" --max-secs 240 --worker-metrics "${urls[@]}")
    sleep 1
    for _ in 1 2 3 4 5; do stop_last; done
    replay=$("$router" replay --trace "$log" --policy "$policy" --workers 4 --serial-prefill \
        --capacity-tokens "$cache_tokens" --prefill-us-per-token "$prefill_us" --decode-us-per-token "$decode_us" \
        --max-running "$max_running" --load-interval-ms 1000 --json 2>/dev/null)
    python3 - "$policy" "$live" "$replay" "$log" <<'PY'
import json, statistics, sys
policy, live, replay, log = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])[0], sys.argv[4]
records = [json.loads(l) for l in open(log)]
ttfb = [r["outcome"]["ttfb_us"] / 1000 for r in records if r["outcome"].get("ttfb_us")]
live_hits = live["cache_hit_rate"]
live_p50 = statistics.median(ttfb)
print(f"| {policy} | {live_hits:.3f}, {live_p50:.1f} ms | {replay['hit_rate']:.3f}, {replay['ttft_p50_ms']:.1f} ms "
      f"| {replay['hit_rate'] - live_hits:+.3f} | {replay['ttft_p50_ms'] / live_p50:.2f}x |")
PY
done
