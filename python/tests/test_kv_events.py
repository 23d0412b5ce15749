"""KV cache events from real publishers' message shapes: msgspec structs
declared as SGLang's and vLLM's `kv_events.py` declare them (vLLM in both
of its encodings), sent over real ZMQ (pyzmq) to the router from the wheel,
which follows the worker through its /get_server_info. What the router's
precise index holds is read from its `wasm_router_kv_index_pages` gauge.
Loopback only; every wait is bounded."""

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Union

import msgspec
import pytest
import requests
import zmq


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# SGLang (python/sglang/srt/disaggregation/kv_events.py): arrays.
class SglangBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    attn_dp_rank: Optional[int] = None


class SglangEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class SglangStored(SglangEvent, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: Optional[int]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]
    medium: Optional[str] = None


class SglangRemoved(SglangEvent, tag="BlockRemoved"):
    block_hashes: list[int]
    medium: Optional[str] = None


class SglangCleared(SglangEvent, tag="AllBlocksCleared"):
    pass


# vLLM before its events became maps: the same arrays, its own fields.
class VllmArrayBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: Optional[int] = None


class VllmArrayEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class VllmArrayStored(VllmArrayEvent, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: Optional[int]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]
    medium: Optional[str]


class VllmArrayRemoved(VllmArrayEvent, tag="BlockRemoved"):
    block_hashes: list[int]
    medium: Optional[str]


class VllmArrayCleared(VllmArrayEvent, tag="AllBlocksCleared"):
    pass


# vLLM now (vllm/distributed/kv_events.py): maps, tagged by "type", hashes
# int or bytes.
class VllmBatch(msgspec.Struct, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: Optional[int] = None


class VllmEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    pass


class VllmStored(VllmEvent, tag="BlockStored"):
    block_hashes: list[Union[bytes, int]]
    parent_block_hash: Union[bytes, int, None]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]
    medium: Optional[str]
    lora_name: Optional[str]
    extra_keys: Optional[list[Any]] = None
    group_idx: Optional[int] = None
    kv_cache_spec_kind: Optional[str] = None
    kv_cache_spec_sliding_window: Optional[int] = None


class VllmRemoved(VllmEvent, tag="BlockRemoved"):
    block_hashes: list[Union[bytes, int]]
    medium: Optional[str]
    group_idx: Optional[int] = None


class VllmCleared(VllmEvent, tag="AllBlocksCleared"):
    pass


PAGE = 4


def page(n):
    return list(range(n * PAGE + 1, n * PAGE + PAGE + 1))


# Per format: the batch, then BlockStored (hash, parent, tokens),
# BlockRemoved (hash) and AllBlocksCleared.
FORMATS = {
    "sglang": (
        lambda events: SglangBatch(ts=time.time(), events=events, attn_dp_rank=0),
        lambda h, parent, tokens: SglangStored([-h], None if parent is None else -parent, tokens, PAGE, None, "GPU"),
        lambda h: SglangRemoved([-h]),
        SglangCleared,
    ),
    "vllm-arrays": (
        lambda events: VllmArrayBatch(ts=time.time(), events=events, data_parallel_rank=0),
        lambda h, parent, tokens: VllmArrayStored([h], parent, tokens, PAGE, None, None),
        lambda h: VllmArrayRemoved([h], None),
        VllmArrayCleared,
    ),
    "vllm-maps": (
        lambda events: VllmBatch(ts=time.time(), events=events),
        lambda h, parent, tokens: VllmStored(
            [h.to_bytes(32, "big")], None if parent is None else parent.to_bytes(32, "big"),
            tokens, PAGE, None, "GPU", None, group_idx=0, kv_cache_spec_kind="full_attention"),
        lambda h: VllmRemoved([h.to_bytes(32, "big")], "GPU"),
        VllmCleared,
    ),
}


class Worker(BaseHTTPRequestHandler):
    """A worker that announces where it publishes."""

    kv_events_config = ""

    def do_GET(self):
        answers = {
            "/health": {},
            "/get_model_info": {"model_path": "m"},
            "/get_server_info": {"kv_events_config": self.kv_events_config, "page_size": PAGE},
        }
        body = answers.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body or {}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def publisher():
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    yield pub, port
    pub.close(linger=0)
    context.term()


@pytest.fixture
def router(publisher):
    _, port = publisher
    handler = type("Announcing", (Worker,), {"kv_events_config": json.dumps(
        {"publisher": "zmq", "endpoint": f"tcp://*:{port}", "topic": ""})})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = f"http://127.0.0.1:{server.server_address[1]}"
    metrics_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wasm_router.launch_router", "--port", str(free_port()),
         "--prometheus-port", str(metrics_port), "--worker-urls", worker, "--kv-events",
         "--policy", "round_robin", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield f"http://127.0.0.1:{metrics_port}/metrics"
    proc.terminate()
    assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
    server.shutdown()


def pages(metrics):
    try:
        text = requests.get(metrics, timeout=2).text
    except requests.RequestException:
        return None
    for line in text.splitlines():
        if line.startswith("wasm_router_kv_index_pages "):
            return int(float(line.split()[1]))
    return None


@pytest.mark.parametrize("name", FORMATS)
def test_the_router_index_follows_each_publishers_encoding(name, publisher, router):
    pub, _ = publisher
    batch, stored, removed, cleared = FORMATS[name]
    seq = 0

    def send(*events):
        nonlocal seq
        payload = msgspec.msgpack.encode(batch(list(events)))
        pub.send_multipart([b"", seq.to_bytes(8, "big"), payload])
        seq += 1

    def until(what, want, keep_sending=None):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if keep_sending:
                keep_sending()
            if pages(router) == want:
                return
            time.sleep(0.1)
        raise AssertionError(f"{name}: timed out waiting until {what} (pages: {pages(router)})")

    # A PUB socket drops what it sends before the subscription arrives:
    # the first page again until the router holds it.
    until("the first page arrives", 1, lambda: send(stored(1, None, page(0))))
    send(stored(2, 1, page(1)), stored(3, 2, page(2)))
    until("three pages are held", 3)
    send(removed(2))
    until("a removal drops one", 2)
    send(cleared())
    until("the clear drops the rest", 0)
