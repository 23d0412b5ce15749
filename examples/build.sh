#!/usr/bin/env bash
# Build the example policies into target/examples/: session affinity in Rust
# (cargo) and AssemblyScript (npm and `router policy componentize`), and
# cache-affine in every language (examples/cache-affine/*/build.sh) as
# cache_affine_<lang>.wasm. The criterion benchmark and
# examples/cache-affine/bench.sh compare them (BENCHMARKS.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-target}"
out="$target/examples"
mkdir -p "$out"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
RUSTFLAGS="-C target-feature=+simd128" \
    cargo build --locked --quiet --target wasm32-wasip2 --profile policy -p session-affinity -p cache-affine
cp "$target/wasm32-wasip2/policy/session_affinity.wasm" "$out/"
cp "$target/wasm32-wasip2/policy/cache_affine.wasm" "$out/cache_affine_rust.wasm"
cargo build --locked --quiet --release -p wasm-router-cli --bin router
export ROUTER="$root/$target/release/router"
examples/assemblyscript-policy/build.sh >/dev/null
cp examples/assemblyscript-policy/session_affinity_as.wasm "$out/"
for lang in python javascript typescript c go; do
    OUT="$root/$out/cache_affine_$lang.wasm" "examples/cache-affine/$lang/build.sh" >/dev/null
done
ls -l "$out"
