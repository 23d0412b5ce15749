#!/usr/bin/env bash
# Rebuild the reference policies from source into policies/<name>.wasm.
#
# The outputs are committed (the router embeds them, so building the router
# needs no wasm target); CI runs this and fails if they changed. Paths are
# remapped so the bytes do not depend on where the checkout or cargo home is.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
# simd128: wasmtime supports it everywhere we run, and it speeds up the
# byte comparisons of prefix matching.
export RUSTFLAGS="-C target-feature=+simd128 --remap-path-prefix=$root=/src --remap-path-prefix=$cargo_home=/cargo"
policies=(round_robin cache_aware random power_of_two consistent_hash manual bucket precise_cache_aware)
cargo build --locked --quiet --target wasm32-wasip2 --profile policy \
    $(printf -- '-p %s ' "${policies[@]//_/-}")
for name in "${policies[@]}"; do
    cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/policy/$name.wasm" "policies/$name.wasm"
    echo "policies/$name.wasm: $(wc -c <"policies/$name.wasm") bytes"
done
