"""`wasm-router-policy build APP -o FILE.wasm`: make a policy component from
the Python module APP (a file APP.py in the current directory, or on `-p`
paths) with componentize-py, against the contract this package carries.

A module of its own: the SDK (`wasm_router_policy`) imports bindings that
exist only inside a build, so it cannot run here.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

# The SDK's directory, found without running its __init__.
SDK = Path(importlib.util.find_spec("wasm_router_policy").submodule_search_locations[0])
WIT = SDK / "wit" / "policy.wit"
WORLD = "routing-policy"


def componentize_py() -> str:
    """componentize-py, from this Python's environment first."""
    beside = Path(sys.executable).parent / "componentize-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("componentize-py")
    if found is None:
        sys.exit(
            "componentize-py is not installed: "
            "`pip install componentize-py==0.25.1` in this environment"
        )
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="wasm-router-policy", description="Build a wasm-router policy written in Python."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="make a component from a Python module")
    build.add_argument("app", help="the module that assigns `Policy = wasm_router_policy.export(...)`")
    build.add_argument("-o", "--output", required=True, help="the .wasm file to write")
    build.add_argument(
        "-p", "--path", action="append", default=[], help="more directories to import from"
    )
    sub.add_parser("wit", help="print the path of the contract (wit/policy.wit) this SDK targets")
    args = parser.parse_args(argv)
    if args.command == "wit":
        print(WIT)
        return 0
    paths = [os.getcwd(), *args.path, str(SDK.parent)]
    command = [componentize_py(), "-d", str(WIT), "-w", WORLD, "componentize", args.app]
    for p in paths:
        command += ["-p", p]
    command += ["-o", args.output]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
