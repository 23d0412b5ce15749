#!/usr/bin/env bash
# A router's CPU at rest: one router (cache_aware) in front of two idle
# instant upstreams, one request, then CPU time over SECONDS of nothing,
# from /proc. With OLD set to another router binary, that one is measured
# first, the same way. Prints one line per binary.
#
#   OLD=target/old/router ./host/benches/idle_cpu.sh [seconds, default 20]
#
# Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-20}"
source host/benches/common.sh
instant_upstreams
tick=$(getconf CLK_TCK)
for binary in ${OLD:+"$OLD"} "$router"; do
    port=$(free_port)
    # shellcheck disable=SC2086
    "$binary" --port "$port" --prometheus-port "$(free_port)" --policy cache_aware \
        --worker-urls $urls --log-level warn & pids+=($!)
    pid=$!
    wait_port "$port"
    curl -s -X POST "http://127.0.0.1:$port/generate" -d '{"text": "hi"}' >/dev/null
    sleep 2
    before=$(cpu_ticks "$pid")
    sleep "$secs"
    after=$(cpu_ticks "$pid")
    python3 -c "import sys; t = (int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]); print(f'{sys.argv[4]}: {t:.2f} s of CPU in {sys.argv[5]} s at rest ({100 * t / int(sys.argv[5]):.1f}% of a core)')" \
        "$before" "$after" "$tick" "$binary" "$secs"
    stop_last
done
