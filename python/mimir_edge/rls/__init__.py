"""The Rate Limit Service: Envoy's ext_authz and ratelimit gRPC APIs, admin and metrics.

``supervisor`` runs N worker processes on one gRPC port (SO_REUSEPORT) sharing one tenant
table in shared memory; each ``worker`` serves gRPC (``grpc_service``) and HTTP
(``http_api``) and hands every request to the compiled engine in one call.
"""
