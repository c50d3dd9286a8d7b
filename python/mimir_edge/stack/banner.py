"""What ``mimir-edge up`` prints once the stack is ready: where to push, where to look."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mimir_edge.encode import Sample, Series, compress, encode_v1
from mimir_edge.limits import LimitSet

__all__ = ["BannerFacts", "banner", "limits_summary", "write_sample_push"]

#: Series in the sample push written for the curl example.
SAMPLE_SERIES = 100


def write_sample_push(path: Path, *, now_ms: int) -> None:
    """A remote write 1.0 push of ``SAMPLE_SERIES`` series, one sample each, as Prometheus
    sends it (snappy), so the printed curl command works as is."""
    series = [
        Series(
            (
                ("__name__", "demo_requests_total"),
                ("instance", f"10.0.0.{i // 10}:8080"),
                ("job", "curl-example"),
                ("path", f"/api/{i % 10}"),
            ),
            samples=(Sample(float(i), now_ms),),
        )
        for i in range(SAMPLE_SERIES)
    ]
    path.write_bytes(compress(encode_v1(series)))


def limits_summary(limit_set: LimitSet, max_tenants: int = 4) -> str:
    """``team-a 50,000 items/s, team-b 1,000 items/s; any other tenant 10,000 items/s``."""

    def rate(limits: dict[str, object]) -> str:
        value = limits.get("ingestion_rate")
        if isinstance(value, int | float):
            return "no limit" if value == float("inf") else f"{value:,.0f} items/s"
        return "?"

    names = sorted(limit_set.tenants)
    parts = [f"{t} {rate(limit_set.tenants[t])}" for t in names[:max_tenants]]
    if len(names) > max_tenants:
        parts.append(f"{len(names) - max_tenants} more")
    others = f"any other tenant {rate(limit_set.defaults)}"
    return f"{', '.join(parts)}; {others}" if parts else others


@dataclass(frozen=True)
class BannerFacts:
    push_url: str
    sample_push: Path
    example_tenant: str
    limits: str
    overrides_path: Path
    overrides_builtin: bool
    poll_s: float
    run_dir: Path
    envoy_pid: int
    envoy_listen: str
    envoy_admin_url: str
    rls_pid: int
    rls_grpc: str
    rls_http_url: str
    workers: int
    dry_run: bool
    sink_url: str | None  # None: --upstream
    upstream_url: str | None
    ready_s: float
    duration_s: float | None


def banner(f: BannerFacts) -> str:
    if f.overrides_builtin:
        source = (
            f"the built-in example, copied to {f.overrides_path}\n"
            f"  (edit it: it is re-read every {f.poll_s:g} s; or start with --overrides FILE)"
        )
    else:
        source = f"{f.overrides_path} (re-read every {f.poll_s:g} s)"
    if f.sink_url is not None:
        upstream = f"built-in remote-write sink at {f.sink_url} (answers as Mimir's distributor)"
        sink_metrics = (
            f"  sink totals  {f.sink_url}/api/v1/totals   (Prometheus text: {f.sink_url}/metrics)"
        )
    else:
        upstream = f"{f.upstream_url}"
        sink_metrics = ""
    mode = "   DRY RUN: over-limit pushes are let through and counted" if f.dry_run else ""
    stop = (
        f"Stops by itself after {f.duration_s:g} s; Ctrl-C stops it sooner."
        if f.duration_s
        else "Ctrl-C stops every part."
    )
    lines = [
        f"mimir-edge up: the edge is ready ({f.ready_s:.1f} s){mode}",
        "",
        "Push remote write here, as to Mimir (the tenant is the X-Scope-OrgID header):",
        f"  {f.push_url}",
        "",
        "  with curl (a sample push of 100 samples):",
        f"    curl -i --data-binary @{f.sample_push} \\",
        "      -H 'Content-Type: application/x-protobuf' -H 'Content-Encoding: snappy' \\",
        "      -H 'X-Prometheus-Remote-Write-Version: 0.1.0' "
        f"-H 'X-Scope-OrgID: {f.example_tenant}' \\",
        f"      {f.push_url}",
        "",
        "  from Prometheus (prometheus.yml):",
        "    remote_write:",
        f"      - url: {f.push_url}",
        "        headers:",
        f"          X-Scope-OrgID: {f.example_tenant}",
        "        queue_config:",
        "          retry_on_http_429: true   # retry pushes the edge refuses instead of dropping",
        "",
        f"Limits: {f.limits}",
        f"  from {source}",
        "",
        f"Parts (their logs are in {f.run_dir}):",
        f"  envoy     pid {f.envoy_pid:<8} listen {f.envoy_listen}   admin {f.envoy_admin_url}",
        f"  rls       pid {f.rls_pid:<8} grpc {f.rls_grpc}   {f.workers} worker(s)   "
        f"admin {f.rls_http_url}",
        f"  upstream  {upstream}",
        "",
        "Metrics:",
        f"  RLS          {f.rls_http_url}/metrics   (per tenant: {f.rls_http_url}/api/v1/tenants)",
        f"  Envoy        {f.envoy_admin_url}/stats/prometheus",
    ]
    if sink_metrics:
        lines.append(sink_metrics)
    lines += ["", stop, ""]
    return "\n".join(lines)
