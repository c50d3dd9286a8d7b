"""Lease leader election against the stand-in API server (short terms: 1.5 s, renew 0.3 s)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes.client import ApiClient

from mimir_edge.sync import leader
from mimir_edge.sync.base import Leadership
from tests.sync.k8s_standin import MICROTIME, StandinApiServer

NS = "mimir"
LEASE = "mimir-edge-overrides-sync"
TERM = 1.5
RENEW = 0.3


@pytest.fixture
def standin() -> Iterator[StandinApiServer]:
    with StandinApiServer() as server:
        yield server


@pytest.fixture
def candidates(standin: StandinApiServer) -> Iterator[Callable[[str], leader.LeaseLeadership]]:
    """Start candidates for the test's Lease; every one is stopped at the end."""
    started: list[leader.LeaseLeadership] = []

    def start(identity: str) -> leader.LeaseLeadership:
        c = leader.lease_leadership(
            NS,
            LEASE,
            identity,
            lease_seconds=TERM,
            renew_seconds=RENEW,
            api_client=standin.api_client(),
        )
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def holder(standin: StandinApiServer) -> str | None:
    lease = standin.get_lease(NS, LEASE)
    return None if lease is None else lease["spec"].get("holderIdentity")


def now() -> datetime:
    return datetime.now(UTC)


def stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_creates_the_lease_renews_and_releases(
    standin: StandinApiServer, candidates: Callable[[str], leader.LeaseLeadership]
) -> None:
    a = candidates("a")
    view: Leadership = a  # conforms to the interface
    assert wait_until(view.is_leader, timeout=2)
    lease = standin.get_lease(NS, LEASE)
    assert lease is not None
    spec = lease["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 2  # whole seconds, rounded up from 1.5
    assert spec["leaseTransitions"] == 0
    assert MICROTIME.match(spec["renewTime"])
    first_renew = spec["renewTime"]
    assert wait_until(lambda: standin.stats["lease_replace"] >= 3, timeout=2)  # renewing
    lease = standin.get_lease(NS, LEASE)
    assert lease is not None
    assert lease["spec"]["renewTime"] > first_renew
    assert a.is_leader()
    a.stop()
    assert not a.is_leader()
    assert holder(standin) is None  # released: a successor need not wait for expiry


def test_two_candidates_one_leader_and_handover_on_stop(
    standin: StandinApiServer, candidates: Callable[[str], leader.LeaseLeadership]
) -> None:
    a, b = candidates("a"), candidates("b")
    assert wait_until(lambda: a.is_leader() or b.is_leader(), timeout=2)
    deadline = time.monotonic() + 1.5  # a full term of renewals and follower polls
    while time.monotonic() < deadline:
        assert [a.is_leader(), b.is_leader()].count(True) == 1
        time.sleep(0.01)
    first, second = (a, b) if a.is_leader() else (b, a)
    assert holder(standin) == first.identity
    first.stop()
    t0 = time.monotonic()
    assert wait_until(second.is_leader, timeout=TERM)
    assert time.monotonic() - t0 < TERM  # released: taken at the next poll, not after expiry
    assert not first.is_leader()
    assert holder(standin) == second.identity


def test_expired_lease_is_taken_over(
    standin: StandinApiServer, candidates: Callable[[str], leader.LeaseLeadership]
) -> None:
    long_ago = datetime.now(UTC) - timedelta(minutes=1)
    standin.put_lease(
        NS,
        LEASE,
        {
            "holderIdentity": "crashed",
            "leaseDurationSeconds": 15,
            "acquireTime": stamp(long_ago),
            "renewTime": stamp(long_ago),
            "leaseTransitions": 4,
        },
    )
    a = candidates("a")
    assert wait_until(a.is_leader, timeout=2)
    lease = standin.get_lease(NS, LEASE)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseTransitions"] == 5


def test_held_lease_is_taken_over_only_after_it_expires(
    standin: StandinApiServer, candidates: Callable[[str], leader.LeaseLeadership]
) -> None:
    now = datetime.now(UTC)
    spec = {"holderIdentity": "other", "leaseDurationSeconds": 1, "renewTime": stamp(now)}
    standin.put_lease(NS, LEASE, spec)
    a = candidates("a")
    time.sleep(0.5)
    assert not a.is_leader()  # "other" renewed less than a second ago
    assert holder(standin) == "other"
    assert wait_until(a.is_leader, timeout=3)  # "other" never renewed again
    assert holder(standin) == "a"


def test_crashed_leader_is_replaced_after_its_term(
    standin: StandinApiServer, candidates: Callable[[str], leader.LeaseLeadership]
) -> None:
    """No release (the process died): the follower waits for the term to run out."""
    a = candidates("a")
    assert wait_until(a.is_leader, timeout=2)
    b = candidates("b")
    a._stopping.set()  # the renew loop ends and nothing is released, as in a crash
    a._thread.join(2)
    t0 = time.monotonic()
    assert wait_until(b.is_leader, timeout=4)
    waited = time.monotonic() - t0
    assert waited > 0.5  # it did wait for the expiry (2 s term minus time already passed)
    assert not a.is_leader()  # a's own view lapsed too: never two leaders


def test_conflict_on_renew_means_someone_else_won(
    standin: StandinApiServer, candidates: Callable[[str], leader.LeaseLeadership]
) -> None:
    a = candidates("a")
    assert wait_until(a.is_leader, timeout=2)

    def rival_writes_first() -> None:
        spec = {"holderIdentity": "rival", "leaseDurationSeconds": 1, "renewTime": stamp(now())}
        standin.put_lease(NS, LEASE, spec)

    standin.lease_write_hook = rival_writes_first  # lands between a's read and a's renewal
    assert wait_until(lambda: not a.is_leader(), timeout=2)
    assert standin.stats["lease_conflict"] == 1
    assert holder(standin) == "rival"
    # The rival never renews: a takes the Lease back once the rival's 1 s term is over.
    assert wait_until(a.is_leader, timeout=3)
    assert holder(standin) == "a"


def test_conflict_on_create_means_someone_else_won(
    standin: StandinApiServer, candidates: Callable[[str], leader.LeaseLeadership]
) -> None:
    def rival_creates_first() -> None:
        spec = {"holderIdentity": "rival", "leaseDurationSeconds": 5, "renewTime": stamp(now())}
        standin.put_lease(NS, LEASE, spec)

    standin.lease_write_hook = rival_creates_first
    a = candidates("a")
    assert wait_until(lambda: standin.stats["lease_conflict"] == 1, timeout=2)
    time.sleep(0.5)
    assert not a.is_leader()
    assert holder(standin) == "rival"


def test_leadership_lapses_when_the_api_is_unreachable(
    standin: StandinApiServer, candidates: Callable[[str], leader.LeaseLeadership]
) -> None:
    a = candidates("a")
    assert wait_until(a.is_leader, timeout=2)
    standin.stop()
    t0 = time.monotonic()
    assert wait_until(lambda: not a.is_leader(), timeout=3)
    assert time.monotonic() - t0 <= TERM + 0.1  # no renewal for a term: no longer leading
    standin.start()
    assert wait_until(a.is_leader, timeout=3)  # still the holder: renews and leads again


def test_renew_time_always_has_six_fraction_digits(
    standin: StandinApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """isoformat() drops a zero fraction, which the apiserver's MicroTime parser rejects."""

    class WholeSecond(datetime):
        @classmethod
        def now(cls, tz: object = None) -> WholeSecond:
            return cls(2030, 1, 1, 0, 0, 0, 0, tzinfo=UTC)

    monkeypatch.setattr(leader, "datetime", WholeSecond)
    stamped = leader._utcnow()
    assert stamped.microsecond != 0
    serialize: Callable[[object], str] = ApiClient().sanitize_for_serialization  # untyped
    wire = serialize(stamped)
    assert MICROTIME.match(wire), wire


def test_rejects_a_renew_period_not_shorter_than_the_term(standin: StandinApiServer) -> None:
    with pytest.raises(ValueError, match="renew_seconds"):
        leader.lease_leadership(
            NS, LEASE, "a", lease_seconds=1, renew_seconds=1, api_client=standin.api_client()
        )
    with pytest.raises(ValueError, match="identity"):
        leader.lease_leadership(NS, LEASE, "", api_client=standin.api_client())
