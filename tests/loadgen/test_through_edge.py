"""The load generator through the real edge: Envoy + ``mimir-edge rls`` + a recording upstream.

One tenant has room, one a burst of 2,500 samples: the report's 429s, accepted samples and
refusal text must be what the edge decided and what reached the upstream.
"""

from __future__ import annotations

from pathlib import Path

from mimir_edge import scan_remote_write
from mimir_edge.loadgen import LoadConfig, run
from tests.e2e.harness import EnvoyProcess, RecordingUpstream
from tests.e2e.rls_process import RlsProcess
from tests.e2e.test_harness import config

OVERRIDES = """
overrides:
  roomy:
    ingestion_rate: 10000000
    ingestion_burst_size: 100000000
  tight:
    ingestion_rate: 1
    ingestion_burst_size: 2500
"""


def test_report_matches_what_the_edge_let_through(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(OVERRIDES)
    with RecordingUpstream() as up, RlsProcess(tmp_path, "--overrides", str(overrides)) as rls:
        with EnvoyProcess(config(up.port, rls.grpc_port)) as envoy:
            cfg = LoadConfig(
                url=envoy.url + "/api/v1/push",
                tenants=("roomy", "tight"),
                concurrency=2,
                requests=40,
                series=2000,
                samples_per_request=500,
            )
            report = run(cfg)
        arrived = up.requests

    roomy, tight = report.tenants["roomy"], report.tenants["tight"]
    assert roomy.status == {200: roomy.requests}
    # 2,500 of burst = five 500-sample pushes; at 1 sample/s nothing more is earned.
    assert tight.status == {200: 5, 429: tight.requests - 5}
    assert tight.accepted.samples == 2500
    assert report.status[429] == tight.requests - 5
    assert "ingestion rate limit" in report.examples[429]
    # What the report calls accepted is exactly what reached the upstream.
    assert len(arrived) == report.ok
    assert sum(scan_remote_write(r.body).samples for r in arrived) == report.accepted.samples
