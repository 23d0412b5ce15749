"""Service discovery's figures (issue 32), against `router sim-kube-api`.

1. Pod Ready -> first request routed to it, and pod deleted -> last new
   request to it, over PODS pods (20 unless set): simulated workers at
   127.0.0.N on one port, a client sending small requests back to back
   through a round_robin router; each worker's own request counter is read
   every 5 ms.
2. Discovery of LARGE pods (1,000 unless set; their IPs serve nothing, and
   health checks are off so each is a worker at once): the time from the
   router's start to all of them in GET /workers, and the router's RSS
   before any pod and with all of them.

Run by host/benches/discovery.sh, which builds the router. Loopback only;
every loop is bounded in count and time.
"""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROUTER = os.environ.get("ROUTER", "target/release/router")
PODS = int(os.environ.get("PODS", "20"))
LARGE = int(os.environ.get("LARGE", "1000"))
procs = []


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port):
    for _ in range(300):
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{host}:{port} never opened")


def call(method, url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read()
        return json.loads(text) if text else None


def start(args, stdout=subprocess.DEVNULL, env=None):
    p = subprocess.Popen([ROUTER, *args], stdout=stdout, stderr=subprocess.DEVNULL, env=env)
    procs.append(p)
    return p


def kube_api():
    port = free_port()
    start(["sim-kube-api", "--port", str(port)])
    wait_port("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    cfg = tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False)
    cfg.write(f"""apiVersion: v1
kind: Config
clusters:
- name: sim
  cluster:
    server: {url}
contexts:
- name: sim
  context:
    cluster: sim
    user: sim
current-context: sim
users:
- name: sim
  user: {{}}
""")
    cfg.close()
    return url, cfg.name


def pod(name, ip, ready=True):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "w"}},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def router(kubeconfig, worker_port, extra):
    port, metrics = free_port(), free_port()
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    p = start(["--port", str(port), "--prometheus-port", str(metrics), "--service-discovery",
               "--selector", "app=w", "--service-discovery-port", str(worker_port),
               "--log-level", "warn", *extra], env=env)
    wait_port("127.0.0.1", port)
    return p, f"http://127.0.0.1:{port}"


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return kb / 1024


def sim_requests(url):
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return int(re.search(r"^sim_requests_total (\d+)", text, re.M).group(1))


def latencies():
    api, kubeconfig = kube_api()
    worker_port = free_port("127.0.0.2")
    hosts = [f"127.0.0.{n}" for n in range(2, 2 + PODS)]
    for h in hosts:
        start(["sim-worker", "--host", h, "--port", str(worker_port), "--time-scale", "0",
               "--log-level", "warn"])
    for h in hosts:
        wait_port(h, worker_port)
    # One pod always there, so that requests flow from the start.
    call("PUT", f"{api}/sim/pods", pod("base", hosts[0]))
    _, url = router(kubeconfig, worker_port,
                    ["--policy", "round_robin", "--health-check-interval-secs", "1"])
    for _ in range(200):
        if call("GET", f"{url}/workers")["total"] == 1:
            break
        time.sleep(0.05)
    stop = threading.Event()

    def client():
        deadline = time.time() + 600
        while not stop.is_set() and time.time() < deadline:
            try:
                call("POST", f"{url}/generate", {"text": "hi", "sampling_params": {"max_new_tokens": 1}})
            except Exception:
                time.sleep(0.01)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    ready, gone = [], []
    for i, h in enumerate(hosts[1:], 1):
        w = f"http://{h}:{worker_port}"
        before = sim_requests(w)
        t0 = time.time()
        call("PUT", f"{api}/sim/pods", pod(f"p{i}", h))
        while sim_requests(w) == before and time.time() - t0 < 30:
            time.sleep(0.005)
        ready.append(time.time() - t0)
        # Deleted: the last request it gets after the DELETED event.
        t0 = time.time()
        call("DELETE", f"{api}/sim/pods/default/p{i}")
        last, seen = t0, sim_requests(w)
        while time.time() - last < 1.0 and time.time() - t0 < 30:
            n = sim_requests(w)
            if n != seen:
                seen, last = n, time.time()
            time.sleep(0.005)
        gone.append(last - t0)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    return ready, gone


def large():
    api, kubeconfig = kube_api()
    worker_port = free_port()
    p, url = router(kubeconfig, worker_port, ["--disable-health-check", "--policy", "round_robin"])
    time.sleep(1)
    before = rss_mb(p.pid)
    t0 = time.time()
    for i in range(LARGE):
        call("PUT", f"{api}/sim/pods", pod(f"big{i}", f"127.1.{i // 250}.{i % 250 + 1}"))
    created = time.time() - t0
    while call("GET", f"{url}/workers")["total"] < LARGE and time.time() - t0 < 120:
        time.sleep(0.02)
    full = time.time() - t0
    total = call("GET", f"{url}/workers")["total"]
    time.sleep(1)
    return created, full, total, before, rss_mb(p.pid)


def main():
    try:
        ready, gone = latencies()
        ms = lambda xs: f"median {statistics.median(xs) * 1e3:.0f} ms, max {max(xs) * 1e3:.0f} ms"
        print(f"| pod Ready -> first request routed to it ({len(ready)} pods) | {ms(ready)} |")
        print(f"| pod deleted -> last new request to it ({len(gone)} pods) | {ms(gone)} |")
        created, full, total, before, after = large()
        print(f"| {LARGE} pods created one by one (over {created:.2f} s) -> all of them workers | {full:.2f} s from the first ({total} listed) |")
        print(f"| router RSS: no pod / {LARGE} pods | {before:.1f} MB / {after:.1f} MB |")
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


main()
