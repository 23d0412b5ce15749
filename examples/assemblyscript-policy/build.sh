#!/usr/bin/env bash
# Build the example into session_affinity_as.wasm: npm builds the core
# module, the router wraps it into a component and checks it.
# ROUTER names the router binary (default: `router` on PATH).
set -euo pipefail
cd "$(dirname "$0")"
router="${ROUTER:-router}"
npm ci --no-audit --no-fund --silent
npm run --silent build
"$router" policy componentize build/core.wasm -o session_affinity_as.wasm
"$router" policy check session_affinity_as.wasm
