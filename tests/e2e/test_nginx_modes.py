"""The NGINX modes of the rollout (servers/nginx) with real NGINX, real Envoy and the real RLS.

NGINX (/usr/sbin/nginx) runs the committed mode files (see tests/e2e/nginx.py: only the files a
user edits are written with loopback addresses); Envoy runs ``mimir_edge.envoy_config``'s
bootstrap; the RLS is ``mimir-edge rls``; the distributor is a :class:`RecordingUpstream`
answering 202, a status neither Envoy (in mirror mode it answers allowed pushes 204) nor the
RLS gives, so a 202 at the client can only be the distributor's answer. A push that went
through Envoy reaches the distributor with Envoy's ``x-envoy-expected-rq-timeout-ms`` header;
a direct one does not. NGINX's mirror copies carry ``MIRROR_HEADER``, which no client can set:
every mode removes a client's. Everything listens on 127.0.0.1 and is stopped by its fixture or
``with`` block.
"""

from __future__ import annotations

import http.client
import math
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mimir_edge.encode import Sample, Series, compress, encode_v1
from mimir_edge.envoy_config import (
    DEFAULT_MAX_REQUEST_BYTES,
    MIRROR_HEADER,
    PUSH_PATH,
    EnvoyConfig,
)
from tests.e2e.harness import (
    LOCALHOST,
    EnvoyProcess,
    HttpResponse,
    RecordedRequest,
    RecordingUpstream,
    http_request,
)
from tests.e2e.nginx import (
    MODES,
    NGINX_DIR,
    NginxError,
    NginxProcess,
    canary_split,
    nginx_test,
    write_conf_dir,
)
from tests.e2e.rls_process import RlsProcess

DISTRIBUTOR_STATUS = 202
ENVOY_MARK = "x-envoy-expected-rq-timeout-ms"
#: Burst 2500 at 1 item/s: two pushes of 1000 samples pass, the next ones are denied.
TIGHT_TENANTS = ("tight-mirror", "tight-edge", "tight-direct")
OVERRIDES = "overrides:\n" + "".join(
    f"  {t}:\n    ingestion_rate: 1\n    ingestion_burst_size: 2500\n" for t in TIGHT_TENANTS
)
#: Every other tenant gets room for everything these tests send.
ROOMY_DEFAULTS = (
    "--default-ingestion-rate",
    "1000000",
    "--default-ingestion-burst-size",
    "100000000",
)


def push_body(seq: int, samples: int = 10) -> bytes:
    """A valid remote-write 1.0 body, unique per ``seq``, with ``samples`` samples."""
    series = [
        Series((("__name__", "m"), ("i", str(i))), samples=(Sample(float(seq), 1_000 + seq),))
        for i in range(samples)
    ]
    return compress(encode_v1(series))


def push_headers(tenant: str) -> dict[str, str]:
    return {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
        "X-Scope-OrgID": tenant,
    }


#: A client pretending its push is NGINX's mirror copy.
FORGED = {MIRROR_HEADER: "1"}


class KeepAliveClient:
    """Pushes on one persistent HTTP/1.1 connection, as a remote-write shard does."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> HttpResponse:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        return HttpResponse(resp.status, tuple(resp.getheaders()), resp.read())

    def push(self, tenant: str, body: bytes, extra: dict[str, str] | None = None) -> HttpResponse:
        return self.request("POST", PUSH_PATH, body, push_headers(tenant) | (extra or {}))

    def close(self) -> None:
        self.conn.close()


def push_many(url: str, tenants: Sequence[str], *, clients: int = 4) -> list[int]:
    """One push per entry of ``tenants`` (unique bodies), spread over ``clients`` keep-alive
    connections; the statuses in order."""

    def run(worker: int) -> list[tuple[int, int]]:
        client = KeepAliveClient(url)
        try:
            return [
                (i, client.push(tenants[i], push_body(i)).status)
                for i in range(worker, len(tenants), clients)
            ]
        finally:
            client.close()

    with ThreadPoolExecutor(clients) as pool:
        results = [r for part in pool.map(run, range(clients)) for r in part]
    return [status for _, status in sorted(results)]


def push_with_repeated_header(
    url: str, body: bytes, tenant: str, name: str, value: str
) -> HttpResponse:
    """A push carrying header ``name: value`` twice, in two spellings (a mapping cannot)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", PUSH_PATH, skip_accept_encoding=True)
        for key, val in [*push_headers(tenant).items(), (name, value), (name.lower(), value)]:
            conn.putheader(key, val)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return HttpResponse(resp.status, tuple(resp.getheaders()), resp.read())
    finally:
        conn.close()


