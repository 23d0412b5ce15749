#!/usr/bin/env bash
# Set up a fresh machine and run every check and test. README.md's test
# command; .ci/run calls it.
#
# Each step prints a header with the free disk, a progress line every
# minute while it runs, and the run ends with every step's time and result
# (also when a step fails). Every cargo call is --locked: a stale lock file
# is an error, never rewritten.
set -euo pipefail
cd "$(dirname "$0")/.."

# One pass from scratch gains nothing from incremental caches; they cost
# gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

steps=()
current=""
started=0
ticker=""

summary() {
    local status=$?
    [ -n "$ticker" ] && kill "$ticker" 2>/dev/null
    [ -n "$current" ] && steps+=("$(printf '%-75s %5ss  FAILED' "$current" $((SECONDS - started)))")
    printf '\n== summary\n'
    printf '%s\n' "${steps[@]}"
    printf '%-75s %5ss  %s\n' "total" "$SECONDS" "$([ "$status" = 0 ] && echo passed || echo FAILED)"
}
trap summary EXIT

# step NAME COMMAND...: run COMMAND as one named, timed step. A failing
# command ends the run through `set -e` (not `||`, under which bash ignores
# `set -e` in the functions it calls); the EXIT trap names the step.
step() {
    local name="$1"
    shift
    current="$name"
    started=$SECONDS
    printf '\n== %s (disk free: %s)\n' "$name" "$(df -h --output=avail . | tail -1 | tr -d ' ')"
    (
        while sleep 60; do
            printf -- '-- still running: %s (%d min)\n' "$name" $(((SECONDS - started) / 60))
        done
    ) &
    ticker=$!
    "$@"
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    ticker=""
    steps+=("$(printf '%-75s %5ss  ok' "$name" $((SECONDS - started)))")
    current=""
}

toolchain() {
    rustup target add wasm32-wasip2
    rustup component add rustfmt clippy
}

# Node.js and npm build the AssemblyScript and JavaScript policies; clang,
# lld, wasi-libc and the wasm32 compiler runtime the C ones; venv the
# Python one's toolchain (componentize-py, from PyPI in its build.sh);
# Prometheus' server scrapes a router in host/cli/tests/it/prometheus.rs.
debian_packages() {
    local missing=()
    command -v npm >/dev/null || missing+=(nodejs npm)
    command -v prometheus >/dev/null || missing+=(prometheus)
    command -v clang >/dev/null || missing+=(clang)
    command -v wasm-ld >/dev/null || missing+=(lld)
    [ -e /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
    compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null ||
        missing+=(libclang-rt-dev-wasm32)
    python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    if [ "${#missing[@]}" -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
    node --version
    prometheus --version 2>&1 | sed -n 1p
}

# The Kubernetes manifests against the API schemas of the oldest version
# the router's client speaks (1.33), offline, rejecting unknown fields.
manifests() {
    [ -x target/k8s-venv/bin/kubernetes-validate ] || {
        python3 -m venv target/k8s-venv
        target/k8s-venv/bin/pip install --quiet kubernetes-validate==1.37.0
    }
    target/k8s-venv/bin/kubernetes-validate --strict --quiet -k 1.33.0 deploy/kubernetes/*.yaml
}

reference_policies() {
    ./policies/build.sh
    if ! git diff --quiet -- policies/*.wasm; then
        git --no-pager diff --stat -- policies/*.wasm
        echo "policies/*.wasm are stale: run ./policies/build.sh and commit the result" >&2
        [ "${CI:-}" = true ] && return 1
    fi
    return 0
}

lints() {
    cargo fmt --all -- --check
    cargo clippy --locked --workspace --all-targets -- -D warnings
    # The fuzz crate has a lock of its own, which a new dependency of the
    # router makes stale: say so now, not at the end of the run.
    (cd fuzz && cargo metadata --locked --format-version 1 >/dev/null) || {
        echo "fuzz/Cargo.lock is stale: run \`cargo metadata --format-version 1\` in fuzz/ and commit it" >&2
        return 1
    }
}

# The soak and chaos tests read RSS, so they run one at a time.
soak() {
    WASM_ROUTER_SOAK_SECS=$WASM_ROUTER_SOAK_SECS \
        cargo test --locked -p wasm-router-cli --test it -- --ignored --nocapture --test-threads=1 soak chaos
}

wheel() {
    rm -rf target/wheels target/py-build target/py-venv
    python3 -m venv target/py-build
    target/py-build/bin/pip install --quiet "maturin>=1.5,<2"
    # The dev profile, as the tests step built it: the wheel reuses that
    # build (20 s) instead of compiling wasmtime again for release (14
    # minutes on two cores). Release wheels: README.md, "From Python".
    target/py-build/bin/maturin build --locked --quiet -m python/Cargo.toml -o target/wheels
    python3 -m venv target/py-venv
    # msgspec and pyzmq: the KV event publishers' own libraries (test_kv_events.py).
    # grpcio and opentelemetry-proto: the OTLP receiver of test_traces.py.
    target/py-venv/bin/pip install --quiet target/wheels/wasm_router-*.whl pytest requests openai msgspec pyzmq \
        grpcio opentelemetry-proto
    target/py-venv/bin/python -m pytest python/tests -q
}

fuzz() {
    # In CI the debug and release builds the steps above used are removed
    # first (the sanitizer build of wasmtime needs gigabytes of its own),
    # and the fuzz build after.
    if [ "${CI:-}" = true ]; then rm -rf target/debug target/release; fi
    ./fuzz/run.sh "$WASM_ROUTER_FUZZ_SECS"
    if [ "${CI:-}" = true ]; then rm -rf fuzz/target; fi
}

step "toolchain: wasm32-wasip2 target, rustfmt, clippy" toolchain
step "Debian packages: Node.js and npm (AssemblyScript, JavaScript), clang and wasi-libc (C), venv (Python), Prometheus" debian_packages
step "Kubernetes manifests validate against the API schemas" manifests
step "reference policies are rebuilt from source and match the committed files" reference_policies
step "format and lints" lints
step "tests" cargo test --locked --workspace
step "soak (${WASM_ROUTER_SOAK_SECS:=60} s, report: target/soak-report.json), then chaos" soak
step "Python wheel: build it, install it into a fresh venv, run pytest there" wheel
# Last: the sanitizer build needs the disk the steps above freed.
step "fuzzing: ${WASM_ROUTER_FUZZ_SECS:=30} s per target (logs: target/fuzz-logs)" fuzz
