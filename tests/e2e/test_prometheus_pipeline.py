"""Real Prometheus remote write through the whole edge: NGINX (edge.conf) -> Envoy -> RLS ->
a second Prometheus standing in for Mimir's distributor.

    sender Prometheus ──► NGINX edge.conf ──► Envoy ──► receiver Prometheus (/api/v1/write)
     scrapes itself, the RLS's /metrics,        │ ext_authz (body as bytes)
     Envoy's /stats/prometheus (every 1 s)      ▼
                                               RLS (tenant "team-a"; limits set live through
                                                    its admin API, PUT /api/v1/limits)

What is exactly comparable, and why (the test asserts equalities, not tolerances):

* The sender counts every sample it appends for remote write
  (``prometheus_remote_storage_samples_in_total``, staleness markers included). Its
  ``prometheus_remote_storage_samples_total`` counts *attempts* (a batch retried after a 429
  is counted again) and ``..._samples_retried_total`` each retry of a batch, so the samples it
  delivered are ``samples_total - retried - failed``. These are exact only when nothing is in
  flight: ``..._samples_pending`` drops only once a batch's send (with all its retries) is
  over, so ``pending == 0`` and ``delivered == samples_in`` together mean every sample taken
  in was delivered. To reach such a moment the test stops the sender's scraping (a config
  reload with no targets; the remote-write section is unchanged, so the queue keeps running)
  and waits for it.
* The receiver scrapes nothing, so its ``prometheus_tsdb_head_samples_appended_total`` counts
  exactly the samples that arrived by remote write (a 429'd push appends nothing, so a retry
  cannot double-count).
* The RLS charges items (samples + histograms + exemplars + metadata). The sender has no
  exemplars or native histograms and sends no metadata (``metadata_config.send: false``), so
  the items the RLS allowed for the tenant are samples, and the items it denied are the
  samples the sender retried.
* Every sample is compared between the sender's own TSDB and the receiver's (each series,
  timestamp and value, job by job): the receiver holds exactly what the sender scraped.
  Queries skip staleness markers; none are written here (Prometheus writes none for a job
  removed whole at a reload), so these samples add up to ``samples_in``.

Phases: (1) under the limit, everything arrives, nothing is retried; (2) over the limit (rate
200/s, burst 1000, well below the ~1,600 samples/s the sender scrapes), the sender gets 429s,
retries them (``retry_on_http_429: true``, which Prometheus 2.42 supports; it waits the RLS's
Retry-After before each retry) and what arrives in the window is at most
rate x elapsed + burst; (3) the limit is raised and the backlog drains: nothing failed, nothing
dropped, every sample taken in is in the receiver. The shard count is fixed (min = max = 2):
Prometheus 2.42 reshards by stopping the shards, and a shard stuck in retries past
``flush_deadline`` would drop its samples at a reshard, which is the sender's behaviour, not
the edge's.

The tenant header: Debian's Prometheus 2.42 (the one installed here) does not send
``remote_write.headers`` (prometheus/prometheus#13030; upstream builds do), so the sender
writes to a test-only NGINX server in the same NGINX (not part of servers/nginx) that adds
``X-Scope-OrgID: team-a`` and forwards to the edge.conf server, standing in for the header a
correct sender sets itself. The sender's config sets ``headers`` anyway.

Everything listens on 127.0.0.1; every process is stopped by its ``with`` block. Figures are
printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mimir_edge.envoy_config import EnvoyConfig
from tests.e2e.harness import LOCALHOST, EnvoyProcess, free_port
from tests.e2e.nginx import NginxProcess
from tests.e2e.prometheus import PrometheusProcess
from tests.e2e.rls_process import RlsProcess

TENANT = "team-a"
TOKEN = "pipeline-admin-token"
HIGH = {"ingestion_rate": 1_000_000, "ingestion_burst_size": 10_000_000}
LOW_RATE = 200
LOW_BURST = 1000
MAX_SAMPLES_PER_SEND = 500  # below LOW_BURST: every batch can pass once tokens are there
QUEUE_CONFIG = {
    "capacity": 2000,
    "max_samples_per_send": MAX_SAMPLES_PER_SEND,
    "batch_send_deadline": "1s",
    "min_shards": 2,
    "max_shards": 2,
    "min_backoff": "100ms",
    "max_backoff": "1s",
    "retry_on_http_429": True,
}
SCRAPE_SECONDS = 6
THROTTLED_SECONDS = 10


@dataclass(frozen=True)
class SenderCounts:
    samples_in: float
    attempts: float
    retried: float
    failed: float
    dropped: float
    pending: float

    @property
    def delivered(self) -> float:
        return self.attempts - self.retried - self.failed


class Pipeline:
    """The running processes, with the readings the test compares."""

    def __init__(
        self,
        rls: RlsProcess,
        receiver: PrometheusProcess,
        envoy: EnvoyProcess,
        nginx: NginxProcess,
        sender: PrometheusProcess,
        push_url: str,
    ) -> None:
        self.rls, self.receiver, self.envoy, self.nginx, self.sender = (
            rls,
            receiver,
            envoy,
            nginx,
            sender,
        )
        self.push_url = push_url

    def logs(self) -> str:
        return "\n".join(
            [
                f"--- sender\n{self.sender.log()[-6000:]}",
                f"--- receiver\n{self.receiver.log()[-3000:]}",
                f"--- envoy\n{self.envoy.stderr()[-3000:]}",
                f"--- rls\n{self.rls.log()[-3000:]}",
                self.nginx.logs()[-3000:],
            ]
        )

    def sender_counts(self) -> SenderCounts:
        m = self.sender.metrics()

        def total(name: str) -> float:
            return sum(v for k, v in m.items() if k.split("{", 1)[0] == name)

        return SenderCounts(
            samples_in=total("prometheus_remote_storage_samples_in_total"),
            attempts=total("prometheus_remote_storage_samples_total"),
            retried=total("prometheus_remote_storage_samples_retried_total"),
            failed=total("prometheus_remote_storage_samples_failed_total"),
            dropped=total("prometheus_remote_storage_samples_dropped_total"),
            pending=total("prometheus_remote_storage_samples_pending"),
        )

    def received(self) -> float:
        """Samples the receiver appended (all of them came by remote write)."""
        return self.receiver.metric_sum("prometheus_tsdb_head_samples_appended_total")

    def rls_samples(self, decision: str) -> float:
        return self.rls.metric(
            f'rls_tenant_samples_total{{tenant="{TENANT}",decision="{decision}"}}'
        )

    def set_limits(self, limits: Mapping[str, float]) -> None:
        body = json.dumps({"overrides": {TENANT: limits}}).encode()
        req = urllib.request.Request(
            self.rls.http_url + "/api/v1/limits",
            data=body,
            method="PUT",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def scrape(self, on: bool) -> None:
        self.sender.reload(sender_config(self.push_url, self._targets() if on else {}))

    def _targets(self) -> dict[str, tuple[str, str]]:
        admin = self.envoy.admin_url.removeprefix("http://")
        return {
            "prometheus": (f"{LOCALHOST}:{self.sender.port}", "/metrics"),
            "rls": (f"{LOCALHOST}:{self.rls.http_port}", "/metrics"),
            "envoy": (admin, "/stats/prometheus"),
        }

    def wait(self, what: str, cond: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s: {what}\n{self.logs()}")
            time.sleep(0.25)

    def quiesce(self, timeout_s: float = 60.0) -> SenderCounts:
        """Stop scraping and wait until every sample taken in has been delivered (see the
        module docstring); two equal readings in a row, 0.25 s apart."""
        self.scrape(False)
        last: list[SenderCounts] = []

        def settled() -> bool:
            c = self.sender_counts()
            done = c.pending == 0 and c.delivered + c.dropped == c.samples_in
            last[:] = [c] if not last else [last[-1], c]
            return done and len(last) == 2 and last[0] == last[1]

        self.wait("the sender's queue to empty", settled, timeout_s)
        return last[-1]

    def access_log_statuses(self) -> list[int]:
        return [int(e["status"]) for e in self.nginx.access_log()]


def sender_config(push_url: str, targets: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "static_configs": [{"targets": [address]}]}
            for job, (address, path) in targets.items()
        ],
        "remote_write": [
            {
                "url": push_url,
                "headers": {"X-Scope-OrgID": TENANT},
                "queue_config": QUEUE_CONFIG,
                "metadata_config": {"send": False},
            }
        ],
    }


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(
        f"overrides:\n  {TENANT}:\n" + "".join(f"    {k}: {v}\n" for k, v in HIGH.items())
    )
    with ExitStack() as stack:
        rls = stack.enter_context(
            RlsProcess(tmp_path, "--overrides", str(overrides), "--admin-token", TOKEN)
        )
        receiver = stack.enter_context(PrometheusProcess({"global": {}}, receiver=True))
        cfg = EnvoyConfig(
            upstream_host=LOCALHOST,
            upstream_port=receiver.port,
            rls_host=LOCALHOST,
            rls_port=rls.grpc_port,
            listen_port=0,
            admin_port=0,
            push_path_rewrite="/api/v1/write",
            access_log=False,
        )
        envoy = stack.enter_context(EnvoyProcess(cfg))
        edge_port, tenant_port = free_port(), free_port()
        nginx = stack.enter_context(
            NginxProcess(
                "edge",
                distributor_port=receiver.port,
                envoy_port=envoy.listen_port,
                listen_port=edge_port,
                extra_http=tenant_stand_in(tenant_port, edge_port),
                extra_ports=[tenant_port],
            )
        )
        push_url = f"http://{LOCALHOST}:{tenant_port}/api/v1/push"
        # Scraping starts with the first reload; the sender's own port is known only now.
        sender = stack.enter_context(PrometheusProcess(sender_config(push_url, {})))
        yield Pipeline(rls, receiver, envoy, nginx, sender, push_url)


def tenant_stand_in(port: int, edge_port: int) -> str:
    """Test-only: adds the tenant header Debian's Prometheus drops (module docstring)."""
    return f"""
    server {{
        listen {LOCALHOST}:{port};
        access_log off;
        client_max_body_size 10m;
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Scope-OrgID {TENANT};
            proxy_pass http://{LOCALHOST}:{edge_port};
        }}
    }}
"""


