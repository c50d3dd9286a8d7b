"""``mimir-edge load``: a remote-write load generator (the rollout guide's load-remote-write).

It pushes realistic remote-write bodies (node_exporter, kube-state-metrics and application
series; remote write 1.0 or 2.0; optional exemplars and native histograms) or replays a
captured corpus, to one URL as one or more tenants, from ``--concurrency`` workers each
holding one keep-alive connection, closed loop or at a fixed ``--rate``; then reports. The
Python API::

    from mimir_edge.loadgen import LoadConfig, run
    report = run(LoadConfig(url="http://127.0.0.1:8080/api/v1/push", tenants=("t1",),
                            rate=50, duration_s=5))
    report.status, report.sent.samples, report.accepted.samples, report.latency.quantile(0.99)

``make_bodies(series=..., samples_per_request=..., protocol=..., exemplars=...,
histograms=...)`` returns one scrape's worth of snappy-compressed bodies with their counts.

The ``--json`` document (``version`` 1; keys are stable, new ones may be added)::

    version          1
    config           url, protocol (1|2), tenants [names], concurrency, rate (req/s or null:
                     closed loop), duration_s, requests (limit or null), series,
                     samples_per_request (null with a corpus), exemplars, histograms, corpus
    elapsed_s        wall time from the start signal (once every worker thread exists) to
                     the last worker finishing
    interrupted      true if stopped early (Ctrl-C, SIGTERM)
    requests         total (sends attempted), answered (got an HTTP status), ok (2xx),
                     connection_errors (no HTTP status), skipped (open loop: came due while
                     every worker was busy; never sent)
    status           {"200": n, "429": n, ...} answered requests per HTTP status code
    errors           {"connection refused": n, ...} connection errors per reason
    sent             samples, histograms, exemplars, metadata, ingested: what the answered
                     requests carried (ingested = the sum Mimir's ingestion limit charges)
    accepted         the same for requests answered 2xx
    bytes_sent       compressed body bytes of the answered requests
    throughput       requests_per_s, samples_per_s, ingested_per_s, accepted_ingested_per_s
    latency_ms       p50, p90, p99, max, mean of answered requests (percentiles within 1 %)
    tenants          {name: {requests, status, connection_errors, sent, accepted}}
    examples         {"429": "start of one such response body", ...} for non-2xx codes
"""

from mimir_edge.loadgen.bodies import Body, CorpusError, load_corpus, make_bodies
from mimir_edge.loadgen.command import add_parser
from mimir_edge.loadgen.config import ConfigError, LoadConfig
from mimir_edge.loadgen.durations import parse_duration
from mimir_edge.loadgen.report import (
    Counts,
    LatencyHistogram,
    LoadReport,
    TenantReport,
    format_table,
)
from mimir_edge.loadgen.runner import Progress, TargetUnreachable, run

__all__ = [
    "Body",
    "ConfigError",
    "CorpusError",
    "Counts",
    "LatencyHistogram",
    "LoadConfig",
    "LoadReport",
    "Progress",
    "TargetUnreachable",
    "TenantReport",
    "add_parser",
    "format_table",
    "load_corpus",
    "make_bodies",
    "parse_duration",
    "run",
]