def via_envoy(requests: Sequence[RecordedRequest]) -> int:
    return sum(1 for r in requests if r.header(ENVOY_MARK) is not None)


def wait_for(
    what: str, cond: Callable[[], bool], logs: Callable[[], str], timeout_s: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs()}")
        time.sleep(0.05)


def envoy_config(upstream_port: int, rls_port: int, *, mirror_mode: bool = False) -> EnvoyConfig:
    return EnvoyConfig(
        upstream_host=LOCALHOST,
        upstream_port=upstream_port,
        rls_host=LOCALHOST,
        rls_port=rls_port,
        listen_port=0,
        admin_port=0,
        mirror_mode=mirror_mode,
    )


@pytest.fixture(scope="module")
def rls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RlsProcess]:
    tmp = tmp_path_factory.mktemp("rls")
    overrides = tmp / "overrides.yaml"
    overrides.write_text(OVERRIDES)
    with RlsProcess(tmp, "--overrides", str(overrides), *ROOMY_DEFAULTS) as proc:
        yield proc


@pytest.fixture(scope="module")
def distributor() -> Iterator[RecordingUpstream]:
    with RecordingUpstream(status=DISTRIBUTOR_STATUS) as up:
        yield up


@pytest.fixture(scope="module")
def envoy(rls: RlsProcess, distributor: RecordingUpstream) -> Iterator[EnvoyProcess]:
    """Envoy in front of the distributor, as in the canary and edge phases."""
    with EnvoyProcess(envoy_config(distributor.port, rls.grpc_port)) as proc:
        yield proc


@pytest.fixture(scope="module")
def mirror_envoy(rls: RlsProcess, distributor: RecordingUpstream) -> Iterator[EnvoyProcess]:
    """Envoy still in mirror mode in front of the distributor (after the mirror phase)."""
    with EnvoyProcess(envoy_config(distributor.port, rls.grpc_port, mirror_mode=True)) as proc:
        yield proc


@pytest.fixture
def clean(distributor: RecordingUpstream) -> None:
    distributor.clear()


def decisions(rls: RlsProcess, tenant: str) -> tuple[int, int]:
    """(allowed, denied) pushes of ``tenant`` so far."""
    return (
        int(rls.metric(f'rls_tenant_requests_total{{tenant="{tenant}",decision="allow"}}')),
        int(rls.metric(f'rls_tenant_requests_total{{tenant="{tenant}",decision="deny"}}')),
    )


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_passes_nginx_t(tmp_path: Path, mode: str) -> None:
    main = write_conf_dir(tmp_path, mode, listen_port=1, distributor_port=2, envoy_port=3)
    assert "test is successful" in nginx_test(tmp_path, main)


@pytest.mark.parametrize("percent", [0, 0.5, 1, 5, 10, 25, 50, 100])
def test_every_canary_step_passes_nginx_t(tmp_path: Path, percent: float) -> None:
    main = write_conf_dir(
        tmp_path,
        "canary",
        listen_port=1,
        distributor_port=2,
        envoy_port=3,
        canary=canary_split(percent),
    )
    assert "test is successful" in nginx_test(tmp_path, main)


def test_nginx_refuses_a_zero_percent_line(tmp_path: Path) -> None:
    """Why 0% is a commented-out line: NGINX rejects `0%` loudly instead of misrouting."""
    text = canary_split(10).replace("10%", "0%")
    main = write_conf_dir(
        tmp_path,
        "canary",
        listen_port=1,
        distributor_port=2,
        envoy_port=3,
        canary=text,
    )
    with pytest.raises(NginxError, match='invalid percent value "0%"'):
        nginx_test(tmp_path, main)


