#!/usr/bin/env bash
# Fuzz the request-body handling, the host side of the policy boundary and
# the KV event decoder with libFuzzer (cargo fuzz), each for SECONDS
# (default 30; CI runs the default, run longer on demand: fuzz/run.sh
# 3600). The committed seeds in fuzz/corpus/<target> are replayed first;
# new inputs go to fuzz/target/corpus/<target>. A crash is written to
# fuzz/artifacts/<target>: commit it into fuzz/corpus/<target> with the
# fix, and it stays a regression test.
#
# The build's and the fuzzer's full output go to target/fuzz-logs/; this
# prints one summary line per target (runs, new units, crashes) and, on a
# failure, the end of its log.
#
# cargo fuzz needs nightly; without a nightly toolchain the stable one is
# used with RUSTC_BOOTSTRAP=1.
set -euo pipefail
seconds="${1:-30}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
logs="$root/target/fuzz-logs"
mkdir -p "$logs"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "no nightly toolchain: fuzzing with stable and RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
# cargo fuzz has no --locked: fetching with it first fails on a stale
# fuzz/Cargo.lock, and the build then resolves nothing anew.
cargo fetch --locked --manifest-path fuzz/Cargo.toml
# The guest of policy_boundary.
cargo build --locked --quiet --target wasm32-wasip2 --profile policy -p hostile-policy

# The last lines of a log, when a step fails.
tail_of() {
    echo "-- last 40 lines of $1:" >&2
    tail -n 40 "$1" >&2
}

for target in request_body policy_boundary kv_events; do
    echo "building $target (log: $logs/$target.build.log)"
    if ! "${fuzz[@]}" build --fuzz-dir fuzz "$target" >"$logs/$target.build.log" 2>&1; then
        tail_of "$logs/$target.build.log"
        exit 1
    fi
done
git diff --exit-code -- fuzz/Cargo.lock >/dev/null || {
    echo "fuzz/Cargo.lock changed during the build: commit the updated lock file" >&2
    exit 1
}

failed=0
for target in request_body policy_boundary kv_events; do
    mkdir -p "fuzz/target/corpus/$target" "fuzz/artifacts/$target"
    log="$logs/$target.log"
    status=0
    "${fuzz[@]}" run --fuzz-dir fuzz "$target" \
        "fuzz/target/corpus/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 || status=$?
    final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    crashes=$(find "fuzz/artifacts/$target" -type f | wc -l)
    printf 'fuzz %-16s %3ss: %s runs, %s new units, %s crash files, exit %s\n' \
        "$target" "$seconds" "$(final_stat number_of_executed_units)" "$(final_stat new_units_added)" \
        "$crashes" "$status"
    if [ "$status" != 0 ] || [ "$crashes" != 0 ]; then
        tail_of "$log"
        failed=1
    fi
done
exit "$failed"
