#!/usr/bin/env bash
# What --enable-trace costs the data plane (issue 32): requests/s at 32
# connections (wrk, POST /generate) through one cache_aware router against
# two instant upstreams, and the router's own CPU per request (from
# /proc), without tracing, with it (spans exported to an OTLP/gRPC sink on
# loopback, host/benches/otlp_sink.py), and with a tenth of the traces
# sampled; ROUNDS times in turn (3 unless set), each for SECS seconds (10
# unless set). Prints a Markdown table and the ratios of the medians. On
# two cores the sink, wrk and the upstreams share the router's CPU: the
# CPU per request is the router's own cost.
#
#   ./host/benches/trace_overhead.sh
#
# Installs wrk (Debian), and grpcio and opentelemetry-proto in a venv
# under target/ for the sink. Loopback only; every load run is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh
need_wrk
otlp=target/otlp-venv
[ -x "$otlp/bin/python" ] || python3 -m venv "$otlp"
"$otlp/bin/python" -c 'import grpc, opentelemetry.proto' 2>/dev/null ||
    "$otlp/bin/pip" install -q grpcio opentelemetry-proto
secs="${SECS:-10}"

instant_upstreams
generate_lua
sink_out=$(mktemp)
"$otlp/bin/python" host/benches/otlp_sink.py >"$sink_out" & pids+=($!)
for _ in $(seq 50); do [ -s "$sink_out" ] && break; sleep 0.1; done
sink_port=$(head -1 "$sink_out")

# measure MODE: "req/s|router CPU us per request" of a fresh router:
# plain, traced (every request), or sampled (OTEL_TRACES_SAMPLER: a tenth
# of the traces, as the SDK reads it).
measure() {
    local port extra=() env=()
    port=$(free_port)
    [ "$1" != plain ] && extra=(--enable-trace --otlp-traces-endpoint "127.0.0.1:$sink_port")
    [ "$1" = sampled ] && env=(OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
    # shellcheck disable=SC2086
    env "${env[@]}" "$router" --port "$port" --prometheus-port "$(free_port)" --policy cache_aware --worker-urls $urls \
        --max-concurrent-requests 0 --log-level warn "${extra[@]}" & pids+=($!)
    wait_port "$port"; sleep 1
    wrk_rate "$port"
    stop_last
}

echo "| round | without tracing: req/s, router CPU per request | --enable-trace | --enable-trace, a tenth sampled |"
echo "| ---: | --- | --- | --- |"
rows=()
for round in $(seq "${ROUNDS:-3}"); do
    p=$(measure plain); t=$(measure traced); s=$(measure sampled)
    rows+=("$p $t $s")
    show() { IFS='|' read -r r c <<<"$1"; echo "$r req/s, $c us"; }
    echo "| $round | $(show "$p") | $(show "$t") | $(show "$s") |"
done
python3 - "${rows[@]}" <<'PY'
import statistics, sys
cols = list(zip(*(r.split() for r in sys.argv[1:])))
med = [(statistics.median(float(x.split("|")[0]) for x in c),
        statistics.median(float(x.split("|")[1]) for x in c)) for c in cols]
(p_rps, p_cpu), (t_rps, t_cpu), (s_rps, s_cpu) = med
print(f"\nmedians: traced {t_rps / p_rps:.2f}x the requests/s and {t_cpu / p_cpu:.2f}x the router CPU per request; "
      f"a tenth sampled {s_rps / p_rps:.2f}x and {s_cpu / p_cpu:.2f}x")
PY
