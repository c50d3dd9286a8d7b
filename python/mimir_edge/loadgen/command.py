"""``mimir-edge load``: flags, progress line, report and exit codes.

Every flag is accepted Go-style too (``-url=...``, ``-tenant=...``, ``-concurrency=50``,
``-duration=5m``), so the rollout guide's ``go run scripts/load-remote-write.go`` line works
with ``mimir-edge load`` in its place. Exit codes: 0 the run happened; 1 no connection could be
made, or every request failed to connect (the reason is printed); 2 bad input (a flag, the
URL, the corpus).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from mimir_edge.loadgen.bodies import CorpusError
from mimir_edge.loadgen.config import (
    DEFAULT_URL,
    MAX_SERIES,
    ConfigError,
    LoadConfig,
    synthetic_tenants,
)
from mimir_edge.loadgen.durations import parse_duration
from mimir_edge.loadgen.report import LoadReport, format_table
from mimir_edge.loadgen.runner import Progress, TargetUnreachable, run

__all__ = ["add_parser", "main"]

_DEFAULTS = LoadConfig()
_NON_TTY_PROGRESS_S = 10.0


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bool(text: str) -> bool:
    """Go's ``-flag=true|false`` forms."""
    lowered = text.lower()
    if lowered in ("1", "t", "true", "yes"):
        return True
    if lowered in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "load",
        help="send remote-write load (synthetic or a captured corpus) and report",
        description="Send remote-write pushes to URL and report requests, status codes, "
        "samples sent and accepted, throughput and latency. Every flag also works Go-style "
        "with one dash (-url=..., -concurrency=50, -duration=5m). Exits 0 after a run, 1 if "
        "no request could connect, 2 on bad input.",
    )
    d = _DEFAULTS

    def opt(name: str, **kw: Any) -> None:
        p.add_argument(f"--{name}", f"-{name}", **kw)

    opt("url", default=d.url, help=f"remote-write endpoint (default: {DEFAULT_URL})")
    opt(
        "tenant",
        action="append",
        metavar="NAME",
        default=None,
        help="tenant (X-Scope-OrgID); repeat for several (default: load-tenant-1)",
    )
    opt(
        "tenants",
        type=_int,
        metavar="N",
        help="N synthetic tenants: load-tenant-1 .. load-tenant-N",
    )
    opt(
        "concurrency",
        metavar="N",
        type=_int,
        default=d.concurrency,
        help="workers, each with one keep-alive connection (default: %(default)s)",
    )
    opt(
        "duration",
        metavar="DURATION",
        type=_duration,
        default=d.duration_s,
        help="how long to run: 30s, 5m, 1h, 500ms or seconds (default: 10s)",
    )
    opt("requests", type=_int, metavar="N", help="stop after this many requests (or at --duration)")
    opt(
        "rate",
        metavar="REQ_PER_S",
        type=_number,
        help="open loop: requests per second over all workers; a send "
        "due while every worker is busy is counted as skipped (default: closed loop, "
        "as fast as answers come)",
    )
    opt(
        "series",
        type=_int,
        metavar="N",
        help=f"active series per tenant (default: {d.series:,}, or enough for every worker to "
        "fill whole requests)",
    )
    opt(
        "samples-per-request",
        dest="samples_per_request",
        metavar="N",
        type=_int,
        help=f"most samples in one request (default: {d.samples_per_request}, as Prometheus "
        "2.42's max_samples_per_send)",
    )
    opt(
        "protocol",
        type=_int,
        choices=(1, 2),
        default=d.protocol,
        help="remote write 1.0 or 2.0 (default: %(default)s)",
    )
    for name, text in (
        ("exemplars", "send a trace exemplar with request counters and latency histograms"),
        ("histograms", "send request latencies as native histograms"),
        ("json", "print one JSON document instead of the table"),
        ("quiet", "no progress on stderr"),
    ):
        opt(name, type=_bool, nargs="?", const=True, default=False, metavar="true|false", help=text)
    opt(
        "corpus",
        metavar="DIR",
        type=Path,
        help="replay the body files of this directory (its manifest.json "
        "lists them, as in a captured Prometheus corpus) instead of synthetic bodies",
    )
    opt(
        "timeout",
        type=_duration,
        metavar="DURATION",
        default=d.timeout_s,
        help="per-request timeout (default: 10s)",
    )
    p.set_defaults(func=main)
    return p


