"""Synthetic series that look like what a Kubernetes Prometheus scrapes.

Three kinds of target take turns, each with the label sets its real exporter produces:
node_exporter (``node_cpu_seconds_total{cpu,mode}``, filesystems, network, disks, memory,
load), kube-state-metrics (pod phase, container restarts and resource requests, with
``namespace``/``pod``/``uid``/``container``) and an application pod (``http_requests_total``,
request-duration histograms, process and Go runtime metrics). Every series also carries
``job`` and ``instance``; labels are sorted by name, so ``__name__`` comes first, as Prometheus
sends them. Generation is deterministic: the same ``count`` always gives the same series.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import count as counter
from itertools import islice

from mimir_edge.encode import Labels

__all__ = ["Kind", "SeriesSpec", "realistic_series"]


class Kind(Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    #: A classic histogram's ``_bucket``/``_sum``/``_count`` series (float samples).
    HISTOGRAM_PART = "histogram_part"
    #: A native histogram series (sent as a histogram, not a sample).
    NATIVE_HISTOGRAM = "native_histogram"


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    labels: Labels
    kind: Kind
    value: float
    help: str
    unit: str = ""

    @property
    def takes_exemplars(self) -> bool:
        """Series Prometheus attaches exemplars to: request counters and latency buckets."""
        name = self.labels[0][1]
        return self.kind is Kind.NATIVE_HISTOGRAM or name in (
            "http_requests_total",
            "http_request_duration_seconds_bucket",
        )


_NAMESPACES = ("checkout", "payments", "search", "catalog", "monitoring", "kube-system")
_CPU_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
_FILESYSTEMS = (
    ("/dev/nvme0n1p1", "ext4", "/"),
    ("/dev/nvme1n1", "xfs", "/var/lib/containerd"),
    ("tmpfs", "tmpfs", "/run"),
)
_HANDLERS = (("/api/v1/orders", "GET"), ("/api/v1/orders", "POST"), ("/healthz", "GET"))
_BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes


def _spec(
    name: str, kind: Kind, value: float, help: str, unit: str = "", **labels: str
) -> SeriesSpec:
    pairs = sorted([("__name__", name), *labels.items()])
    return SeriesSpec(tuple(pairs), kind, value, help, unit)


def _node(i: int, rng: random.Random) -> Iterator[SeriesSpec]:
    base = {"job": "node-exporter", "instance": f"10.0.{i // 250}.{i % 250 + 1}:9100"}
    uptime = rng.uniform(1e5, 1e7)
    for cpu in range(4):
        for mode in _CPU_MODES:
            yield _spec(
                "node_cpu_seconds_total",
                Kind.COUNTER,
                round(uptime * rng.random(), 2),
                "Seconds the CPUs spent in each mode.",
                "seconds",
                cpu=str(cpu),
                mode=mode,
                **base,
            )
    for field in ("MemAvailable", "MemTotal", "Buffers", "Cached"):
        yield _spec(
            f"node_memory_{field}_bytes",
            Kind.GAUGE,
            float(rng.randrange(1 << 28, 1 << 36)),
            f"Memory information field {field}_bytes.",
            "bytes",
            **base,
        )
    for window in ("1", "5", "15"):
        yield _spec(
            f"node_load{window}",
            Kind.GAUGE,
            round(rng.uniform(0, 8), 2),
            f"{window}m load average.",
            **base,
        )
    for device, fstype, mountpoint in _FILESYSTEMS:
        for metric, text in (("avail", "available to non-root users"), ("size", "size")):
            yield _spec(
                f"node_filesystem_{metric}_bytes",
                Kind.GAUGE,
                float(rng.randrange(1 << 30, 1 << 40)),
                f"Filesystem {text} in bytes.",
                "bytes",
                device=device,
                fstype=fstype,
                mountpoint=mountpoint,
                **base,
            )
    for device in ("eth0", "lo"):
        for direction in ("receive", "transmit"):
            yield _spec(
                f"node_network_{direction}_bytes_total",
                Kind.COUNTER,
                float(rng.randrange(1 << 40)),
                f"Network device statistic {direction}_bytes.",
                "bytes",
                device=device,
                **base,
            )
    for device in ("nvme0n1", "nvme1n1"):
        for op in ("read", "written"):
            yield _spec(
                f"node_disk_{op}_bytes_total",
                Kind.COUNTER,
                float(rng.randrange(1 << 40)),
                f"The total number of bytes {op} successfully.",
                "bytes",
                device=device,
                **base,
            )


def _pod_name(deployment: str, rng: random.Random) -> str:
    rs = "".join(rng.choices(_ALNUM, k=10))
    return f"{deployment}-{rs}-{''.join(rng.choices(_ALNUM, k=5))}"


def _uid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _kube_state(i: int, rng: random.Random) -> Iterator[SeriesSpec]:
    namespace = _NAMESPACES[i % len(_NAMESPACES)]
    deployment = f"{namespace}-api" if i % 2 else f"{namespace}-worker"
    pod, uid = _pod_name(deployment, rng), _uid(rng)
    base = {"job": "kube-state-metrics", "instance": "10.0.255.10:8080"}
    for phase in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
        yield _spec(
            "kube_pod_status_phase",
            Kind.GAUGE,
            1.0 if phase == "Running" else 0.0,
            "The pods current phase.",
            namespace=namespace,
            phase=phase,
            pod=pod,
            uid=uid,
            **base,
        )
    yield _spec(
        "kube_pod_container_status_restarts_total",
        Kind.COUNTER,
        float(rng.randrange(4)),
        "The number of container restarts per container.",
        container=deployment,
        namespace=namespace,
        pod=pod,
        uid=uid,
        **base,
    )
    node = f"ip-10-0-{i % 250}-{rng.randrange(1, 250)}.ec2.internal"
    for resource, unit, value in (("cpu", "core", 0.25), ("memory", "byte", 268435456.0)):
        yield _spec(
            "kube_pod_container_resource_requests",
            Kind.GAUGE,
            value,
            "The number of requested request resource by a container.",
            container=deployment,
            namespace=namespace,
            node=node,
            pod=pod,
            resource=resource,
            uid=uid,
            unit=unit,
            **base,
        )


def _app(i: int, rng: random.Random, native_histograms: bool) -> Iterator[SeriesSpec]:
    namespace = _NAMESPACES[i % 4]  # application namespaces only
    pod = _pod_name(f"{namespace}-api", rng)
    base = {
        "job": f"{namespace}/{namespace}-api",
        "instance": f"10.1.{i // 250}.{i % 250 + 1}:8080",
        "namespace": namespace,
        "pod": pod,
    }
    for handler, method in _HANDLERS:
        for code in ("200", "500"):
            yield _spec(
                "http_requests_total",
                Kind.COUNTER,
                float(rng.randrange(1, 10**6)),
                "Total HTTP requests.",
                code=code,
                handler=handler,
                method=method,
                **base,
            )
        help = "HTTP request latency."
        if native_histograms:
            name, kind = "http_request_duration_seconds", Kind.NATIVE_HISTOGRAM
            yield _spec(name, kind, 0.0, help, "seconds", handler=handler, method=method, **base)
            continue
        total = rng.randrange(10**3, 10**6)
        for le in _BUCKETS:
            cumulative = total if le == "+Inf" else int(total * min(1.0, float(le) * 4))
            yield _spec(
                "http_request_duration_seconds_bucket",
                Kind.HISTOGRAM_PART,
                float(cumulative),
                help,
                "seconds",
                handler=handler,
                le=le,
                method=method,
                **base,
            )
        for suffix, value in (("sum", total * 0.083), ("count", float(total))):
            yield _spec(
                f"http_request_duration_seconds_{suffix}",
                Kind.HISTOGRAM_PART,
                round(value, 3),
                help,
                "seconds",
                handler=handler,
                method=method,
                **base,
            )
    yield _spec(
        "process_cpu_seconds_total",
        Kind.COUNTER,
        round(rng.uniform(10, 1e5), 2),
        "Total user and system CPU time spent in seconds.",
        "seconds",
        **base,
    )
    yield _spec(
        "process_resident_memory_bytes",
        Kind.GAUGE,
        float(rng.randrange(1 << 25, 1 << 31)),
        "Resident memory size in bytes.",
        "bytes",
        **base,
    )
    yield _spec(
        "go_goroutines",
        Kind.GAUGE,
        float(rng.randrange(8, 400)),
        "Number of goroutines that currently exist.",
        **base,
    )


def _all(native_histograms: bool) -> Iterator[SeriesSpec]:
    rng = random.Random(20240501)  # fixed: the same series every run
    for i in counter():
        yield from _node(i, rng)
        for j in range(4):  # a node runs several pods
            yield from _kube_state(4 * i + j, rng)
            yield from _app(4 * i + j, rng, native_histograms)


def realistic_series(count: int, *, native_histograms: bool = False) -> list[SeriesSpec]:
    """``count`` distinct series. With ``native_histograms`` the request-latency histograms are
    native histograms (one series per handler) instead of classic ``_bucket`` series."""
    return list(islice(_all(native_histograms), count))
