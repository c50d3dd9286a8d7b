# syntax=docker/dockerfile:1
# mimir-edge overrides-sync: `mimir-edge overrides-sync`.
# Build from the repository root:
#   docker build -f servers/docker/overrides-sync.Dockerfile -t ghcr.io/mimir-edge/mimir-edge-overrides-sync:v0.1.0 .

ARG PYTHON_VERSION=3.11
ARG RUST_VERSION=1.86

# -- builder: the wheel (the Rust core through maturin) ---------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
# Debian bookworm's python3 is 3.11: the wheel is abi3 (cp311), so it installs on the runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY native/ native/
COPY python/ python/
# --locked: the crates of native/Cargo.lock, as tested.
RUN /opt/build/bin/maturin build --release --locked --out /dist

# -- runtime --------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
# tini as PID 1: signals are forwarded and stray children reaped (the process does not
# expect to be PID 1).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
RUN groupadd --system --gid 10001 mimir-edge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mimir-edge
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
# HTTP: /metrics, /healthz, /readyz.
EXPOSE 9091
ENTRYPOINT ["/usr/bin/tini", "--", "mimir-edge", "overrides-sync"]