#: A name that never resolves: `.invalid` is reserved for that (RFC 6761).
UNRESOLVABLE_ENVOY = "mimir-envoy.invalid:8080"


def test_the_rollback_loads_when_envoys_name_does_not_resolve(tmp_path: Path) -> None:
    """Envoy uninstalled (or NGINX outside the cluster's DNS): direct.conf still passes
    `nginx -t`, so a reload or a restarted NGINX takes the rollback, while edge.conf on the same
    files fails, which is what would happen if direct.conf included Envoy's upstream."""
    results: dict[str, str] = {}
    for mode in ("direct", "edge"):
        main = write_conf_dir(
            tmp_path / mode,
            mode,
            listen_port=1,
            distributor_port=2,
            envoy_port=3,
            envoy_address=UNRESOLVABLE_ENVOY,
        )
        try:
            results[mode] = nginx_test(tmp_path / mode, main)
        except NginxError as exc:
            results[mode] = str(exc)
    assert "test is successful" in results["direct"]
    assert 'host not found in upstream "mimir-envoy.invalid:8080"' in results["edge"]
    assert "test is successful" not in results["edge"]


def test_user_files_hold_the_guides_defaults() -> None:
    distributor = (NGINX_DIR / "upstream-distributor.conf").read_text()
    envoy = (NGINX_DIR / "upstream-envoy.conf").read_text()
    assert "server mimir-distributor.mimir.svc.cluster.local:8080;" in distributor
    assert "server mimir-envoy.mimir-edge-enforcement.svc.cluster.local:8080;" in envoy
    assert distributor.count("keepalive 32;") == envoy.count("keepalive 32;") == 1
    assert "listen 80;" in (NGINX_DIR / "listen.conf").read_text()
    split = (NGINX_DIR / "canary-split.conf").read_text()
    assert 'split_clients "${request_id}" $mimir_edge_canary_upstream' in split
    # NGINX's body limit is Envoy's: 10m is DEFAULT_MAX_REQUEST_BYTES.
    assert DEFAULT_MAX_REQUEST_BYTES == 10 * 1024 * 1024
    assert "client_max_body_size 10m;" in (NGINX_DIR / "proxy.conf").read_text()


# -- mirror --------------------------------------------------------------------------------------


