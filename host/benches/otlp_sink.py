"""An OTLP/gRPC trace receiver that counts the spans it is sent and keeps
none: the collector of host/benches/trace_overhead.sh. Prints its port,
then on exit the spans received."""

import signal
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    spans = 0

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                Sink.spans += len(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)


def stop(*_):
    print(f"spans received: {Sink.spans}", file=sys.stderr, flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
server.wait_for_termination()
