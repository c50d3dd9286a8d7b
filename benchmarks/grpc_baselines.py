"""Baseline gRPC servers for the RLS throughput benchmark (run as scripts, not tests).

- ``trivial``: the naive way, one grpcio process whose Check handler deserializes the
  request with the xds-protos stubs and answers OK (what a first RLS in Python would do).
- ``floor``: the transport itself, raw bytes in and a constant OK out, on ``--workers``
  processes sharing the port (SO_REUSEPORT), exactly as the RLS runs: nothing can be faster
  on this transport.

    python -m benchmarks.grpc_baselines floor --port 18081 --workers 2
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from concurrent import futures
from typing import Any

import grpc

from mimir_edge.rls.settings import Settings

SERVICE = "envoy.service.auth.v3.Authorization"
#: CheckResponse{status: {}, ok_response: {}}: what the engine sends for an allow.
OK_RESPONSE = b"\x0a\x00\x1a\x00"


def _handler(kind: str) -> Any:
    if kind == "floor":
        return grpc.unary_unary_rpc_method_handler(lambda request, context: OK_RESPONSE)
    from envoy.service.auth.v3 import external_auth_pb2 as ea
    from google.rpc import status_pb2

    def check(request: Any, context: Any) -> Any:
        assert request.attributes.request.http.headers["x-scope-orgid"]
        return ea.CheckResponse(status=status_pb2.Status(code=0), ok_response=ea.OkHttpResponse())

    return grpc.unary_unary_rpc_method_handler(
        check,
        request_deserializer=ea.CheckRequest.FromString,
        response_serializer=ea.CheckResponse.SerializeToString,
    )


def serve(kind: str, port: int, threads: int) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads),
        handlers=[grpc.method_handlers_generic_handler(SERVICE, {"Check": _handler(kind)})],
        options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 16 << 20)],
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("trivial", "floor"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    # The RLS's default, so every server of the comparison has the same thread pool.
    p.add_argument("--threads", type=int, default=Settings().grpc_threads)
    a = p.parse_args()
    if a.workers == 1:
        serve(a.kind, a.port, a.threads)
        return 0
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.grpc_baselines",
        a.kind,
        "--port",
        str(a.port),
        "--threads",
        str(a.threads),
    ]
    procs = [subprocess.Popen(cmd) for _ in range(a.workers)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    for pr in procs:
        pr.terminate()
    for pr in procs:
        pr.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
