#!/usr/bin/env bash
# Build the JavaScript example into cache_affine.wasm (or $OUT): npm installs
# the SDK of this checkout with its toolchain (esbuild, componentize-js),
# then the SDK's build bundles and componentizes it. Needs Node.js 18+ and
# npm.
set -euo pipefail
cd "$(dirname "$0")"
# --install-links: the SDK is copied in with its own dependencies. Once:
# npm 10 drops a hoisted dependency of such a copy when it installs again
# over it (delete node_modules to take a changed SDK).
[ -d node_modules ] || npm install --install-links --no-audit --no-fund --silent
node_modules/.bin/wasm-router-policy-js build app.js -o "${OUT:-cache_affine.wasm}"
