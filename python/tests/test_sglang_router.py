"""Side by side with sglang-router 0.3.2, installed from PyPI into a
scratch venv: every flag of its launcher is one of ours with the same
number of values, and ours beyond its are the listed extras (issue 16).
Bounded: one pip install, one subprocess per flag table."""

import json
import subprocess
import sys

import pytest

from wasm_router import _native

SGLANG_ROUTER = "0.3.2"

# Our flags that sglang-router's launcher does not have (README.md,
# "sglang-router 0.3.2's flags").
OUR_EXTRAS = {
    "--config",
    "--attempt-timeout-secs",
    "--connect-timeout-secs",
    "--stream-idle-timeout-secs",
    "--worker-load-check-interval",
    "--admin-api-key",
    "--allow-remote-admin",
    "--log-json",
    "--policy-call-deadline-ms",
    "--policy-memory-limit-mb",
    "--no-policy-cache",
    "--no-watch",
}

# Its launcher's table: each flag's argparse nargs (0 for a switch) and
# default.
TABLE = r"""
import argparse, json
from sglang_router.router_args import RouterArgs
parser = argparse.ArgumentParser()
RouterArgs.add_cli_args(parser)
flags = {}
for action in parser._actions:
    if not action.option_strings or action.dest == "help":
        continue
    switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
    flags[action.option_strings[0]] = {
        "nargs": 0 if switch else action.nargs,
        "default": action.default,
    }
print(json.dumps(flags, default=str))
"""

# Errors of the parser (an unknown flag, a wrong number of values), as
# opposed to validation's (a value this router refuses).
PARSE_ERRORS = ("unrecognized", "unexpected argument", "unexpected value", "a value is required")


@pytest.fixture(scope="module")
def theirs(tmp_path_factory):
    venv = tmp_path_factory.mktemp("sglang-router-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", f"sglang-router=={SGLANG_ROUTER}"]
    subprocess.run(pip, check=True, timeout=600)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", TABLE],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return json.loads(out)


def ours():
    return {flag for (_name, flag, _switch, _max, _names) in _native.flags()}


def values_for(nargs, default):
    """Argument lists sglang-router takes for a flag of this nargs: each
    number of values it accepts, with its default where it has one."""
    if nargs == 0:
        return [[]]
    one = "1" if default in (None, "None", "[]", "{}") else str(default)
    if nargs is None or nargs == 1:
        return [[one]]
    if nargs == "+":
        return [[one], [one, one]]
    if nargs == "*":
        return [[], [one, one]]
    return [[one] * int(nargs)]


def test_every_sglang_router_flag_is_ours_and_ours_beyond_are_the_listed_extras(theirs):
    assert set(theirs) - ours() == set(), "sglang-router flags we do not accept"
    assert ours() - set(theirs) == OUR_EXTRAS


def test_each_sglang_router_flag_takes_its_number_of_values(theirs):
    wrong = []
    for flag, spec in sorted(theirs.items()):
        for values in values_for(spec["nargs"], spec["default"]):
            try:
                _native.check([flag, *values])
            except ValueError as e:
                # Refusing a value (not supported here, or needs another
                # flag) is validation; the parser must take the flag.
                if any(p in str(e) for p in PARSE_ERRORS):
                    wrong.append(f"{flag} {values}: {e}")
    assert wrong == []


def test_flags_at_sglang_router_defaults_are_accepted(theirs):
    refused = []
    for flag in ["--max-concurrent-requests", "--history-backend", "--backend",
                 "--worker-startup-timeout-secs", "--otlp-traces-endpoint",
                 "--service-discovery-port", "--oracle-pool-min", "--redis-retention-days",
                 "--bucket-adjust-interval-secs", "--tokenizer-cache-l1-max-memory"]:
        try:
            _native.check([flag, str(theirs[flag]["default"])])
        except ValueError as e:
            refused.append(f"{flag}: {e}")
    assert refused == []
