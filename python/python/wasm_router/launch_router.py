"""``python -m wasm_router.launch_router``: start the router with the SGLang
router's launch flags (same names and defaults). Unknown or invalid flags are
argparse errors (exit code 2)."""

import argparse
import sys

from . import _flags, _native

def parser():
    p = argparse.ArgumentParser(
        prog="wasm-router",
        description="Load balancer for LLM inference workers with WebAssembly routing policies.",
    )
    _flags.add_arguments(p)
    return p

def main(argv=None):
    args = parser().parse_args(argv)
    settings = {name: getattr(args, name) for name in _flags.NAMES}
    sys.exit(_native.main(_flags.to_argv(settings)))

if __name__ == "__main__":
    main()
