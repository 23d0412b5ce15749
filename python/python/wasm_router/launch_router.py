"""``python -m wasm_router.launch_router``: the router's own command line
(``router --help`` lists it), with the SGLang router's launch flags under
the same names and defaults. Unknown or invalid flags exit with code 2."""

import sys

from . import _native

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    sys.exit(_native.main(list(argv)))

if __name__ == "__main__":
    main()