def test_mirror_clients_hear_only_the_distributor_while_the_rls_sees_every_push(
    rls: RlsProcess,
) -> None:
    """22 pushes of a roomy tenant and 5 of a tight one (burst 2500, 1000 samples each), with
    Envoy in mirror mode in front of the distributor itself: every client answer is the
    distributor's 202 (the tight tenant's 3 denied copies included); the distributor gets each
    push exactly once, byte-identical, with its headers (never the mirror mark, which every
    third client sends itself), and never from Envoy; the RLS decides on a copy of each (2
    allowed, 3 denied for the tight tenant); Envoy answers the 24 allowed copies 204 itself
    and the 3 denied ones with the RLS's 429."""
    roomy, tight = "roomy-mirror", "tight-mirror"
    sent = [(roomy, push_body(i)) for i in range(22)]
    sent[5:5] = [(tight, push_body(100 + i, samples=1000)) for i in range(5)]
    forged = set(range(0, len(sent), 3))  # these clients send the mirror mark themselves
    with (
        RecordingUpstream(status=DISTRIBUTOR_STATUS) as dist,
        EnvoyProcess(envoy_config(dist.port, rls.grpc_port, mirror_mode=True)) as envoy,
        NginxProcess("mirror", distributor_port=dist.port, envoy_port=envoy.listen_port) as nginx,
    ):

        def logs() -> str:
            return f"{nginx.logs()}\n--- envoy\n{envoy.stderr()}\n--- rls\n{rls.log()}"

        client = KeepAliveClient(nginx.url)
        try:
            answers = [
                client.push(tenant, body, FORGED if i in forged else None)
                for i, (tenant, body) in enumerate(sent)
            ]
        finally:
            client.close()
        assert [a.status for a in answers] == [DISTRIBUTOR_STATUS] * len(sent), logs()
        assert all(a.header("retry-after") is None for a in answers)

        def copies_decided() -> bool:
            return sum(decisions(rls, roomy)) + sum(decisions(rls, tight)) == len(sent)

        wait_for("the RLS to decide on every copy", copies_decided, logs)
        assert decisions(rls, roomy) == (22, 0)
        assert decisions(rls, tight) == (2, 3)

        # Envoy answered every copy itself (204 if allowed, the RLS's 429 if not), forwarded none.
        def envoy_answered_all() -> bool:
            stats = envoy.stats()
            answered = (
                stats["http.ingress.downstream_rq_2xx"] + stats["http.ingress.downstream_rq_4xx"]
            )
            return answered == len(sent)

        wait_for("Envoy to answer every copy", envoy_answered_all, logs)
        stats = envoy.stats()
        assert stats["http.ingress.rq_direct_response"] == stats["http.ingress.ext_authz.ok"] == 24
        assert (
            stats["http.ingress.downstream_rq_4xx"] == stats["http.ingress.ext_authz.denied"] == 3
        )
        assert stats["cluster.mimir_distributor.upstream_rq_total"] == 0
        # The distributor: every push once, in order, as sent (nothing lost, nothing doubled),
        # and none of them from Envoy.
        got = dist.requests
        assert [(r.header("x-scope-orgid"), r.body) for r in got] == sent
        assert via_envoy(got) == 0
        for r in got:
            assert r.path == PUSH_PATH
            assert r.header(MIRROR_HEADER) is None
            assert r.header("content-encoding") == "snappy"
            assert r.header("content-type") == "application/x-protobuf"
            assert r.header("x-prometheus-remote-write-version") == "0.1.0"
        # NGINX logged each client request once, answered by the distributor.
        log = nginx.access_log()
        assert len(log) == len(sent)
        assert {e["upstream_addr"] for e in log} == {f"{LOCALHOST}:{dist.port}"}


def test_mirror_needs_envoy_in_mirror_mode_or_pushes_are_ingested_twice(rls: RlsProcess) -> None:
    """Why mirror mode exists: an Envoy in its normal mode behind mirror.conf forwards every
    copy it allows, so the distributor gets each push twice (once from Envoy)."""
    with (
        RecordingUpstream(status=DISTRIBUTOR_STATUS) as dist,
        EnvoyProcess(envoy_config(dist.port, rls.grpc_port)) as envoy,
        NginxProcess("mirror", distributor_port=dist.port, envoy_port=envoy.listen_port) as nginx,
    ):
        client = KeepAliveClient(nginx.url)
        try:
            statuses = [client.push("doubled-mirror", push_body(i)).status for i in range(3)]
        finally:
            client.close()
        assert statuses == [DISTRIBUTOR_STATUS] * 3
        wait_for("the copies", lambda: len(dist.requests) == 6, nginx.logs)
        assert sorted(r.body for r in dist.requests) == sorted(2 * [push_body(i) for i in range(3)])
        assert via_envoy(dist.requests) == 3
        assert all(r.header(MIRROR_HEADER) is None for r in dist.requests)  # Envoy removes it


