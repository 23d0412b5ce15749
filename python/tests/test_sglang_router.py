"""Side by side with sglang-router 0.3.2, installed from PyPI into a
scratch venv: every flag of its launcher is one of ours with the same
number of values, and ours beyond its are the listed extras; both routers
in front of the same recording worker forward the same headers, and
answer worker admin with its field names (issue 16). Loopback only;
bounded: one pip install, every wait timed."""

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

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
    "--policy-instances",
    "--decision-log",
    "--decision-log-sample",
    "--decision-log-max-mb",
    "--decision-log-buffer",
    "--decision-log-text",
    "--shadow-policy",
    "--no-policy-cache",
    "--no-watch",
    "--kv-events",
    "--prometheus-worker-series",
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
def sglang_python(tmp_path_factory):
    """The Python of a scratch venv with sglang-router 0.3.2."""
    venv = tmp_path_factory.mktemp("sglang-router-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", f"sglang-router=={SGLANG_ROUTER}"]
    subprocess.run(pip, check=True, timeout=600)
    return str(venv / "bin" / "python")


@pytest.fixture(scope="module")
def theirs(sglang_python):
    out = subprocess.run(
        [sglang_python, "-c", TABLE],
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


def test_service_discovery_flags_are_supported_as_sglang_router_spells_them():
    _native.check(["--service-discovery", "--selector", "app=sglang", "tier=gpu",
                   "--service-discovery-port", "30000", "--service-discovery-namespace", "llm"])
    _native.check(["--pd-disaggregation", "--service-discovery",
                   "--prefill-selector", "app=prefill", "--decode-selector", "app=decode"])
    with pytest.raises(ValueError, match="--selector"):
        _native.check(["--service-discovery"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder(BaseHTTPRequestHandler):
    """A worker that answers like SGLang and keeps each inference request's
    headers and body."""

    protocol_version = "HTTP/1.1"
    seen = []
    bodies = []

    def answer(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/get_model_info"):
            return self.answer({"model_path": "m"})
        if self.path.startswith("/v1/models"):
            return self.answer({"object": "list", "data": [{"id": "m"}]})
        return self.answer({})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        Recorder.bodies.append(body)
        return self.answer({"text": "ok", "meta_info": {}})

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def worker():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def start_router(python, module, worker):
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", module, "--host", "127.0.0.1", "--port", str(port),
         "--prometheus-port", str(free_port()), "--worker-urls", worker, "--policy", "round_robin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.post(url + "/generate", json={"text": "up?"}, timeout=2).ok:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{module} did not serve within 60 s")


@pytest.fixture(scope="module")
def routers(sglang_python, worker):
    theirs = start_router(sglang_python, "sglang_router.launch_router", worker)
    ours = start_router(sys.executable, "wasm_router.launch_router", worker)
    yield {"sglang-router": theirs[1], "wasm-router": ours[1]}
    for proc, _ in (theirs, ours):
        proc.terminate()
        proc.wait(timeout=30)


# One header of each class a client may send: credentials, request ids,
# trace context, routing keys, cookies, its own X- headers, hop-by-hop.
CLIENT_HEADERS = {
    "Authorization": "Bearer t",
    "X-Request-Id": "rid-1",
    "X-Correlation-Id": "cid-1",
    "X-Trace-Id": "tid-1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "v=1",
    "baggage": "k=v",
    "X-SMG-Routing-Key": "rk",
    "Cookie": "session=1",
    "X-Custom": "1",
    "User-Agent": "side-by-side",
    "Keep-Alive": "timeout=5",
}
# Set by each router's own HTTP client, not forwarded from the client.
TRANSPORT = {"host", "content-length", "accept", "connection"}


def test_workers_get_the_same_headers_from_both_routers(routers):
    forwarded = {}
    for name, url in routers.items():
        Recorder.seen.clear()
        r = requests.post(url + "/generate", json={"text": "hi"}, headers=CLIENT_HEADERS, timeout=30)
        assert r.ok, (name, r.text)
        got = Recorder.seen[-1]
        forwarded[name] = {h: got[h] for h in got if h not in TRANSPORT}
    assert forwarded["wasm-router"] == forwarded["sglang-router"]


def test_worker_admin_answers_carry_sglang_routers_field_names(routers, worker):
    keys = {}
    for name, url in routers.items():
        r = requests.post(url + "/workers", json={"url": worker.replace("127.0.0.1", "localhost")}, timeout=30)
        assert r.status_code == 202, (name, r.text)
        keys[name] = set(r.json())
        listed = requests.get(url + "/workers", timeout=30).json()
        keys[name + " list"] = set(listed)
        keys[name + " worker"] = set(listed["workers"][0])
    assert keys["sglang-router"] <= keys["wasm-router"]
    assert keys["sglang-router list"] <= keys["wasm-router list"]
    shared = {"id", "url", "model_id", "worker_type", "is_healthy", "load"}
    assert shared <= keys["sglang-router worker"]
    assert shared <= keys["wasm-router worker"]


def test_worker_ids_are_strings_and_a_removal_is_accepted_as_there(routers, worker):
    """Issue 32: a client doing `if worker_id:` refused our numeric 0, and
    expected sglang-router's 202 for a removal."""
    for name, url in routers.items():
        added = worker.replace("127.0.0.1", "localhost")
        requests.post(url + "/workers", json={"url": added}, timeout=30)
        deadline = time.monotonic() + 30
        while True:
            listed = requests.get(url + "/workers", timeout=30).json()["workers"]
            mine = [w["id"] for w in listed if w["url"] == added]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        ids = [w["id"] for w in listed]
        assert mine and all(isinstance(i, str) and i for i in ids), (name, listed)
        r = requests.delete(url + "/workers/" + mine[0], timeout=30)
        assert r.status_code == 202, (name, r.status_code, r.text)


def test_bodies_reach_workers_as_sent_where_sglang_router_rewrites_them(routers):
    """sglang-router 0.3.2 parses the body into its request type and sends
    that: its defaults added, fields it does not know dropped. This router
    forwards the client's bytes (README.md, "sglang-router 0.3.2's flags")."""
    sent = {"text": "hi", "sampling_params": {"max_new_tokens": 4}, "custom_field": 7}
    got = {}
    for name, url in routers.items():
        Recorder.bodies.clear()
        r = requests.post(url + "/generate", data=json.dumps(sent),
                          headers={"content-type": "application/json"}, timeout=30)
        assert r.ok, (name, r.text)
        got[name] = Recorder.bodies[-1]
    assert json.loads(got["wasm-router"]) == sent
    assert got["wasm-router"] == json.dumps(sent).encode(), "the very bytes"
    theirs = json.loads(got["sglang-router"])
    assert theirs["text"] == sent["text"]
    assert theirs["sampling_params"] == sent["sampling_params"]
    assert "custom_field" not in theirs, "sglang-router drops what it does not know"
