#!/usr/bin/env bash
# Thousands of open SSE streams through one router: its RSS per open
# stream, its CPU while they flow, and the gaps between events as the
# clients see them against the worker's own cadence
# (host/cli/examples/streams.rs is the worker and the clients, pinned to
# core 0; the router is pinned to core 1). Prints the example's JSON line.
#
#   ./host/benches/streams.sh [streams, default 10000] [cadence ms, default 500] [hold secs, default 10]
#
# Raises the open-file limit of this script's own processes (each stream
# takes four descriptors between them). Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
streams="${1:-10000}"
cadence="${2:-500}"
hold="${3:-10}"
source host/benches/common.sh
cargo build --release --quiet -p wasm-router-cli --example streams
ulimit -Hn 200000 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
# Two descriptors per stream in the router, and a few of its own.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * streams + 64)) ]; then
    echo "warning: the open-file limit is $(ulimit -n) (hard, and not raisable here): the router cannot hold $streams streams" >&2
fi

port=$(free_port); worker_port=$(free_port)
pid_file=$(mktemp -u)
out=$(mktemp)
taskset -c 0 target/release/examples/streams --router "127.0.0.1:$port" --worker-port "$worker_port" \
    --router-pid-file "$pid_file" --streams "$streams" --cadence-ms "$cadence" --hold-secs "$hold" \
    >"$out" </dev/null & pids+=($!)
load=$!
wait_port "$worker_port"
taskset -c 1 "$router" --port "$port" --prometheus-port "$(free_port)" --policy cache_aware \
    --worker-urls "http://127.0.0.1:$worker_port" --max-concurrent-requests 0 --log-level warn & pids+=($!)
echo "${pids[-1]}" >"$pid_file"
wait "$load"
cat "$out"
rm -f "$pid_file" "$out"
