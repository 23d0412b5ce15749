#!/usr/bin/env bash
# Set up a fresh machine and run every check and test. README.md's test
# command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (disk free: %s)\n' "$*" "$(df -h --output=avail . | tail -1 | tr -d ' ')"; }

# One pass from scratch gains nothing from incremental caches; they cost
# gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "toolchain: wasm32-wasip2 target, rustfmt, clippy"
rustup target add wasm32-wasip2
rustup component add rustfmt clippy

step "Node.js and npm, for the AssemblyScript policies"
if ! command -v npm >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update
    $sudo apt-get install -y nodejs npm
fi
node --version

step "reference policies are rebuilt from source and match the committed files"
./policies/build.sh
if ! git diff --quiet -- policies/*.wasm; then
    git --no-pager diff --stat -- policies/*.wasm
    echo "policies/*.wasm are stale: run ./policies/build.sh and commit the result" >&2
    [ "${CI:-}" = true ] && exit 1
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "tests"
cargo test --locked --workspace

step "soak: load and injected faults for ${WASM_ROUTER_SOAK_SECS:=60} s (report: target/soak-report.json)"
WASM_ROUTER_SOAK_SECS=$WASM_ROUTER_SOAK_SECS \
    cargo test --locked -p wasm-router --test it soak -- --ignored --nocapture

step "Python wheel: build it, install it into a fresh venv, run pytest there"
rm -rf target/wheels target/py-build target/py-venv
python3 -m venv target/py-build
target/py-build/bin/pip install --quiet "maturin>=1.5,<2"
target/py-build/bin/maturin build --release --quiet -m python/Cargo.toml -o target/wheels
python3 -m venv target/py-venv
target/py-venv/bin/pip install --quiet target/wheels/wasm_router-*.whl pytest requests openai
target/py-venv/bin/python -m pytest python/tests -q

# Last: the sanitizer build of wasmtime needs gigabytes of its own. In CI the
# debug and release builds the steps above used are removed first, and the
# fuzz build after.
step "fuzzing: ${WASM_ROUTER_FUZZ_SECS:=30} s per target"
if [ "${CI:-}" = true ]; then rm -rf target/debug target/release; fi
./fuzz/run.sh "$WASM_ROUTER_FUZZ_SECS"
if [ "${CI:-}" = true ]; then rm -rf fuzz/target; fi
step "all checks passed"
