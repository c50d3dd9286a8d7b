"""``mimir-edge up``: plan, start, watch and stop the local stack.

Order: every argument is checked and every port probed before anything starts (bad input
exits 2 and leaves nothing behind). Then the sink starts serving, the RLS and Envoy start side
by side, and ``up`` waits, within ``--startup-timeout``, for the RLS's ``/readyz`` and Envoy's
admin ``/ready``. Once ready it prints the banner and refreshes the table every second. A
part that exits on its own is reported (which, how, the end of its log) and the others are
stopped: ``up`` exits 1. Ctrl-C, SIGTERM or the end of ``--duration`` stop the demo traffic
first, then Envoy and the RLS (SIGTERM, SIGKILL after ``--stop-timeout``); ``up`` exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from mimir_edge.envoy_config import PUSH_PATH, EnvoyConfig, dump
from mimir_edge.limits import LimitsError, LimitSet, parse_runtime_config
from mimir_edge.stack import DEFAULTS, default_overrides_text
from mimir_edge.stack.banner import BannerFacts, banner, limits_summary, write_sample_push
from mimir_edge.stack.children import Child, stop_all
from mimir_edge.stack.envoy_binary import EnvoyNotFound, find_envoy
from mimir_edge.stack.observe import AccessLogCounter, fetch_json
from mimir_edge.stack.ports import Address, PortError, check_free, parse_address, pick_free_port
from mimir_edge.stack.sink import RemoteWriteSink
from mimir_edge.stack.table import LiveTable, build_rows, render

__all__ = ["run"]

#: How often the RLS re-reads the overrides file (edits apply within this).
OVERRIDES_POLL_S = 2.0
#: Demo traffic: (tenant, pushes per second), each push ``mimir-edge load``'s default 500
#: samples. With the built-in example team-a (50,000 items/s) stays well under its limit;
#: team-b (1,000 items/s, 5 pushes/s) goes over both of its limits.
DEMO_TRAFFIC = (("team-a", 10), ("team-b", 6))
#: Demo traffic without --duration runs this long (then is reported as finished).
DEMO_DEFAULT_S = 3600.0
REFRESH_S = 1.0
#: The envoy access log is flushed this often (Envoy's default is 10 s: too slow for a table).
ENVOY_FLUSH_MS = 500


class UsageError(Exception):
    """Bad arguments: exit 2."""


@dataclass(frozen=True)
class Upstream:
    url: str
    host: str
    port: int
    path_rewrite: str | None


@dataclass(frozen=True)
class Plan:
    """Everything decided before anything starts."""

    listen: Address
    envoy_admin: Address
    rls_grpc: Address
    rls_http: Address
    sink_listen: Address | None  # None: --upstream
    upstream: Upstream | None
    overrides: Path | None  # None: the built-in example
    limit_set: LimitSet
    envoy: str
    log_dir: Path | None
    workers: int
    dry_run: bool
    demo: bool
    duration_s: float | None
    table_interval_s: float
    startup_timeout_s: float
    stop_timeout_s: float


def run(args: argparse.Namespace) -> int:
    try:
        plan = make_plan(args)
    except (UsageError, EnvoyNotFound) as e:
        _error(str(e))
        return 2
    return Stack(plan).run()


def _error(text: str) -> None:
    print(f"mimir-edge up: error: {text}", file=sys.stderr, flush=True)


def make_plan(args: argparse.Namespace) -> Plan:
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    for name in ("duration", "table_interval", "startup_timeout", "stop_timeout"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.upstream and args.sink_listen:
        raise UsageError(
            "--sink-listen is the built-in sink's address; it has none with --upstream"
        )

    def address(name: str) -> Address:
        given = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        try:
            if given:
                return parse_address(given)
            default = parse_address(DEFAULTS[name])
        except ValueError as e:
            raise UsageError(f"{flag}: {e}") from None
        return Address(default.host, 0) if args.ephemeral_ports else default

    overrides = Path(args.overrides).resolve() if args.overrides else None
    return Plan(
        listen=address("listen"),
        envoy_admin=address("envoy_admin"),
        rls_grpc=address("rls_grpc"),
        rls_http=address("rls_http"),
        sink_listen=None if args.upstream else address("sink_listen"),
        upstream=parse_upstream(args.upstream) if args.upstream else None,
        overrides=overrides,
        limit_set=load_limits(overrides),
        envoy=find_envoy(args.envoy),
        log_dir=Path(args.log_dir) if args.log_dir else None,
        workers=args.workers,
        dry_run=args.dry_run,
        demo=args.demo,
        duration_s=args.duration,
        table_interval_s=args.table_interval,
        startup_timeout_s=args.startup_timeout,
        stop_timeout_s=args.stop_timeout,
    )


def parse_upstream(url: str) -> Upstream:
    """``http://host[:port][/path]``; a path other than Mimir's push path replaces it."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise UsageError(
            f"--upstream {url!r}: expected http://HOST[:PORT][/PATH] (Envoy sends plain "
            "HTTP/1.1 upstream here)"
        )
    if u.query or u.fragment:
        raise UsageError(f"--upstream {url!r}: a query string or fragment is not supported")
    try:
        port = u.port or 80
    except ValueError as e:
        raise UsageError(f"--upstream {url!r}: {e}") from None
    path = u.path if u.path not in ("", "/", PUSH_PATH) else None
    return Upstream(url=url, host=u.hostname, port=port, path_rewrite=path)


