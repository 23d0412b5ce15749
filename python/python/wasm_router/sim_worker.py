"""``python -m wasm_router.sim_worker --port 8000``: a simulated SGLang
worker (KV cache, prefill/decode timing, batching), to try the router
without GPUs. ``--help`` lists its knobs."""

import sys

from . import _native

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    sys.exit(_native.main(["sim-worker", *argv]))

if __name__ == "__main__":
    main()