def test_mirror_copies_carry_the_mark_and_the_shared_headers() -> None:
    """What mirror.conf sends Envoy (recorded here by an upstream standing in its place): the
    push's body, path and headers, NGINX's shared proxy headers (the mirror location sets its
    own, so it must include them again: the original's X-Request-ID, no ``Connection: close``,
    which would end keep-alive), and the mark exactly once with the value ``1``, even when the
    client sent its own (twice, here). The original reaches the distributor without any mark."""
    with (
        RecordingUpstream(status=DISTRIBUTOR_STATUS) as dist,
        RecordingUpstream(status=204) as copies,
        NginxProcess("mirror", distributor_port=dist.port, envoy_port=copies.port) as nginx,
    ):
        plain = http_request(nginx.url, "POST", PUSH_PATH, push_body(1), push_headers("t"))
        forged = push_with_repeated_header(nginx.url, push_body(2), "t", MIRROR_HEADER, "1")
        assert (plain.status, forged.status) == (DISTRIBUTOR_STATUS,) * 2, nginx.logs()
        wait_for("both copies", lambda: len(copies.requests) == 2, nginx.logs)
        originals, mirrored = dist.requests, copies.requests
    assert [r.body for r in originals] == [r.body for r in mirrored] == [push_body(1), push_body(2)]
    for original, copy in zip(originals, mirrored, strict=True):
        assert original.header(MIRROR_HEADER) is None
        assert [v for k, v in copy.headers if k.lower() == MIRROR_HEADER.lower()] == ["1"]
        assert copy.path == PUSH_PATH
        assert copy.header("connection") is None
        for name in ("x-request-id", "host", "x-forwarded-for", "x-scope-orgid", "content-type"):
            assert copy.header(name) == original.header(name) is not None, name


@pytest.mark.parametrize("envoy_state", ["down", "hung"])
def test_mirror_clients_are_answered_when_envoy_is_down_or_hung(envoy_state: str) -> None:
    """With nothing on Envoy's port, or a peer that accepts and never answers, every push is
    still answered by the distributor and reaches it once. A hung Envoy holds each push's
    connection until the mirror location's read timeout (2 s) ends the copy; without that
    bound (NGINX's default is 60 s) the client's 10 s timeout would fail the second push."""
    with socket.socket() as blackhole:
        blackhole.bind((LOCALHOST, 0))
        if envoy_state == "hung":
            blackhole.listen(16)  # the kernel completes handshakes; nothing ever reads
        envoy_port = blackhole.getsockname()[1]
        with (
            RecordingUpstream(status=DISTRIBUTOR_STATUS) as dist,
            NginxProcess("mirror", distributor_port=dist.port, envoy_port=envoy_port) as nginx,
        ):
            client = KeepAliveClient(nginx.url, timeout_s=10)
            try:
                statuses = [client.push("t", push_body(i)).status for i in range(3)]
            finally:
                client.close()
            assert statuses == [DISTRIBUTOR_STATUS] * 3, nginx.logs()
            assert [r.body for r in dist.requests] == [push_body(i) for i in range(3)]
            if envoy_state == "hung":
                wait_for(
                    "the copies to time out",
                    lambda: nginx.error_log().count("upstream timed out") >= 2,
                    nginx.logs,
                )


# -- canary --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("percent", "pushes"), [(0, 300), (10, 3000), (100, 300)])
@pytest.mark.usefixtures("clean")
def test_canary_sends_the_set_share_of_pushes_through_envoy(
    percent: float,
    pushes: int,
    rls: RlsProcess,
    distributor: RecordingUpstream,
    envoy: EnvoyProcess,
) -> None:
    """All pushes come from one client address with one path, so the share is a share of
    requests (the guide's key would make it 0 or 100 %). 10 %: within 4 standard deviations
    of the binomial (3000 pushes: 300 ± 66); 0 % and 100 %: exact."""
    tenant = f"canary-{percent:g}"
    with NginxProcess(
        "canary",
        distributor_port=distributor.port,
        envoy_port=envoy.listen_port,
        canary=canary_split(percent),
    ) as nginx:
        statuses = push_many(nginx.url, [tenant] * pushes)
        assert statuses == [DISTRIBUTOR_STATUS] * pushes, nginx.logs()
        wait_for("the access log", lambda: len(nginx.access_log()) == pushes, nginx.logs)
        log = nginx.access_log()
    got = distributor.requests
    assert len(got) == pushes  # each push once, whichever way it went
    through_envoy = via_envoy(got)
    print(f"\ncanary {percent:g}%: {through_envoy}/{pushes} pushes through Envoy")
    # Three witnesses agree: the distributor's headers, NGINX's log and the RLS.
    envoy_addr = f"{LOCALHOST}:{envoy.listen_port}"
    assert sum(1 for e in log if e["upstream_addr"] == envoy_addr) == through_envoy
    assert decisions(rls, tenant) == (through_envoy, 0)
    p = percent / 100
    if p in (0, 1):
        assert through_envoy == pushes * p
    else:
        sigma = math.sqrt(pushes * p * (1 - p))
        assert abs(through_envoy - pushes * p) <= 4 * sigma, (through_envoy, pushes * p, sigma)


