#!/usr/bin/env bash
# Fuzz the request-body handling and the host side of the policy boundary
# with libFuzzer (cargo fuzz), each for SECONDS (default 30; CI runs the
# default, run longer on demand: fuzz/run.sh 3600). The committed seeds in
# fuzz/corpus/<target> are replayed first; new inputs go to
# fuzz/target/corpus/<target>. A crash is written to fuzz/artifacts/<target>:
# commit it into fuzz/corpus/<target> with the fix, and it stays a
# regression test.
#
# cargo fuzz needs nightly; without a nightly toolchain the stable one is
# used with RUSTC_BOOTSTRAP=1.
set -euo pipefail
seconds="${1:-30}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "no nightly toolchain: fuzzing with stable and RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
# The guest of policy_boundary.
cargo build --locked --quiet --target wasm32-wasip2 --profile policy -p hostile-policy
for target in request_body policy_boundary; do
    mkdir -p "fuzz/target/corpus/$target" "fuzz/artifacts/$target"
    echo "== fuzz $target for ${seconds}s"
    "${fuzz[@]}" run --fuzz-dir fuzz "$target" \
        "fuzz/target/corpus/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$target/"
done
