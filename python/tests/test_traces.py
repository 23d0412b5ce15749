"""OpenTelemetry traces (`--enable-trace --otlp-traces-endpoint`): an OTLP/gRPC
receiver (grpcio with opentelemetry-proto's service) gets the router's spans
for a request: the request span continuing the client's trace, the policy's
decision and the attempt as its children, and the worker receives the
attempt's context in its `traceparent`."""

import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent."""

    def __init__(self):
        self.spans = []

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class Worker(BaseHTTPRequestHandler):
    """Answers like SGLang and keeps the traceparent of each request."""

    protocol_version = "HTTP/1.1"
    traceparents = []

    def answer(self, body):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(b'{"model_path": "m"}' if self.path.startswith("/get_model_info") else b"{}")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Worker.traceparents.append(self.headers.get("traceparent"))
        self.answer(b'{"text": "ok", "meta_info": {}}')

    def log_message(self, *args):
        pass


def attributes(span):
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


@pytest.fixture
def traced():
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    otlp = server.add_insecure_port("127.0.0.1:0")
    server.start()
    worker = ThreadingHTTPServer(("127.0.0.1", 0), Worker)
    threading.Thread(target=worker.serve_forever, daemon=True).start()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wasm_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
         "--prometheus-port", str(free_port()), "--policy", "round_robin",
         "--worker-urls", f"http://127.0.0.1:{worker.server_address[1]}",
         "--enable-trace", "--otlp-traces-endpoint", f"127.0.0.1:{otlp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/health", timeout=2)
            break
        except requests.RequestException:
            time.sleep(0.2)
    yield url, receiver
    proc.terminate()
    proc.wait(timeout=30)
    worker.shutdown()
    server.stop(None)


def test_a_requests_spans_continue_the_clients_trace_and_reach_the_worker(traced):
    url, receiver = traced
    Worker.traceparents.clear()
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
    r = requests.post(url + "/generate", json={"text": "hi", "model": "m"}, headers=headers, timeout=30)
    assert r.ok, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(receiver.spans) < 3:
        time.sleep(0.1)
    by_name = {s.name: s for s in receiver.spans}
    assert set(by_name) >= {"POST /generate", "route", "attempt"}, sorted(by_name)
    request, decision, attempt = by_name["POST /generate"], by_name["route"], by_name["attempt"]
    # One trace, the client's; the request span's parent is the client's span.
    for span in (request, decision, attempt):
        assert span.trace_id.hex() == CLIENT_TRACE
    assert request.parent_span_id.hex() == CLIENT_PARENT
    assert decision.parent_span_id == request.span_id
    assert attempt.parent_span_id == request.span_id
    # The worker got the attempt's context, not the client's.
    assert Worker.traceparents[-1] == f"00-{CLIENT_TRACE}-{attempt.span_id.hex()}-01"
    req_attrs, decision_attrs, attempt_attrs = map(attributes, (request, decision, attempt))
    assert req_attrs["http.route"] == "/generate"
    assert req_attrs["http.response.status_code"] == 200
    assert req_attrs["gen_ai.request.model"] == "m"
    assert req_attrs["wasm_router.request_id"]
    assert decision_attrs["wasm_router.policy"] == "round_robin"
    assert len(decision_attrs["wasm_router.policy_sha256"]) == 64
    assert decision_attrs["wasm_router.candidates"] == 1
    assert decision_attrs["wasm_router.worker"].startswith("http://127.0.0.1:")
    assert attempt_attrs["http.response.status_code"] == 200
    assert attempt_attrs["wasm_router.attempt"] == 1
    assert attempt_attrs["wasm_router.ttfb_us"] > 0


def test_without_a_client_trace_the_request_starts_one(traced):
    url, receiver = traced
    Worker.traceparents.clear()
    r = requests.post(url + "/generate", json={"text": "hi"}, timeout=30)
    assert r.ok, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(s.name == "attempt" for s in receiver.spans):
        time.sleep(0.1)
    attempt = next(s for s in receiver.spans if s.name == "attempt")
    assert Worker.traceparents[-1] == f"00-{attempt.trace_id.hex()}-{attempt.span_id.hex()}-01"
    assert attempt.trace_id.hex() != CLIENT_TRACE