@pytest.mark.usefixtures("clean")
def test_canary_by_tenant_keeps_each_tenants_pushes_on_one_path(
    distributor: RecordingUpstream, envoy: EnvoyProcess
) -> None:
    """The documented alternative key, ``${http_x_scope_orgid}``: 40 tenants at 50 %, each
    tenant's 5 pushes all take the same path, and both paths get tenants."""
    tenants = [f"by-tenant-{i}" for i in range(40)]
    canary = canary_split(50, key="${http_x_scope_orgid}")
    with NginxProcess(
        "canary", distributor_port=distributor.port, envoy_port=envoy.listen_port, canary=canary
    ) as nginx:
        assert set(push_many(nginx.url, tenants * 5)) == {DISTRIBUTOR_STATUS}
    paths: dict[str, set[bool]] = {}
    for r in distributor.requests:
        paths.setdefault(r.header("x-scope-orgid") or "", set()).add(
            r.header(ENVOY_MARK) is not None
        )
    assert sorted(paths) == sorted(tenants)
    assert all(len(p) == 1 for p in paths.values()), paths
    enforced = sum(1 for p in paths.values() if p == {True})
    assert 0 < enforced < len(tenants)


@pytest.mark.usefixtures("clean")
def test_the_guides_split_key_sends_one_client_all_or_nothing(
    distributor: RecordingUpstream, envoy: EnvoyProcess
) -> None:
    """``${remote_addr}${request_uri}`` at 50 %: one client's 200 pushes all take one path."""
    canary = canary_split(50, key="${remote_addr}${request_uri}")
    with NginxProcess(
        "canary", distributor_port=distributor.port, envoy_port=envoy.listen_port, canary=canary
    ) as nginx:
        assert set(push_many(nginx.url, ["guide-key"] * 200)) == {DISTRIBUTOR_STATUS}
    assert via_envoy(distributor.requests) in (0, 200)


# -- edge and direct -----------------------------------------------------------------------------


@pytest.mark.usefixtures("clean")
def test_edge_sends_everything_through_envoy(
    rls: RlsProcess, distributor: RecordingUpstream, envoy: EnvoyProcess
) -> None:
    """Pushes and other paths go through Envoy; a tenant over its limit gets the RLS's 429
    with Retry-After through NGINX; headers and bodies reach the distributor unchanged; a
    body of exactly 10 MiB passes NGINX (to be judged by the RLS), one byte more is NGINX's 413."""
    with NginxProcess(
        "edge", distributor_port=distributor.port, envoy_port=envoy.listen_port
    ) as nginx:
        client = KeepAliveClient(nginx.url)
        try:
            roomy = [client.push("roomy-edge", push_body(i)) for i in range(10)]
            tight = [client.push("tight-edge", push_body(i, samples=1000)) for i in range(3)]
            query = client.request("GET", "/prometheus/api/v1/query?query=up")
        finally:
            client.close()
        assert [r.status for r in roomy] == [DISTRIBUTOR_STATUS] * 10, nginx.logs()
        assert [r.status for r in tight] == [DISTRIBUTOR_STATUS] * 2 + [429]
        assert tight[2].header("retry-after") is not None
        assert b"ingestion rate limit" in tight[2].body
        assert query.status == DISTRIBUTOR_STATUS
        headers = push_headers("big")
        at_limit = http_request(
            nginx.url, "POST", PUSH_PATH, bytes(DEFAULT_MAX_REQUEST_BYTES), headers
        )
        over = http_request(
            nginx.url, "POST", PUSH_PATH, bytes(DEFAULT_MAX_REQUEST_BYTES + 1), headers
        )
    assert at_limit.status == 400  # through NGINX and Envoy: the RLS refused the zeros
    assert b"snappy" in at_limit.body or b"decode" in at_limit.body, at_limit.body
    assert over.status == 413
    assert b"413 Request Entity Too Large" in over.body  # NGINX's own page, not Envoy's
    got = distributor.requests
    assert len(got) == 10 + 2 + 1
    assert via_envoy(got) == len(got)
    assert [(r.header("x-scope-orgid"), r.body) for r in got[:10]] == [
        ("roomy-edge", push_body(i)) for i in range(10)
    ]
    for r in got[:12]:
        assert r.header("content-encoding") == "snappy"
        assert r.header("content-type") == "application/x-protobuf"
        assert r.header("x-prometheus-remote-write-version") == "0.1.0"
    assert got[12].path == "/prometheus/api/v1/query?query=up"
    assert decisions(rls, "tight-edge") == (2, 1)


