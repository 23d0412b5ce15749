#!/usr/bin/env bash
# What each language's build of the cache-affine example costs, besides
# `select` (criterion: `cargo bench -p wasm-router --bench policy --
# select/cache_affine`): component size, first compile (`router policy
# check` with an empty compile cache), start with the cache warm, and the
# router's RSS with one and with two instances of it (--policy-instances),
# after 20 requests, against the router with round_robin. Run from the
# repository root after ./examples/build.sh; prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh
dir=target/examples
cache="$(mktemp -d)"
trap 'rm -rf "$cache"; cleanup' EXIT

wport=$(free_port)
"$router" sim-worker --port "$wport" >/dev/null 2>&1 &
pids+=($!)
wait_port "$wport"

# seconds COMMAND...: wall time of a command, in seconds.
seconds() {
    local start=$EPOCHREALTIME
    "$@" >/dev/null 2>&1
    echo "$EPOCHREALTIME - $start" | bc
}

# rss POLICY INSTANCES: the router's RSS in KB after 20 requests.
rss() {
    local port mport pid kb
    port=$(free_port)
    mport=$(free_port)
    XDG_CACHE_HOME="$cache" "$router" --policy "$1" --policy-instances "$2" \
        --worker-urls "http://127.0.0.1:$wport" --port "$port" --prometheus-port "$mport" \
        >/dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_port "$port"
    for i in $(seq 20); do
        curl -s -o /dev/null -X POST "http://127.0.0.1:$port/generate" \
            -H 'content-type: application/json' \
            -d "{\"text\":\"You are a helpful assistant. Question $i\",\"sampling_params\":{\"max_new_tokens\":2}}"
    done
    kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    stop_last
    echo "$kb"
}

# Every RSS is taken with the policy's compiled form in the cache, as a
# router finds it after `router policy check` (compiling in-process leaves
# the compiler's memory with the allocator).
XDG_CACHE_HOME="$cache" "$router" policy check round_robin >/dev/null 2>&1
base=$(rss round_robin 1)
echo "router with round_robin: RSS $((base / 1024)) MB"
echo
echo "| language | component | first compile | start, warm cache | RSS, 1st instance | RSS, 2nd instance | 2nd/1st |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for lang in rust c go python javascript typescript; do
    file="$dir/cache_affine_$lang.wasm"
    [ -f "$file" ] || { echo "missing $file: run ./examples/build.sh" >&2; exit 1; }
    size=$(wc -c <"$file")
    first=$(XDG_CACHE_HOME="$cache" seconds "$router" policy check "$file")
    warm=$(XDG_CACHE_HOME="$cache" seconds "$router" policy check "$file")
    one=$(rss "$file" 1)
    two=$(rss "$file" 2)
    first_kb=$((one - base))
    second_kb=$((two - one))
    printf '| %s | %s KB | %.2f s | %.2f s | %.1f MB | %.1f MB | %s |\n' "$lang" $((size / 1024)) \
        "$first" "$warm" "$(echo "$first_kb / 1024" | bc -l)" "$(echo "$second_kb / 1024" | bc -l)" \
        "$(echo "scale=2; $second_kb / $first_kb" | bc -l)"
done
