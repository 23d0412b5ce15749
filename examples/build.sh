#!/usr/bin/env bash
# Build both example policies into target/examples/: the Rust one with cargo,
# the AssemblyScript one with npm and `router policy componentize`. The
# criterion benchmark compares them (BENCHMARKS.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-target}"
out="$target/examples"
mkdir -p "$out"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
RUSTFLAGS="-C target-feature=+simd128" \
    cargo build --locked --quiet --target wasm32-wasip2 --profile policy -p session-affinity
cp "$target/wasm32-wasip2/policy/session_affinity.wasm" "$out/"
cargo build --locked --quiet --release -p wasm-router-cli --bin router
ROUTER="$root/$target/release/router" examples/assemblyscript-policy/build.sh >/dev/null
cp examples/assemblyscript-policy/session_affinity_as.wasm "$out/"
ls -l "$out"