def load_limits(path: Path | None) -> LimitSet:
    """The limit set, read as the RLS will read it, so a bad file stops ``up`` before it
    starts anything (with the file's line)."""
    if path is None:
        return parse_runtime_config(default_overrides_text())
    from mimir_edge.rls.settings import Settings
    from mimir_edge.rls.supervisor import load_overrides

    try:
        return load_overrides(Settings(overrides=str(path)))
    except LimitsError as e:
        raise UsageError(f"--overrides {path}: {e}") from None
    except OSError as e:
        raise UsageError(f"--overrides {path}: {e.strerror or e}") from None


class Stack:
    """One run of the stack (see the module docstring)."""

    #: Set when they are started (:meth:`_start_core`).
    rls: Child
    envoy: Child

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.stop = threading.Event()
        self.signals = 0
        self.sink: RemoteWriteSink | None = None
        self.rls_grpc = plan.rls_grpc
        self.rls_http = plan.rls_http
        self.children: list[Child] = []
        self.loaders: list[Child] = []
        self.envoy_admin_url = ""
        self.envoy_listen = plan.listen
        self.rls_tenants: list[dict[str, Any]] | None = None
        self.tty = sys.stdout.isatty()
        self.table = LiveTable(sys.stdout, tty=self.tty, interval_s=plan.table_interval_s)
        self.run_dir = Path()
        self.access_log: AccessLogCounter | None = None
        self.ready_at = 0.0

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._preflight()
            self.run_dir = self._make_run_dir()
        except (PortError, UsageError) as e:
            if self.sink is not None:
                self.sink.stop()
            _error(str(e))
            return 2
        previous = {
            s: signal.signal(s, self._on_signal)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            return self._run()
        finally:
            stop_all(self.children, 0.0)  # normally all stopped already; never leave one
            if self.sink is not None:
                self.sink.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:  # a second Ctrl-C: no more waiting
            for c in self.children:
                c.kill_group()
        self.stop.set()

    def _preflight(self) -> None:
        """Every fixed port free and distinct; the sink bound (it takes its port now)."""
        p = self.plan
        named = [
            (p.listen, "--listen, where clients push"),
            (p.envoy_admin, "--envoy-admin, Envoy's admin"),
            (p.rls_grpc, "--rls-grpc, the RLS's gRPC"),
            (p.rls_http, "--rls-http, the RLS's metrics and admin"),
        ]
        if p.sink_listen is not None:
            named.append((p.sink_listen, "--sink-listen, the built-in sink"))
        seen: dict[int, str] = {}
        for addr, what in named:
            if addr.port and addr.port in seen:
                raise PortError(f"port {addr.port} is given twice ({seen[addr.port]}; {what})")
            seen[addr.port] = what
        for addr, what in named[:4]:
            check_free(addr, what)
        if p.sink_listen is not None:
            check_free(p.sink_listen, named[4][1])
            try:
                self.sink = RemoteWriteSink(p.sink_listen.host, p.sink_listen.port)
            except OSError as e:
                raise PortError(
                    f"cannot listen on {p.sink_listen} (--sink-listen): {e.strerror}"
                ) from None
        # The RLS's workers all bind one port, so it needs a real one, not 0.
        if self.rls_grpc.port == 0:
            self.rls_grpc = Address(self.rls_grpc.host, pick_free_port(self.rls_grpc.host))
        if self.rls_http.port == 0:
            self.rls_http = Address(self.rls_http.host, pick_free_port(self.rls_http.host))

    def _make_run_dir(self) -> Path:
        if self.plan.log_dir is None:
            return Path(tempfile.mkdtemp(prefix="mimir-edge-up-"))
        try:
            self.plan.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--log-dir {self.plan.log_dir}: {e.strerror}") from None
        return self.plan.log_dir.resolve()

    def _run(self) -> int:
        started = time.monotonic()
        if self.sink is not None:
            self.sink.start()
        self._start_core()
        problem = self._wait_ready(started + self.plan.startup_timeout_s)
        if problem is not None:
            if not self.stop.is_set():
                _error(problem)
            self._stop_children(final_table=False)
            return 0 if self.stop.is_set() else 1
        self.ready_at = time.monotonic()
        print(self._banner(self.ready_at - started), flush=True)
        upstream = self.plan.upstream
        if upstream is not None and not _reachable(upstream.host, upstream.port):
            self.table.message(
                f"warning: nothing answers at {upstream.url} yet; allowed pushes get 503 "
                "from Envoy until it does"
            )
        if self.plan.demo:
            self._start_demo()
        failed = self._watch()
        if failed is not None:
            self.table.clear()
            _error(f"{failed.report()}\nstopping the other parts")
        self._stop_children(final_table=True)
        return 1 if failed is not None else 0

    # -- starting ------------------------------------------------------------------------------

    def _start_core(self) -> None:
        p, d = self.plan, self.run_dir
        if p.overrides is None:
            overrides = d / "overrides.yaml"
            overrides.write_text(default_overrides_text())
        else:
            overrides = p.overrides
        rls_args = [
            "--grpc-listen", str(self.rls_grpc),
            "--http-listen", str(self.rls_http),
            "--workers", str(p.workers),
            "--overrides", str(overrides),
            "--overrides-poll-seconds", str(OVERRIDES_POLL_S),
            # Envoy's ratelimit filter charges each push's request token; the Check must not
            # charge it again.
            "--request-rate-via", "ratelimit",
            "--drain-delay-seconds", "0",
            "--grace-period-seconds", str(max(1.0, p.stop_timeout_s - 1)),
        ]  # fmt: skip
        if p.dry_run:
            rls_args.append("--dry-run")
        self.rls = Child(
            "rls", [sys.executable, "-m", "mimir_edge.cli", "rls", *rls_args], d / "rls.log"
        )

        if p.upstream is not None:
            up_host, up_port, rewrite = p.upstream.host, p.upstream.port, p.upstream.path_rewrite
        else:
            assert self.sink is not None
            assert p.sink_listen is not None
            up_host, up_port, rewrite = p.sink_listen.connect_host, self.sink.port, None
        cfg = EnvoyConfig(
            upstream_host=up_host,
            upstream_port=up_port,
            rls_host=self.rls_grpc.connect_host,
            rls_port=self.rls_grpc.port,
            listen_address=p.listen.host,
            listen_port=p.listen.port,
            admin_address=p.envoy_admin.host,
            admin_port=p.envoy_admin.port,
            push_path_rewrite=rewrite,
            rate_limit_enabled=True,
        )
        (d / "envoy.json").write_text(dump(cfg))
        admin_path = d / "envoy-admin-address"
        admin_path.unlink(missing_ok=True)
        envoy_args = [
            p.envoy,
            "-c", str(d / "envoy.json"),
            "--concurrency", str(min(2, os.cpu_count() or 1)),
            "--log-level", "warn",
            "--disable-hot-restart",  # no shared memory: any number of Envoys side by side
            "--admin-address-path", str(admin_path),
            "--file-flush-interval-msec", str(ENVOY_FLUSH_MS),
        ]  # fmt: skip
        self.envoy = Child("envoy", envoy_args, d / "envoy.log", stdout_path=d / "access.log")
        self.access_log = AccessLogCounter(d / "access.log")
        for c in (self.rls, self.envoy):
            c.start()
            self.children.append(c)

    def _wait_ready(self, deadline: float) -> str | None:
        """None when every part is ready; else what went wrong."""
        checks = {"rls": self._rls_ready, "envoy": self._envoy_ready}
        waiting_for = {
            "rls": f"{self.rls_http.url}/readyz",
            "envoy": "its admin /ready",
        }
        if self.sink is not None:
            checks["sink"] = self._sink_ready
            waiting_for["sink"] = f"http://{self._sink_address()}/ready"
        while checks:
            for c in (self.rls, self.envoy):
                if c.poll() is not None:
                    return f"{c.report()}\n(it stopped before it was ready)"
            for name, ready in list(checks.items()):
                if ready():
                    del checks[name]
            if not checks:
                break
            if self.stop.wait(0.1):
                return "interrupted before the stack was ready"
            if time.monotonic() > deadline:
                parts = []
                for name in checks:
                    child = {"rls": self.rls, "envoy": self.envoy}.get(name)
                    log = f"\n{child.report()}" if child is not None else ""
                    parts.append(f"{name} did not become ready ({waiting_for[name]}){log}")
                return (
                    f"not ready within --startup-timeout {self.plan.startup_timeout_s:g} s: "
                    + "\n".join(parts)
                )
        return None

    def _rls_ready(self) -> bool:
        return _get_status(f"{self.rls_http.url}/readyz") == 200

    def _sink_address(self) -> str:
        assert self.sink is not None
        assert self.plan.sink_listen is not None
        return str(Address(self.plan.sink_listen.connect_host, self.sink.port))

    def _sink_ready(self) -> bool:
        return _get_status(f"http://{self._sink_address()}/ready") == 200

    def _envoy_ready(self) -> bool:
        if not self.envoy_admin_url:
            path = self.run_dir / "envoy-admin-address"
            text = path.read_text().strip() if path.is_file() else ""
            _, sep, port = text.rpartition(":")
            if not (sep and port.isdigit()):
                return False
            self.envoy_admin_url = f"http://{text}"
        try:
            with urllib.request.urlopen(self.envoy_admin_url + "/ready", timeout=1) as r:
                if r.read().strip() != b"LIVE":
                    return False
        except (OSError, urllib.error.URLError):
            return False
        if self.plan.listen.port == 0:
            listeners = fetch_json(self.envoy_admin_url + "/listeners?format=json") or {}
            for status in listeners.get("listener_statuses", []):
                if status.get("name") == "ingress":
                    port = status["local_address"]["socket_address"]["port_value"]
                    self.envoy_listen = Address(self.plan.listen.host, int(port))
            if self.envoy_listen.port == 0:
                return False
        return True

    def _push_url(self) -> str:
        return self.envoy_listen.url + PUSH_PATH

    def _banner(self, ready_s: float) -> str:
        p = self.plan
        sample = self.run_dir / "sample-push.snappy"
        write_sample_push(sample, now_ms=int(time.time() * 1000))
        tenants = sorted(p.limit_set.tenants)
        facts = BannerFacts(
            push_url=self._push_url(),
            sample_push=sample,
            example_tenant=tenants[0] if tenants else "team-a",
            limits=limits_summary(p.limit_set),
            overrides_path=p.overrides or self.run_dir / "overrides.yaml",
            overrides_builtin=p.overrides is None,
            poll_s=OVERRIDES_POLL_S,
            run_dir=self.run_dir,
            envoy_pid=self.envoy.pid,
            envoy_listen=str(self.envoy_listen),
            envoy_admin_url=self.envoy_admin_url,
            rls_pid=self.rls.pid,
            rls_grpc=str(self.rls_grpc),
            rls_http_url=self.rls_http.url,
            workers=p.workers,
            dry_run=p.dry_run,
            sink_url=f"http://{self._sink_address()}" if self.sink is not None else None,
            upstream_url=p.upstream.url if p.upstream is not None else None,
            ready_s=ready_s,
            duration_s=p.duration_s,
        )
        return banner(facts)

    def _start_demo(self) -> None:
        duration = self.plan.duration_s or DEMO_DEFAULT_S
        for tenant, rate in DEMO_TRAFFIC:
            argv = [
                sys.executable, "-m", "mimir_edge.cli", "load",
                "--url", self._push_url(),
                "--tenant", tenant,
                "--rate", str(rate),
                "--duration", f"{duration:g}",
                "--json",
            ]  # fmt: skip
            name = f"load {tenant}"
            child = Child(
                name,
                argv,
                self.run_dir / f"load-{tenant}.log",
                stdout_path=self.run_dir / f"load-{tenant}.json",
            )
            child.start()
            self.children.append(child)
            self.loaders.append(child)
            self.table.message(
                f"{name}: {rate} pushes/s for {duration:g} s (pid {child.pid}, "
                f"report in {child.stdout_path})"
            )

    # -- running -------------------------------------------------------------------------------

    def _watch(self) -> Child | None:
        """Refresh the table until asked to stop (None) or until a part fails (that part)."""
        end = self.ready_at + self.plan.duration_s if self.plan.duration_s else None
        finished: set[str] = set()
        while True:
            wait = REFRESH_S if end is None else max(0.0, min(REFRESH_S, end - time.monotonic()))
            if self.stop.wait(wait):
                return None
            for c in self.children:
                rc = c.poll()
                if rc is None or c.name in finished:
                    continue
                if c in self.loaders and rc == 0:
                    finished.add(c.name)
                    self.table.message(f"{c.name} finished (report in {c.stdout_path})")
                    continue
                return c
            self._refresh()
            if end is not None and time.monotonic() >= end:
                return None

    def _snapshot(self, *, rls: bool = True) -> list[str]:
        """The table now (``rls``: ask the RLS too; else keep its last answer)."""
        if self.access_log is not None:
            self.access_log.update()
        if rls:
            rows = fetch_json(f"{self.rls_http.url}/api/v1/tenants")
            if isinstance(rows, list):
                self.rls_tenants = rows
        statuses = self.access_log.statuses if self.access_log is not None else {}
        sink = self.sink.totals() if self.sink is not None else None
        return render(build_rows(statuses, self.rls_tenants, sink), with_sink=sink is not None)

    def _refresh(self) -> None:
        lines = self._snapshot()
        elapsed = time.monotonic() - self.ready_at
        status = f"up {_clock(elapsed)} · refreshed every {REFRESH_S:g} s · Ctrl-C stops"
        if self.plan.duration_s:
            status += f" · stops by itself in {_clock(self.plan.duration_s - elapsed)}"
        self.table.update(lines, status)

    # -- stopping ------------------------------------------------------------------------------

    def _stop_children(self, *, final_table: bool) -> None:
        timeout = 0.0 if self.signals > 1 else self.plan.stop_timeout_s
        self.table.clear()
        if self.loaders:
            stop_all(self.loaders, timeout)
        if final_table:
            self._snapshot()  # the RLS's last numbers, before it stops
        core = [c for c in reversed(self.children) if c not in self.loaders]  # envoy first
        print(f"stopping {', '.join(f'{c.name} (pid {c.pid})' for c in core)} ...", flush=True)
        states = {c.name: c.poll() for c in core}
        killed = stop_all(core, timeout)
        for c in killed:
            _error(f"{c.name} (pid {c.pid}) did not stop within {timeout:g} s; killed")
        if final_table:
            # Envoy flushes its access log as it exits; the RLS has stopped: its last answer.
            self.table.final(self._snapshot(rls=False), "final per-tenant totals:")
        for c in core:
            rc = c.poll()
            # Already gone before the stop (reported above), or a clean exit on SIGTERM.
            if states[c.name] is None and rc not in (0, -signal.SIGTERM) and c not in killed:
                _error(f"while stopping: {c.report()}")
        print("stopped: " + ", ".join(c.short_status() for c in self.children), flush=True)


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            status: int = r.status
            return status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return None


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return (
        f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
    )


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False
