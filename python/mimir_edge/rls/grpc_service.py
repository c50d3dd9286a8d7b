"""The gRPC side of a worker: raw bytes to the engine and back, plus gRPC health.

No protobuf objects on the hot path: the method handlers have no (de)serializers, so grpcio
hands over the request bytes and sends the bytes the engine returns.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mimir_edge._native import Engine

__all__ = ["AUTHZ_SERVICE", "RATELIMIT_SERVICE", "build_server", "set_not_serving", "set_serving"]

AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
RATELIMIT_SERVICE = "envoy.service.ratelimit.v3.RateLimitService"


def build_server(
    engine: Engine, listen: str, *, threads: int, max_message_bytes: int
) -> tuple[Any, Any]:
    """A started-later grpc server bound to ``listen`` (SO_REUSEPORT on, so every worker
    binds the same port) and its health servicer."""

    def check(request: bytes, context: Any) -> bytes:
        return engine.check(request)

    def should_rate_limit(request: bytes, context: Any) -> bytes:
        try:
            return engine.should_rate_limit(request)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise  # abort raises; this keeps type checkers content

    handlers = [
        grpc.method_handlers_generic_handler(
            AUTHZ_SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(check)}
        ),
        grpc.method_handlers_generic_handler(
            RATELIMIT_SERVICE,
            {"ShouldRateLimit": grpc.unary_unary_rpc_method_handler(should_rate_limit)},
        ),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        handlers=handlers,
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Envoy keeps its connections open: let HTTP/2 keepalive pings through.
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot bind gRPC on {listen}")
    for name in ("", AUTHZ_SERVICE, RATELIMIT_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer


def set_serving(health_servicer: Any) -> None:
    for name in ("", AUTHZ_SERVICE, RATELIMIT_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def set_not_serving(health_servicer: Any) -> None:
    for name in ("", AUTHZ_SERVICE, RATELIMIT_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
