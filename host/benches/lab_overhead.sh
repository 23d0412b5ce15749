#!/usr/bin/env bash
# What the policy lab costs the data plane (issue 34): requests/s at 32
# connections (wrk, POST /generate) through one cache_aware router against
# two instant upstreams, and the router's own CPU per request (from
# /proc): with neither, with every request's decision record written
# (--decision-log to a file, 100% sampled), and with one shadow policy
# (cache_aware, which reads the text and keeps its own index); ROUNDS
# times in turn (3 unless set), SECS seconds each (10 unless set). Prints a
# Markdown table and the ratios of the medians.
#
#   ./host/benches/lab_overhead.sh
#
# Installs wrk (Debian). Loopback only; every load run is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh
need_wrk
secs="${SECS:-10}"
instant_upstreams
generate_lua
log_dir=$(mktemp -d)

# measure MODE: a fresh router's "req/s|CPU us per request": plain, log
# or shadow.
measure() {
    local port extra=()
    port=$(free_port)
    [ "$1" = log ] && extra=(--decision-log "$log_dir/decisions.jsonl")
    [ "$1" = shadow ] && extra=(--shadow-policy cache_aware)
    # shellcheck disable=SC2086
    "$router" --port "$port" --prometheus-port "$(free_port)" --policy cache_aware --worker-urls $urls \
        --max-concurrent-requests 0 --log-level warn --no-watch "${extra[@]}" & pids+=($!)
    wait_port "$port"; sleep 1
    wrk_rate "$port"
    stop_last
    rm -f "$log_dir"/decisions.jsonl*
}

echo "| round | neither: req/s, router CPU per request | --decision-log, every request | one --shadow-policy |"
echo "| ---: | --- | --- | --- |"
rows=()
for round in $(seq "${ROUNDS:-3}"); do
    p=$(measure plain); l=$(measure log); s=$(measure shadow)
    rows+=("$p $l $s")
    show() { IFS='|' read -r r c <<<"$1"; echo "$r req/s, $c us"; }
    echo "| $round | $(show "$p") | $(show "$l") | $(show "$s") |"
done
python3 - "${rows[@]}" <<'PY'
import statistics, sys
cols = list(zip(*(r.split() for r in sys.argv[1:])))
med = [(statistics.median(float(x.split("|")[0]) for x in c),
        statistics.median(float(x.split("|")[1]) for x in c)) for c in cols]
(p_rps, p_cpu), (l_rps, l_cpu), (s_rps, s_cpu) = med
print(f"\nmedians: decision log {l_rps / p_rps:.2f}x the requests/s and {l_cpu / p_cpu:.2f}x the router CPU per request; "
      f"one shadow {s_rps / p_rps:.2f}x and {s_cpu / p_cpu:.2f}x")
PY
