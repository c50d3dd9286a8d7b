"""``mimir-edge demo``: the core on built-in data, no files or servers needed.

It encodes remote-write pushes like a real sender (1.0 with exemplars and metadata, 2.0 with
native histograms and metadata), counts them with the core as the edge charges them, then
replays a tenant pushing at twice its ingestion limit through the core's token bucket on a
simulated clock, and shows what a client would get back.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mimir_edge import CONTENT_TYPE_V2, TokenBucket, scan_remote_write
from mimir_edge.encode import (
    Exemplar,
    Histogram,
    Metadata,
    MetricMetadata,
    MetricType,
    Sample,
    Series,
    compress,
    encode_v1,
    encode_v2,
)

SEC = 1_000_000_000


def sample_series(n: int, t_ms: int) -> list[Series]:
    """`n` series of a typical HTTP service: a counter with exemplars and a native histogram."""
    out: list[Series] = []
    for i in range(n):
        labels = (
            ("__name__", "http_requests_total"),
            ("instance", f"10.0.{i // 250}.{i % 250}:9090"),
            ("job", "checkout"),
            ("route", f"/api/v1/items/{i % 17}"),
            ("status", "200" if i % 10 else "500"),
        )
        exemplars = (Exemplar((("trace_id", f"{i:032x}"),), 1.0, t_ms),) if i % 4 == 0 else ()
        out.append(
            Series(
                labels,
                samples=(Sample(float(i), t_ms),),
                exemplars=exemplars,
                metadata=Metadata(MetricType.COUNTER, "Requests served.", ""),
            )
        )
        if i % 5 == 0:
            out.append(
                Series(
                    (("__name__", "http_request_duration_seconds"), *labels[1:]),
                    histograms=(
                        Histogram(
                            count=12,
                            sum=3.5,
                            schema=3,
                            zero_count=1,
                            positive_spans=((0, 4),),
                            positive_deltas=(2, 1, -1, 3),
                            timestamp_ms=t_ms,
                        ),
                    ),
                    metadata=Metadata(MetricType.HISTOGRAM, "Request latency.", "seconds"),
                )
            )
    return out


def run(echo: Callable[[str], None] = print) -> int:
    series = sample_series(500, 1_700_000_000_000)
    v1 = compress(
        encode_v1(
            series,
            [MetricMetadata(MetricType.COUNTER, "http_requests_total", "Requests served.")],
        )
    )
    v2 = compress(encode_v2(series))
    echo("1. Counting pushes as Mimir charges them (scan_remote_write)")
    echo(
        f"   {'push':<22}{'bytes':>8}{'series':>8}{'samples':>9}{'hist':>6}"
        f"{'exempl':>8}{'meta':>6}{'ingested':>10}"
    )
    for name, body, ctype in (
        ("remote write 1.0", v1, None),
        ("remote write 2.0", v2, CONTENT_TYPE_V2),
    ):
        s = scan_remote_write(body, content_type=ctype)
        echo(
            f"   {name:<22}{len(body):>8}{s.series:>8}{s.samples:>9}{s.histograms:>6}"
            f"{s.exemplars:>8}{s.metadata:>6}{s.ingested:>10}"
        )

    per_push = scan_remote_write(v1).ingested
    rate, burst = 10_000.0, 20_000
    pushes_per_sec = max(1, math.ceil(2 * rate / per_push))
    echo("")
    echo(f"2. A tenant at 2x its limit: ingestion_rate={rate:g}/s, ingestion_burst_size={burst},")
    echo(f"   pushing {per_push} items {pushes_per_sec} times a second for 10 s (simulated clock)")
    bucket = TokenBucket(rate, burst, now_ns=0)
    allowed = denied = 0
    retry_after: list[int] = []
    step = SEC // pushes_per_sec
    for k in range(10 * pushes_per_sec):
        now = k * step
        if bucket.allow(per_push, now_ns=now):
            allowed += per_push
        else:
            denied += per_push
            wait = bucket.wait_ns(per_push, now_ns=now)
            retry_after.append(math.ceil((wait or 0) / SEC))
    budget = rate * 10 + burst
    echo(
        f"   allowed {allowed} items (budget rate x 10 s + burst = {budget:g}), "
        f"denied {denied} with HTTP 429"
    )
    if retry_after:
        echo(f"   Retry-After on denies: {min(retry_after)}-{max(retry_after)} s")
    return 0 if allowed <= budget else 1