def test_remote_write_through_the_edge_under_over_and_after_the_limit(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    try:
        _run(p)
    except AssertionError:
        print(p.logs())
        raise


def _run(p: Pipeline) -> None:
    # (1) Under the limit: everything the sender takes in arrives, nothing is retried.
    p.scrape(True)
    p.wait(
        "scrapes of all three targets",
        lambda: len(p.sender.query("up == 1")) == 3,
        timeout_s=20,
    )
    t_up, in_at_up = time.monotonic(), p.sender_counts().samples_in
    time.sleep(SCRAPE_SECONDS)
    rate_in = (p.sender_counts().samples_in - in_at_up) / (time.monotonic() - t_up)
    c1 = p.quiesce()
    received1 = p.received()
    print(
        f"\nphase 1: scraping ~{rate_in:.0f} samples/s; sender took in {c1.samples_in:.0f}, "
        f"delivered {c1.delivered:.0f}, receiver appended {received1:.0f}, "
        f"RLS allowed {p.rls_samples('allow'):.0f}"
    )
    assert c1.samples_in > 0
    assert (c1.retried, c1.failed, c1.dropped) == (0, 0, 0)
    assert c1.delivered == c1.samples_in == received1 == p.rls_samples("allow")
    assert p.rls_samples("deny") == 0
    # Phase 2 is meaningful only if the sender produces well above the low limit.
    assert rate_in > 3 * LOW_RATE, rate_in

    # (2) Over the limit: 429s, retried; what arrives stays within rate x time + burst.
    t_set = time.monotonic()
    p.set_limits({"ingestion_rate": LOW_RATE, "ingestion_burst_size": LOW_BURST})
    p.scrape(True)
    time.sleep(THROTTLED_SECONDS)
    p.wait("the sender to retry", lambda: p.sender_counts().retried > 0, timeout_s=20)
    received2 = p.received()
    elapsed = time.monotonic() - t_set
    c2 = p.sender_counts()
    arrived = received2 - received1
    bound = LOW_RATE * elapsed + LOW_BURST
    denied_pushes = p.access_log_statuses().count(429)
    print(
        f"phase 2: {elapsed:.1f} s at {LOW_RATE}/s burst {LOW_BURST}: {arrived:.0f} samples "
        f"arrived (bound {bound:.0f}, {arrived / bound:.0%} of it), sender backlog "
        f"{c2.samples_in - c2.delivered:.0f}, retried {c2.retried:.0f}, "
        f"429s at NGINX {denied_pushes}"
    )
    assert arrived <= bound
    assert arrived > 0
    assert denied_pushes > 0
    assert c2.failed == 0

    # (3) Limit raised: the backlog drains and every sample arrives, none twice.
    t_raise = time.monotonic()
    p.set_limits(HIGH)
    time.sleep(2)
    c3 = p.quiesce()
    drained_in = time.monotonic() - t_raise
    received3 = p.received()
    allowed, denied = p.rls_samples("allow"), p.rls_samples("deny")
    print(
        f"phase 3: queue empty {drained_in:.1f} s after the raise (2 s of scraping); "
        f"took in {c3.samples_in:.0f}, "
        f"delivered {c3.delivered:.0f} (attempts {c3.attempts:.0f}, retried "
        f"{c3.retried:.0f}), receiver appended {received3:.0f}; RLS allowed {allowed:.0f}, "
        f"denied {denied:.0f} samples"
    )
    assert (c3.failed, c3.dropped, c3.pending) == (0, 0, 0)
    assert c3.delivered == c3.samples_in == received3 == allowed
    # Every denied push was retried (and nothing else was): retries are exactly the 429s.
    assert c3.retried == denied > 0
    assert p.access_log_statuses().count(429) == p.rls.metric(
        f'rls_tenant_requests_total{{tenant="{TENANT}",decision="deny"}}'
    )
    assert set(p.access_log_statuses()) == {204, 429}
    assert "Retrying after duration specified by Retry-After header" in p.sender.log()
    # Sample by sample: the receiver holds exactly what the sender scraped, job by job.
    total = 0
    for job in ("prometheus", "rls", "envoy"):
        scraped = p.sender.raw_samples(f'{{job="{job}"}}')
        stored = p.receiver.raw_samples(f'{{job="{job}"}}')
        n = sum(len(v) for v in scraped.values())
        print(f"job {job}: {len(scraped)} series, {n} samples in the sender's TSDB")
        assert n > 0
        assert stored == scraped, f"job {job}: {len(stored)} series received"
        total += n
    # No staleness markers here (whole jobs removed at a reload get none), so that was all.
    assert total == c3.samples_in
