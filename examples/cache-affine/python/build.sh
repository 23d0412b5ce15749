#!/usr/bin/env bash
# Build the Python example into cache_affine.wasm (or $OUT): a venv (.venv,
# or $VENV) with componentize-py and the SDK of this checkout, then the
# SDK's build. Needs python3 with venv, and PyPI (or a mirror pip knows).
set -euo pipefail
cd "$(dirname "$0")"
venv="${VENV:-.venv}"
[ -x "$venv/bin/wasm-router-policy" ] || {
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check ../../../policies/sdk-python
}
"$venv/bin/wasm-router-policy" build app -o "${OUT:-cache_affine.wasm}"
