"""The installed wheel, from a fresh virtual environment: the launcher, the
simulated worker, the bundled default policy, a custom policy by path with
hot reload, the Router class, and flag errors. Loopback only; every wait is
bounded."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from openai import OpenAI

import wasm_router
from wasm_router import _flags

REPO = Path(__file__).resolve().parents[2]

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")

def spawn(*args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

@pytest.fixture
def workers():
    ports = [free_port(), free_port()]
    procs = [spawn("wasm_router.sim_worker", "--port", str(p), "--time-scale", "0", "--log-level", "warn") for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for url in urls:
        wait_for(url, lambda: requests.get(url + "/health", timeout=1).ok)
    yield urls
    for p in procs:
        p.terminate()
        p.wait(timeout=10)

@pytest.fixture
def launch(workers):
    started = []

    def start(*flags):
        port = free_port()
        proc = spawn("wasm_router.launch_router", "--port", str(port), "--prometheus-port", str(free_port()),
                     "--worker-urls", *workers, "--log-level", "warn", *flags)
        url = f"http://127.0.0.1:{port}"
        started.append(proc)
        wait_for("the router to be ready", lambda: requests.get(url + "/readiness", timeout=1).ok)
        return url

    yield start
    for proc in started:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()

def served(workers):
    """Requests each simulated worker has received."""
    counts = []
    for url in workers:
        text = requests.get(url + "/metrics", timeout=5).text
        line = next(l for l in text.splitlines() if l.startswith("sim_requests_total "))
        counts.append(int(line.split()[1]))
    return counts

def test_openai_and_requests_clients_through_the_launcher(launch):
    url = launch()
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    chat = client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert chat.choices[0].message.content == "tok tok tok"
    assert chat.usage.prompt_tokens > 0
    pieces = client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=8, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    assert text.split() == ["tok"] * 8
    done = client.completions.create(model="sim-model", prompt="Once upon a time", max_tokens=4)
    assert done.choices[0].text == "tok tok tok tok"
    streamed = client.completions.create(model="sim-model", prompt="Once upon a time", max_tokens=4, stream=True)
    assert "".join(c.choices[0].text for c in streamed).split() == ["tok"] * 4
    r = requests.post(url + "/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 2}}, timeout=10)
    assert r.ok and r.json()["meta_info"]["completion_tokens"] == 2
    assert r.headers["x-request-id"]

def test_the_bundled_default_policy_is_cache_aware(launch, workers):
    # A generous deadline: on a busy machine 10 ms could fire first, and the
    # fallback would spread the prefix over both workers.
    url = launch("--policy-call-deadline-ms", "1000")
    policies = requests.get(url + "/policies", timeout=5).json()["policies"]
    assert policies[0]["name"] == "cache_aware" and policies[0]["source"] == "builtin:cache_aware"
    before = served(workers)
    system = "You are a careful assistant. Answer briefly and precisely. " * 10
    for i in range(10):
        assert requests.post(url + "/generate", json={"text": f"{system} question {i}"}, timeout=10).ok
    after = served(workers)
    delta = sorted(a - b for a, b in zip(after, before))
    assert delta == [0, 10], f"one shared prefix, one worker: {delta}"

def test_a_custom_policy_by_path_is_hot_reloaded(launch, tmp_path):
    policy = tmp_path / "policy.wasm"
    shutil.copy(REPO / "policies" / "round_robin.wasm", policy)
    url = launch("--policy", str(policy))
    name = lambda: requests.get(url + "/policies", timeout=5).json()["policies"][0]["name"]
    assert name() == "round_robin"
    staged = tmp_path / "policy.wasm.new"
    shutil.copy(REPO / "policies" / "cache_aware.wasm", staged)
    os.replace(staged, policy)
    wait_for("the reload", lambda: name() == "cache_aware")
    assert requests.post(url + "/generate", json={"text": "after the reload"}, timeout=10).ok

def test_router_class_runs_in_a_background_thread_and_stops(workers):
    router = wasm_router.Router(worker_urls=workers, policy="round_robin", port=free_port(),
                                prometheus_port=free_port(), log_level="warn")
    with router:
        wait_for("the workers", lambda: requests.get(router.url + "/readiness", timeout=1).ok)
        r = requests.post(router.url + "/generate", json={"text": "from a thread"}, timeout=10)
        assert r.ok
        url = router.url
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=2)

def test_pd_mode_with_the_launcher_and_the_router_class():
    ports = {"prefill": free_port(), "decode": free_port()}
    procs = [spawn("wasm_router.sim_worker", "--port", str(p), "--role", role, "--time-scale", "0", "--log-level", "warn")
             for role, p in ports.items()]
    prefill, decode = (f"http://127.0.0.1:{p}" for p in ports.values())
    try:
        for url in (prefill, decode):
            wait_for(url, lambda: requests.get(url + "/health", timeout=1).ok)
        port = free_port()
        router = spawn("wasm_router.launch_router", "--port", str(port), "--prometheus-port", str(free_port()),
                       "--pd-disaggregation", "--prefill", prefill, str(ports["prefill"]), "--decode", decode,
                       "--log-level", "warn")
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for("the PD router", lambda: requests.get(url + "/readiness", timeout=1).ok)
            r = requests.post(url + "/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 4}}, timeout=30)
            assert r.ok and r.json()["text"] == "tok tok tok tok", r.text
        finally:
            router.terminate()
            assert router.wait(timeout=30) == 0, router.stderr.read().decode()
        with wasm_router.Router(pd_disaggregation=True, prefill=[[prefill, ports["prefill"]]], decode=[decode],
                                port=free_port(), prometheus_port=free_port(), log_level="warn") as r:
            wait_for("the PD router class", lambda: requests.get(r.url + "/readiness", timeout=1).ok)
            assert requests.post(r.url + "/generate", json={"text": "again"}, timeout=30).ok
        pulls = [l for l in requests.get(prefill + "/metrics", timeout=5).text.splitlines()
                 if l.startswith("sim_kv_pulls_total ")]
        assert pulls == ["sim_kv_pulls_total 2"], "each request's room was pulled from the prefill"
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)

def test_settings_are_checked_in_python():
    with pytest.raises(ValueError, match="unknown router setting 'cache_treshold'"):
        wasm_router.Router(worker_urls=[], cache_treshold=0.5)
    with pytest.raises(ValueError, match="cache_threshold"):
        wasm_router.Router(worker_urls=[], cache_threshold=2)
    with pytest.raises(ValueError, match="worker_urls must be a list"):
        wasm_router.Router(worker_urls="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="invalid port"):
        wasm_router.Router(worker_urls=[], port="x")
    with pytest.raises(ValueError, match="prefill must be a list of URLs or"):
        wasm_router.Router(pd_disaggregation=True, prefill="http://127.0.0.1:1")

@pytest.mark.parametrize("flags, message", [
    (["--cache-threshold", "3"], "between 0 and 1"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--port", "70000"], "port number"),
])
def test_bad_flags_exit_2_with_a_message(flags, message):
    done = subprocess.run([sys.executable, "-m", "wasm_router.launch_router", *flags], capture_output=True, text=True)
    assert done.returncode == 2
    assert message in done.stderr

def test_the_launcher_knows_every_flag_of_the_router():
    native_help = "import sys; from wasm_router import _native; sys.exit(_native.main(['--help']))"
    done = subprocess.run([sys.executable, "-c", native_help], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    native = set(re.findall(r"^\s+(?:-\w, )?--([a-z][a-z0-9-]*)", done.stdout, re.M)) - {"help", "version"}
    assert len(native) > 40, done.stdout
    ours = {name.replace("_", "-") for name in _flags.NAMES}
    assert native - ours == set(), "router flags the Python launcher lacks"
    assert ours - native == set(), "launcher flags the router does not know"

def test_the_launcher_is_the_routers_own_command_line():
    native_help = "import sys; from wasm_router import _native; sys.exit(_native.main(['--help']))"
    native = subprocess.run([sys.executable, "-c", native_help], capture_output=True, text=True)
    launcher = subprocess.run([sys.executable, "-m", "wasm_router.launch_router", "--help"], capture_output=True, text=True)
    assert launcher.returncode == 0, launcher.stderr
    assert launcher.stdout == native.stdout

def test_router_keywords_are_the_routers_flags():
    router = wasm_router.Router(worker_urls=["http://127.0.0.1:1", "http://127.0.0.1:2"], policy="random",
                                admin_api_key=["k1", "k2"], dp_aware=True, disable_retries=False, cache_threshold=0.5)
    argv = router.argv()
    assert argv[argv.index("--worker-urls"):][:3] == ["--worker-urls", "http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--admin-api-key"] == ["k1", "k2"]
    assert "--dp-aware" in argv and "--disable-retries" not in argv
    assert argv[argv.index("--cache-threshold") + 1] == "0.5"
    pd = wasm_router.Router(pd_disaggregation=True, prefill=[["http://127.0.0.1:1", 8998], "http://127.0.0.1:2"],
                            decode=["http://127.0.0.1:3"])
    assert pd.argv()[pd.argv().index("--prefill"):][:6] == [
        "--prefill", "http://127.0.0.1:1", "8998", "--prefill", "http://127.0.0.1:2", "--decode"]
    with pytest.raises(ValueError, match="must be above 0"):
        wasm_router.Router(worker_urls=[], request_timeout_secs=0)

def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "wasm-router"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--worker-urls" in done.stdout
