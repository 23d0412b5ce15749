#!/usr/bin/env bash
# Wheel figures, in one run: wheel size; time from `import wasm_router` to
# the first request served by a Router started from Python; requests/s (wrk,
# 32 connections) through the router launched with
# `python -m wasm_router.launch_router` beside the `router` binary, same
# flags, same instant upstreams. Prints Markdown.
#
#   ./python/benches/wheel.sh [seconds per measurement, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
source host/benches/common.sh
need_wrk
secs="${1:-10}"
rm -rf target/wheels target/bench-py
python3 -m venv target/bench-py
target/bench-py/bin/pip install --quiet "maturin>=1.5,<2" requests
target/bench-py/bin/maturin build --release --quiet -m python/Cargo.toml -o target/wheels
target/bench-py/bin/pip install --quiet target/wheels/wasm_router-*.whl
py=target/bench-py/bin/python
up1=$(free_port); up2=$(free_port)
for p in "$up1" "$up2"; do "$router" sim-worker --port "$p" --fixed-response --log-level warn & pids+=($!); wait_port "$p"; done
urls="http://127.0.0.1:$up1 http://127.0.0.1:$up2"

echo "| figure | value |"
echo "| --- | ---: |"
echo "| wheel size | $(du -k target/wheels/wasm_router-*.whl | cut -f1) KiB |"

ms=$("$py" - "$up1" "$up2" <<'PY'
import socket, sys, time
t0 = time.perf_counter()
import requests
from wasm_router import Router
def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]
urls = [f"http://127.0.0.1:{p}" for p in sys.argv[1:]]
r = Router(worker_urls=urls, policy="cache_aware", port=port(), prometheus_port=port(), log_level="warn").start_background()
while True:
    try:
        if requests.post(r.url + "/generate", json={"text": "first"}, timeout=2).ok:
            break
    except requests.RequestException:
        pass
    time.sleep(0.005)
print(f"{(time.perf_counter() - t0) * 1e3:.0f}")
r.stop()
PY
)
echo "| import to first request served (Router.start_background, cache_aware) | $ms ms |"

lua=$(mktemp)
printf '%s\n' 'wrk.method = "POST"' 'wrk.headers["Content-Type"] = "application/json"' \
    "wrk.body = '{\"text\": \"What is the capital of France? Answer in one word.\"}'" >"$lua"
rps() { wrk -t2 -c32 -d"${secs}s" -s "$lua" "http://127.0.0.1:$1/generate" | awk '/Requests\/sec/ {print $2}'; }

port=$(free_port)
# shellcheck disable=SC2086
"$router" --port "$port" --prometheus-port "$(free_port)" --policy round_robin --worker-urls $urls --max-concurrent-requests 0 --log-level warn & pids+=($!)
wait_port "$port"; sleep 1
binary=$(rps "$port")
stop_last
port=$(free_port)
# shellcheck disable=SC2086
"$py" -m wasm_router.launch_router --port "$port" --prometheus-port "$(free_port)" --policy round_robin --worker-urls $urls --max-concurrent-requests 0 --log-level warn & pids+=($!)
wait_port "$port"; sleep 1
python=$(rps "$port")
echo "| req/s, router binary | $binary |"
echo "| req/s, python -m wasm_router.launch_router | $python |"
echo "| python / binary | $(python3 -c "print(f'{$python/$binary:.2f}')") |"