def _config(args: argparse.Namespace) -> LoadConfig:
    if args.tenant and args.tenants:
        raise ConfigError("use --tenant (names) or --tenants (a count), not both")
    if args.tenants is not None and args.tenants < 1:
        raise ConfigError(f"--tenants must be at least 1, not {args.tenants}")
    tenants = tuple(args.tenant) if args.tenant else synthetic_tenants(args.tenants or 1)
    if args.corpus is not None:
        given = [f for f in ("series", "samples_per_request") if getattr(args, f) is not None]
        given += [f for f in ("exemplars", "histograms") if getattr(args, f)]
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise ConfigError(f"--corpus replays files as they are; {flags} cannot apply")
        if not args.corpus.is_dir():
            raise ConfigError(f"corpus {args.corpus}: not a directory")
    d = _DEFAULTS
    per_request = args.samples_per_request
    if per_request is None:
        per_request = d.samples_per_request
    # By default enough series that every worker fills whole requests (each series belongs
    # to one worker); capped so that a large --concurrency cannot build a huge pool.
    full = min(args.concurrency * per_request, MAX_SERIES // 4)
    series = args.series if args.series is not None else max(d.series, full, args.concurrency)
    return LoadConfig(
        url=args.url,
        tenants=tenants,
        concurrency=args.concurrency,
        duration_s=args.duration,
        requests=args.requests,
        rate=args.rate,
        series=series,
        samples_per_request=per_request,
        protocol=args.protocol,
        exemplars=args.exemplars,
        histograms=args.histograms,
        corpus=args.corpus,
        timeout_s=args.timeout,
    )


class _ProgressLine:
    """``\\r``-redrawn on a terminal; an occasional plain line otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = time.monotonic()  # off a terminal, the first line comes after a while
        self.drawn = False

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < _NON_TTY_PROGRESS_S:
            return
        self.last = now
        codes = "  ".join(f"{k}:{v}" for k, v in sorted(p.status.items()))
        rate = p.requests / p.elapsed_s if p.elapsed_s > 0 else 0.0
        line = (
            f"{p.elapsed_s:6.1f}s/{p.duration_s:g}s  {p.requests:,} req ({rate:,.0f}/s)  "
            f"{codes}  errors:{p.connection_errors}"
            + (f"  skipped:{p.skipped}" if p.skipped else "")
        )
        if self.tty:
            self.out.write("\r\x1b[K" + line)
            self.drawn = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self.drawn:
            self.out.write("\r\x1b[K")
            self.out.flush()


@contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C (the report is still printed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        config = _config(args)
    except ConfigError as e:
        print(f"mimir-edge load: {e}", file=err)
        return 2
    share = config.series // config.concurrency
    if config.corpus is None and share < config.samples_per_request and not args.quiet:
        print(
            f"note: {config.series:,} series over {config.concurrency} workers: requests carry "
            f"at most {share:,} samples (each series belongs to one worker, so that its "
            "timestamps arrive in order); raise --series for fuller requests",
            file=err,
        )
    progress = None if args.quiet else _ProgressLine(err)
    stop = threading.Event()
    try:
        with _stop_on_sigterm(stop):
            report = run(config, progress=progress, stop=stop)
    except (ConfigError, CorpusError) as e:
        print(f"mimir-edge load: {e}", file=err)
        return 2
    except TargetUnreachable as e:
        print(f"mimir-edge load: {e}", file=err)
        return 1
    except KeyboardInterrupt:  # while bodies were being built, before any send
        print("mimir-edge load: interrupted before the run started", file=err)
        return 130
    finally:
        if progress is not None:
            progress.finish()
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_table(report))
    return _exit_code(report)


def _exit_code(report: LoadReport) -> int:
    if report.requests and not report.answered:
        reasons = ", ".join(sorted(report.errors, key=lambda r: -report.errors[r]))
        print(
            f"mimir-edge load: every request failed to connect to {report.config.url}: {reasons}",
            file=sys.stderr,
        )
        return 1
    return 0
