"""The decision engine, through its bytes-in/bytes-out API, with Envoy's own protobuf stubs
(xds-protos) building the requests and reading the responses."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3 import (
    attribute_context_pb2 as ac,
)
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.ratelimit.v3 import rls_pb2

from mimir_edge import CONTENT_TYPE_V2, scan_remote_write
from mimir_edge._native import Engine
from mimir_edge.encode import Sample, Series, compress, encode_v2
from tests.conftest import CorpusFile

SEC = 1_000_000_000
T0 = 1_000 * SEC


def check_request(
    tenant: str | None,
    body: bytes | None,
    *,
    content_type: str = "application/x-protobuf",
    encoding: str | None = "snappy",
    extra: dict[str, str] | None = None,
) -> bytes:
    headers = {"content-type": content_type, ":path": "/api/v1/push", ":method": "POST"}
    if encoding is not None:
        headers["content-encoding"] = encoding
    if tenant is not None:
        headers["x-scope-orgid"] = tenant
    if body is not None:
        headers["content-length"] = str(len(body))
    headers.update(extra or {})
    http = ac.AttributeContext.HttpRequest(method="POST", path="/api/v1/push", headers=headers)
    if body is not None:
        http.raw_body = body
        http.size = len(body)
    req = ea.CheckRequest(
        attributes=ac.AttributeContext(request=ac.AttributeContext.Request(http=http))
    )
    return bytes(req.SerializeToString())


def decide(engine: Engine, request: bytes, now_ns: int = T0) -> Any:
    return ea.CheckResponse.FromString(engine.check(request, now_ns=now_ns))


def headers_of(resp: Any) -> dict[str, str]:
    return {h.header.key: h.header.value for h in resp.denied_response.headers}


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(str(tmp_path / "table"), create=True, capacity=1024)


def limits(
    engine: Engine, tenants: dict[str, dict[str, Any]], generation: int = 1, **defaults: Any
) -> None:
    engine.set_limits(defaults, tenants, generation=generation)


def test_under_and_over_limit_tenants(engine: Engine, corpus: list[CorpusFile]) -> None:
    body = next(c for c in corpus if c.expected["samples"] == 2000)
    limits(
        engine,
        {
            "big": {"ingestion_rate": 1e6, "ingestion_burst_size": 10**6},
            "small": {"ingestion_rate": 1000, "ingestion_burst_size": 3000},
        },
    )
    ok = decide(engine, check_request("big", body.body))
    assert ok.status.code == 0
    assert ok.HasField("ok_response")
    first = decide(engine, check_request("small", body.body))
    assert first.status.code == 0  # 2000 of a 3000 burst
    over = decide(engine, check_request("small", body.body))
    assert over.status.code == 8  # RESOURCE_EXHAUSTED
    assert over.denied_response.status.code == 429
    h = headers_of(over)
    # 1000 tokens left, 2000 needed at 1000/s: 1 s.
    assert h["retry-after"] == "1"
    assert over.denied_response.body.startswith(
        "the request has been rejected because the tenant exceeded the ingestion rate limit, "
        "set to 1000 items/s with a maximum allowed burst of 3000."
    )
    assert "(err-mimir-tenant-max-ingestion-rate)" in over.denied_response.body
    # Retry-After is never too early: at +1 s the push passes.
    assert decide(engine, check_request("small", body.body), T0 + SEC).status.code == 0


def test_push_larger_than_burst_never_passes(engine: Engine, corpus: list[CorpusFile]) -> None:
    body = next(c for c in corpus if c.expected["samples"] == 2000)
    limits(engine, {"tiny": {"ingestion_rate": 100, "ingestion_burst_size": 500}})
    for later in (0, 10 * SEC, 3600 * SEC):
        r = decide(engine, check_request("tiny", body.body), T0 + later)
        assert r.denied_response.status.code == 429
        assert "exceeded the ingestion burst size limit, set to 500, with 2000 items" in (
            r.denied_response.body
        )


@pytest.mark.parametrize(
    ("tenant", "status", "body"),
    [
        (None, 401, "no org id\n"),
        ("", 401, "no org id\n"),
        ("a|b", 400, "tenant ID 'a|b' contains unsupported character '|'\n"),
        ("..", 400, "tenant ID is '.' or '..'\n"),
        ("x" * 151, 400, "tenant ID is too long: max 150 characters\n"),
    ],
)
def test_tenant_header_rules(engine: Engine, tenant: str | None, status: int, body: str) -> None:
    r = decide(engine, check_request(tenant, compress(b"")))
    assert r.status.code != 0
    assert r.denied_response.status.code == status
    assert r.denied_response.body == body


@pytest.mark.parametrize(
    ("body", "kwargs", "status", "prefix"),
    [
        (b"\x05garbage", {}, 400, "corrupt snappy:"),
        (b"\xff\xff\xff\xff\x0f", {}, 400, "decoded body too large:"),
        (compress(b"\x0a\x05\x0a"), {}, 400, "malformed protobuf at byte 1:"),
        (compress(b""), {"content_type": "application/json"}, 415, "unsupported content type:"),
        (compress(b""), {"encoding": "gzip"}, 415, "unsupported content encoding:"),
    ],
)
def test_bad_bodies(
    engine: Engine, body: bytes, kwargs: dict[str, Any], status: int, prefix: str
) -> None:
    r = decide(engine, check_request("t", body, **kwargs))
    assert r.status.code != 0
    assert r.denied_response.status.code == status
    assert r.denied_response.body.startswith(prefix)
    assert "retry-after" not in headers_of(r)


def test_remote_write_2_is_counted(engine: Engine) -> None:
    series = [Series((("__name__", f"m{i}"),), samples=(Sample(1.0, 1),)) for i in range(50)]
    body = compress(encode_v2(series))
    assert scan_remote_write(body, content_type=CONTENT_TYPE_V2).ingested == 50
    limits(engine, {"t": {"ingestion_rate": 1, "ingestion_burst_size": 60}})
    assert decide(engine, check_request("t", body, content_type=CONTENT_TYPE_V2)).status.code == 0
    r = decide(engine, check_request("t", body, content_type=CONTENT_TYPE_V2))
    assert r.denied_response.status.code == 429


def test_request_rate_is_charged_once_per_push(engine: Engine) -> None:
    limits(engine, {"t": {"request_rate": 2, "request_burst_size": 3}})
    body = compress(b"")
    codes = [decide(engine, check_request("t", body)).status.code for _ in range(5)]
    assert codes == [0, 0, 0, 8, 8]
    r = decide(engine, check_request("t", body))
    assert (
        "exceeded the request rate limit, set to 2 requests/s across all distributors with a "
        "maximum allowed burst of 3 (err-mimir-tenant-max-request-rate)"
    ) in r.denied_response.body
    assert headers_of(r)["retry-after"] == "1"
    assert decide(engine, check_request("t", body), T0 + SEC // 2).status.code == 0


def test_dry_run_lets_denies_through_and_counts_them(
    tmp_path: Path, corpus: list[CorpusFile]
) -> None:
    body = next(c for c in corpus if c.expected["samples"] == 2000).body
    for engine, tenants in (
        (Engine(str(tmp_path / "a"), create=True, dry_run=True), {"t": {}}),
        (Engine(str(tmp_path / "b"), create=True), {"t": {"dry_run": True}}),
    ):
        limits(
            engine,
            {k: {"ingestion_rate": 1, "ingestion_burst_size": 10, **v} for k, v in tenants.items()},
        )
        assert decide(engine, check_request("t", body)).status.code == 0
        events = engine.drain_events()
        assert [(e["decision"], e["reason"]) for e in events] == [("would_deny", "ingestion_burst")]
        metrics = engine.render_metrics(workers=1, unix_ns=0)
        assert 'rls_decisions_total{decision="would_deny",reason="ingestion_burst"} 1' in metrics
        row = engine.tenants()[0]
        assert (row["would_deny_requests"], row["denied_requests"]) == (1, 0)


def test_without_body_parsing_samples_are_estimated(tmp_path: Path) -> None:
    engine = Engine(str(tmp_path / "t"), create=True, body_parsing=False, bytes_per_sample=20)
    limits(engine, {"t": {"ingestion_rate": 1, "ingestion_burst_size": 100}})
    # No body is sent at all; Content-Length 2000 bytes is 100 items.
    req = check_request("t", None, extra={"content-length": "2000"})
    assert decide(engine, req).status.code == 0
    assert decide(engine, req).denied_response.status.code == 429


def test_new_limits_keep_buckets_of_unchanged_tenants(engine: Engine) -> None:
    series = [Series((("__name__", "m"),), samples=(Sample(1.0, i),)) for i in range(40)]
    body = compress(encode_v2(series))
    ct = CONTENT_TYPE_V2
    keep = {"ingestion_rate": 1, "ingestion_burst_size": 100}
    limits(engine, {"a": keep, "b": keep}, generation=1)
    for t in ("a", "b"):
        assert decide(engine, check_request(t, body, content_type=ct)).status.code == 0
    # b is raised; a is unchanged: a keeps its 60 tokens, it is not refilled to 100.
    limits(
        engine, {"a": keep, "b": {"ingestion_rate": 1, "ingestion_burst_size": 1000}}, generation=2
    )
    assert decide(engine, check_request("a", body, content_type=ct)).status.code == 0
    assert decide(engine, check_request("a", body, content_type=ct)).status.code == 8
    assert decide(engine, check_request("b", body, content_type=ct)).status.code == 0
    tokens = {r["tenant"]: r["ingestion_tokens"] for r in engine.tenants(now_ns=T0)}
    assert tokens == {"a": 20, "b": 20}


def rate_limit_request(*descriptors: tuple[str, int | None], hits: int = 0) -> bytes:
    req = rls_pb2.RateLimitRequest(domain="mimir-edge", hits_addend=hits)
    for tenant, addend in descriptors:
        d = req.descriptors.add()
        d.entries.add(key="tenant", value=tenant)
        if addend is not None:
            d.hits_addend.value = addend
    return bytes(req.SerializeToString())


def test_should_rate_limit(engine: Engine) -> None:
    limits(engine, {"t": {"request_rate": 10, "request_burst_size": 5}})
    resp = rls_pb2.RateLimitResponse.FromString(
        engine.should_rate_limit(rate_limit_request(("t", None), ("free", None)), now_ns=T0)
    )
    assert resp.overall_code == rls_pb2.RateLimitResponse.OK
    assert not resp.response_headers_to_add
    assert resp.statuses[0].current_limit.requests_per_unit == 10
    assert resp.statuses[0].limit_remaining == 4
    assert not resp.statuses[1].HasField("current_limit")  # no request limit for "free"
    resp = rls_pb2.RateLimitResponse.FromString(
        engine.should_rate_limit(rate_limit_request(("t", 5)), now_ns=T0)
    )
    assert resp.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    status = resp.statuses[0]
    assert status.code == rls_pb2.RateLimitResponse.OVER_LIMIT
    assert status.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.SECOND
    # 4 tokens left, 5 needed at 10/s: 100 ms.
    assert status.duration_until_reset.ToNanoseconds() == SEC // 10
    # Envoy adds these to its 429: the client waits as after a denied Check (whole seconds).
    assert [(h.key, h.value) for h in resp.response_headers_to_add] == [("retry-after", "1")]
    with pytest.raises(ValueError, match="malformed protobuf"):
        engine.should_rate_limit(b"\x0a\xff")


def test_processes_share_one_bucket(tmp_path: Path) -> None:
    """Four processes on one table: together they get exactly the burst."""
    path = str(tmp_path / "shared")
    Engine(path, create=True)
    body = compress(encode_v2([Series((("__name__", "m"),), samples=(Sample(1.0, 1),))]))
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_count_allowed, args=(path, 300, body, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(q.get(timeout=5) for _ in procs) == 500


def _count_allowed(path: str, n: int, body: bytes, out: Any) -> None:
    engine = Engine(path)
    engine.set_limits(
        {}, {"t": {"ingestion_rate": 0.001, "ingestion_burst_size": 500}}, generation=1
    )
    req = check_request("t", body, content_type=CONTENT_TYPE_V2)
    out.put(
        sum(
            ea.CheckResponse.FromString(engine.check(req, now_ns=T0)).status.code == 0
            for _ in range(n)
        )
    )


def test_partial_body_is_refused_413(engine: Engine) -> None:
    req = check_request("t", compress(b""), extra={"x-envoy-auth-partial-body": "true"})
    r = decide(engine, req)
    assert r.denied_response.status.code == 413
    assert r.denied_response.body.startswith("request body too large:")


def test_metrics_are_valid_exposition(engine: Engine, corpus: list[CorpusFile]) -> None:
    """/metrics parses as Prometheus text and has every family the rollout guide names."""
    from prometheus_client.parser import text_string_to_metric_families

    limits(engine, {"t": {"ingestion_rate": 1, "ingestion_burst_size": 10}})
    decide(engine, check_request("t", corpus[0].body))
    decide(engine, check_request("t", b"\x05junk"))
    text = engine.render_metrics(workers=2, unix_ns=0)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["rls_decisions"].type == "counter"
    assert families["rls_authz_check_duration_seconds"].type == "histogram"
    assert families["rls_body_parse_errors"].type == "counter"
    assert families["rls_limits_stale_seconds"].type == "gauge"
    for name in (
        "rls_tenant_requests",
        "rls_tenant_samples",
        "rls_tenant_bucket_fill_ratio",
        "rls_worker_requests",
    ):
        assert name in families
    count = next(
        s for s in families["rls_authz_check_duration_seconds"].samples if s.name.endswith("_count")
    )
    assert count.value == 2