@pytest.mark.parametrize("mode", ["canary", "edge", "direct"])
@pytest.mark.usefixtures("clean")
def test_a_client_cannot_have_its_push_taken_for_a_mirror_copy(
    mode: str, rls: RlsProcess, distributor: RecordingUpstream, mirror_envoy: EnvoyProcess
) -> None:
    """Envoy left in mirror mode after the mirror phase, behind canary.conf (100 %), edge.conf
    or direct.conf, and clients sending the mirror mark themselves (once, or twice in two
    spellings): NGINX removes it, so every push reaches the distributor (through Envoy except
    with direct.conf) byte-identical and without the mark, and Envoy answers none itself."""
    tenant = f"forged-{mode}"
    canary = canary_split(100) if mode == "canary" else None
    with NginxProcess(
        mode, distributor_port=distributor.port, envoy_port=mirror_envoy.listen_port, canary=canary
    ) as nginx:
        client = KeepAliveClient(nginx.url)
        try:
            answers = [client.push(tenant, push_body(i), FORGED) for i in range(4)]
        finally:
            client.close()
        answers.append(
            push_with_repeated_header(nginx.url, push_body(4), tenant, MIRROR_HEADER, "1")
        )
        assert [a.status for a in answers] == [DISTRIBUTOR_STATUS] * 5, nginx.logs()
    got = distributor.requests
    assert [(r.header("x-scope-orgid"), r.body) for r in got] == [
        (tenant, push_body(i)) for i in range(5)
    ]
    assert all(r.header(MIRROR_HEADER) is None for r in got)
    assert via_envoy(got) == (0 if mode == "direct" else 5)
    assert decisions(rls, tenant) == ((0, 0) if mode == "direct" else (5, 0))
    assert mirror_envoy.stats()["http.ingress.rq_direct_response"] == 0


@pytest.mark.usefixtures("clean")
def test_direct_sends_everything_straight_to_the_distributor(
    rls: RlsProcess, distributor: RecordingUpstream, envoy: EnvoyProcess
) -> None:
    """The rollback: no push is judged (the tight tenant's 3 pushes all pass), none passes Envoy."""
    with NginxProcess(
        "direct", distributor_port=distributor.port, envoy_port=envoy.listen_port
    ) as nginx:
        client = KeepAliveClient(nginx.url)
        try:
            statuses = [
                client.push("tight-direct", push_body(i, samples=1000)).status for i in range(3)
            ]
            query = client.request("GET", "/prometheus/api/v1/query?query=up")
        finally:
            client.close()
    assert statuses == [DISTRIBUTOR_STATUS] * 3
    assert query.status == DISTRIBUTOR_STATUS
    got = distributor.requests
    assert [r.body for r in got[:3]] == [push_body(i, samples=1000) for i in range(3)]
    assert via_envoy(got) == 0
    assert decisions(rls, "tight-direct") == (0, 0)
