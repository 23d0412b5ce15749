#!/usr/bin/env bash
# Build the C example into cache_affine.wasm (or $OUT): the router writes
# the contract's bindings and the C SDK (build/sdk), Debian's clang
# compiles against wasi-libc, the router makes the component (adapting
# WASI preview 1). ROUTER names the router binary (default: `router`).
set -euo pipefail
cd "$(dirname "$0")"
router="${ROUTER:-router}"
if ! command -v clang >/dev/null || [ ! -e /usr/lib/wasm32-wasi/libc.a ]; then
    packages="clang lld wasi-libc libclang-rt-dev-wasm32"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
    else
        echo "needs a C compiler for wasm32-wasi: sudo apt-get install $packages" >&2
        exit 1
    fi
fi
mkdir -p build
"$router" policy bindings --lang c build/sdk >/dev/null
clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Wextra -Werror \
    -Ibuild/sdk app.c build/sdk/wasm_router_policy.c build/sdk/routing_policy.c \
    build/sdk/routing_policy_component_type.o -o build/core.wasm
"$router" policy componentize build/core.wasm -o "${OUT:-cache_affine.wasm}"
