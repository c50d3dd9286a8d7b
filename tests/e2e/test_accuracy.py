"""The edge decides like Mimir's ingestion limiter: real Envoy + real RLS vs a reference bucket.

A tenant pushes at twice its ingestion rate for 30 s (750 pushes, one every 40 ms, sent one
after the other on a keep-alive connection) through Envoy and ``mimir-edge rls`` (2 workers)
to a recording upstream. :class:`ReferenceLimiter`, written here from golang.org/x/time/rate's
rules (what Mimir's ``ingestion_rate`` / ``ingestion_burst_size`` limiter is), replays the same
pushes at the same times with the same sizes (``scan_remote_write(body).ingested``). The edge
must make >= 99 % of the (timing-tolerant, below) reference's decisions and allow within one
push of its total; every push it allowed must reach the upstream byte-identical, and no other.

**Which time the reference uses.** The RLS charges the bucket when its worker handles the
Check: the client's send time plus a delay (Envoy buffering the body, the gRPC call). Only
*changes* of that delay matter (a constant shifts both timelines alike), and the RLS reads
CLOCK_MONOTONIC, the clock of ``time.monotonic_ns()`` here, so there is no skew to correct.
The reference uses the **send time**: the path before the decision is the same for allowed
and denied pushes. The midpoint of send and response would not be: an allowed push's
response waits for the upstream too, so the midpoint would put allowed decisions later than
denied ones, a bias that depends on the outcome being measured.

**Why the schedule is on a lattice.** Every push carries 500 or 2000 items and the bucket
refills 500 items per 40 ms slot, so on the schedule the tokens at a decision are always the
burst (5250) plus a multiple of 500: never closer than 250 items (20 ms of refill) to the
push's size. Timing noise of Envoy, the RLS or this client below 20 ms cannot flip a
decision, so a disagreement means the edge's arithmetic differs (rate, burst, what a push is
charged, charging denied pushes): a rate off by 0.07 % drifts 250 items within 30 s. With
random times and sizes, a 1 ms hiccup at 25 pushes/s would flip ~2.5 % of the crossings
instead, and a late first push would shift every later decision. A send that leaves late
(a loaded machine) is replayed at its real time and only narrows its own margin, which the
report shows (``min_margin_ms``).

**A machine that stalls.** Other processes can hold up the RLS for longer than 20 ms (100 ms
and more has been seen here while other test suites ran): the decision then falls anywhere
between the push's send time and its response, and at 12,500 items/s that is more than the
margin. So there are two replays. The plain one, every push *at its send time*, is
reported (its agreement and false deny/allow rates). The asserted one, *timing-tolerant*,
is the same bucket, but where the tokens at the send time (less the first push's own window,
to which the edge's timeline is anchored) and at the response time lie on both sides of the
push's size, either answer is one Mimir could give, so it takes the edge's answer and counts
the push as ambiguous. With no push ambiguous (a calm machine) the two replays are the same.
If more than 10 % of the pushes are ambiguous the run could not judge enough decisions and
the test is skipped (after all other checks passed).
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import pytest

from mimir_edge import scan_remote_write
from mimir_edge.envoy_config import PUSH_PATH
from tests.conftest import CorpusFile
from tests.e2e.harness import EnvoyProcess, RecordingUpstream
from tests.e2e.rls_process import RlsProcess
from tests.e2e.test_harness import config, push_headers

TENANT = "accuracy"
INTERVAL_NS = 40_000_000  # 25 pushes/s
PUSHES = 750  # 30 s
#: Items of the two kinds of push: a scrape (500 samples) and an application batch (2000).
SMALL, LARGE = 500, 2000
#: Refill 500 items per slot; per block of three slots (500 + 500 + 2000 offered) that is
#: 1500 of 3000 items: the tenant offers twice its limit.
RATE = 12_500
#: Half a slot's refill off the lattice of 500s (see the module docstring).
BURST = 5_250
SEED = 20240607
SEQ_HEADER = "X-Accuracy-Seq"


class ReferenceLimiter:
    """golang.org/x/time/rate's ``Limiter.AllowN(now, n)``, in exact arithmetic.

    Tokens refill at ``rate`` per second up to ``burst``; the bucket starts full (Go's zero
    ``last`` makes the first refill fill it). A request of ``n`` passes iff ``n <= burst`` and
    the tokens cover it, and then takes them; a refused request changes nothing (Go only
    stores ``last`` and ``tokens`` when the reservation is ok). Time going backwards counts
    as no time. Mimir's distributor calls ``AllowN(now, tenant, items)`` with this limiter.
    """

    def __init__(self, rate: int, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = Fraction(burst)
        self._last_ns: int | None = None

    def _refilled(self, now_ns: int) -> Fraction:
        assert self._last_ns is not None
        elapsed = max(0, now_ns - self._last_ns)
        return self._tokens + Fraction(self.rate * elapsed, 10**9)

    def tokens(self, now_ns: int) -> Fraction:
        if self._last_ns is None:
            return Fraction(self.burst)
        return min(Fraction(self.burst), self._refilled(now_ns))

    def full(self, now_ns: int) -> bool:
        """Whether the bucket is full at ``now_ns``, after the first request."""
        return self._last_ns is not None and self._refilled(now_ns) >= self.burst

    def allow(self, n: int, now_ns: int) -> bool:
        tokens = self.tokens(now_ns)
        if n > self.burst or tokens < n:
            return False
        self._tokens = tokens - n
        self._last_ns = now_ns if self._last_ns is None else max(now_ns, self._last_ns)
        return True


def test_reference_limiter_follows_go_rate() -> None:
    ref = ReferenceLimiter(rate=10, burst=20)
    assert ref.allow(20, 0)  # starts full
    assert not ref.allow(1, 0)
    assert not ref.allow(2, 150_000_000)  # 1.5 tokens
    assert ref.allow(1, 150_000_000)  # the refusal took nothing
    assert ref.tokens(150_000_000) == Fraction(1, 2)
    assert ref.tokens(10**10) == 20  # capped at the burst
    assert not ref.allow(21, 10**10)  # more than the burst never passes
    assert ref.allow(20, 10**10)
    assert ref.tokens(5 * 10**9) == 0  # time going backwards adds nothing


@dataclass(frozen=True)
class Push:
    seq: int
    body: int  # index into the bodies
    items: int
    target_ns: int
    sent_ns: int
    done_ns: int
    status: int
    retry_after: str | None


def bodies_of(corpus: list[CorpusFile], items: int) -> list[bytes]:
    """Corpus bodies of ``items`` samples and nothing else (so no exemplar-only charging
    rule can differ), checked with the scanner the RLS uses."""
    out = [
        c.body
        for c in corpus
        if c.expected["samples"] == items
        and c.expected["exemplars"] + c.expected["histograms"] + c.expected["metadata"] == 0
    ]
    assert out
    assert {scan_remote_write(b).ingested for b in out} == {items}
    return out


def schedule(n_small: int, n_large: int) -> list[tuple[int, int]]:
    """(body index, items) per slot: blocks of small, small, large in a seeded random order,
    cycling through the bodies; small bodies are indices ``0..n_small-1``."""
    rng = random.Random(SEED)
    out: list[tuple[int, int]] = []
    small = large = 0
    while len(out) < PUSHES:
        block = [SMALL, SMALL, LARGE]
        rng.shuffle(block)
        for items in block:
            if items == SMALL:
                out.append((small % n_small, SMALL))
                small += 1
            else:
                out.append((n_small + large % n_large, LARGE))
                large += 1
    return out[:PUSHES]


def send_all(url: str, bodies: list[bytes], slots: list[tuple[int, int]]) -> list[Push]:
    """Push every slot at its time on one keep-alive connection; never more than 90 s."""
    host_port = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host_port, timeout=10)
    pushes: list[Push] = []
    start = time.monotonic_ns() + 100_000_000
    deadline = time.monotonic() + 90
    try:
        for seq, (body, items) in enumerate(slots):
            target = start + seq * INTERVAL_NS
            if (wait := target - time.monotonic_ns()) > 0:
                time.sleep(wait / 1e9)
            headers = {**push_headers(TENANT), SEQ_HEADER: str(seq)}
            sent = time.monotonic_ns()
            conn.request("POST", PUSH_PATH, body=bodies[body], headers=headers)
            resp = conn.getresponse()
            resp.read()
            done = time.monotonic_ns()
            retry_after = resp.getheader("retry-after")
            pushes.append(Push(seq, body, items, target, sent, done, resp.status, retry_after))
            assert time.monotonic() < deadline, f"only {seq + 1} pushes in 90 s"
    finally:
        conn.close()
    return pushes


def rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def replay_at_send(pushes: list[Push]) -> tuple[list[bool], list[float]]:
    """The reference's decisions with every push at its send time, and how far (in ms of
    refill) each decision was from going the other way."""
    ref = ReferenceLimiter(RATE, BURST)
    decisions, margins_ms = [], []
    for p in pushes:
        margins_ms.append(float(abs(ref.tokens(p.sent_ns) - p.items)) * 1000 / RATE)
        decisions.append(ref.allow(p.items, p.sent_ns))
    return decisions, margins_ms


def replay_tolerant(pushes: list[Push]) -> tuple[list[bool], list[bool]]:
    """The reference's decisions where the push's timing settles them, else the edge's
    (see the module docstring); and which pushes were ambiguous."""
    ref = ReferenceLimiter(RATE, BURST)
    anchor_ns = pushes[0].done_ns - pushes[0].sent_ns
    decisions, ambiguous = [], []
    for p in pushes:
        if ref.full(p.sent_ns):  # a full bucket re-anchors the timeline at this push
            anchor_ns = p.done_ns - p.sent_ns
        early = ref.tokens(p.sent_ns - anchor_ns) >= p.items
        late = ref.tokens(p.done_ns) >= p.items and p.items <= BURST
        if early == late:
            ok = ref.allow(p.items, p.sent_ns) if early else False
        else:
            ok = p.status == 200 and ref.allow(p.items, p.done_ns)
        decisions.append(ok)
        ambiguous.append(early != late)
    return decisions, ambiguous


def judge(pushes: list[Push], reference: list[bool]) -> dict[str, float]:
    """Agreement of the edge's answers with ``reference``; a false deny is a push the edge
    refused and the reference allowed (rate: of the reference's allows), a false allow the
    converse (rate: of its denies)."""
    pairs = [(p.status == 200, ok, p.items) for p, ok in zip(pushes, reference, strict=True)]
    ref_allows = sum(ok for _, ok, _ in pairs)
    false_deny = sum(ok and not edge for edge, ok, _ in pairs)
    false_allow = sum(edge and not ok for edge, ok, _ in pairs)
    return {
        "agreement": rate(sum(edge == ok for edge, ok, _ in pairs), len(pairs)),
        "false_deny_rate": rate(false_deny, ref_allows),
        "false_allow_rate": rate(false_allow, len(pairs) - ref_allows),
        "false_denies": false_deny,
        "false_allows": false_allow,
        "allowed_pushes": ref_allows,
        "allowed_items": sum(n for _, ok, n in pairs if ok),
    }


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


@pytest.mark.parametrize("edge_allows_last", [False, True])
def test_tolerant_replay_settles_only_what_timing_settles(edge_allows_last: bool) -> None:
    ms = 1_000_000

    def push(seq: int, items: int, sent_ms: int, done_ms: int, status: int) -> Push:
        return Push(seq, 0, items, sent_ms * ms, sent_ms * ms, done_ms * ms, status, None)

    pushes = [
        push(0, LARGE, 0, 1, 200),  # a full bucket: 5250 -> 3250
        push(1, LARGE, 1, 2, 200),  # 3262.5 -> 1262.5
        push(2, LARGE, 2, 3, 200),  # 1287.5 at most: a false allow whatever the delay
        # 1975 at the send time (1962.5 a first-push window earlier), 2250 at the response.
        push(3, LARGE, 58, 80, 200 if edge_allows_last else 429),
    ]
    decisions, ambiguous = replay_tolerant(pushes)
    assert decisions == [True, True, False, edge_allows_last]
    assert ambiguous == [False, False, False, True]
    assert judge(pushes, decisions)["false_allows"] == 1
    assert replay_at_send(pushes)[0] == [True, True, False, False]


def test_edge_agrees_with_the_reference_limiter(
    tmp_path: Path, corpus: list[CorpusFile], record_property: Callable[[str, object], None]
) -> None:
    small, large = bodies_of(corpus, SMALL), bodies_of(corpus, LARGE)
    bodies = small + large
    slots = schedule(len(small), len(large))
    offered = sum(items for _, items in slots) * 10**9 / (PUSHES * INTERVAL_NS)
    assert offered == 2 * RATE
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(
        f"overrides:\n  {TENANT}:\n    ingestion_rate: {RATE}\n    ingestion_burst_size: {BURST}\n"
    )

    with (
        RecordingUpstream() as up,
        RlsProcess(tmp_path, "--overrides", str(overrides)) as rls,
        EnvoyProcess(config(up.port, rls.grpc_port, access_log=False)) as envoy,
    ):
        # Open Envoy's connections to the RLS and the upstream with another tenant first.
        warm = http.client.HTTPConnection(envoy.url.removeprefix("http://"), timeout=10)
        warm.request("POST", PUSH_PATH, body=small[0], headers=push_headers("warm-up"))
        assert warm.getresponse().status == 200
        warm.close()
        up.clear()

        pushes = send_all(envoy.url, bodies, slots)
        received = up.requests
        metric_allowed = rls.metric(
            f'rls_tenant_samples_total{{tenant="{TENANT}",decision="allow"}}'
        )
        metric_denied = rls.metric(
            f'rls_tenant_requests_total{{tenant="{TENANT}",decision="deny"}}'
        )

    assert {p.status for p in pushes} <= {200, 429}, sorted({p.status for p in pushes})
    assert all(p.retry_after for p in pushes if p.status == 429)
    edge_allowed = [p for p in pushes if p.status == 200]
    edge_items = sum(p.items for p in edge_allowed)
    at_send, margins_ms = replay_at_send(pushes)
    tolerant, ambiguous = replay_tolerant(pushes)
    strict_score, score = judge(pushes, at_send), judge(pushes, tolerant)
    late_ms = sorted((p.sent_ns - p.target_ns) / 1e6 for p in pushes)
    latency_ms = {
        s: sorted((p.done_ns - p.sent_ns) / 1e6 for p in pushes if p.status == s)
        for s in (200, 429)
    }
    summary = {
        "decisions": len(pushes),
        "timing_tolerant": score,
        "at_send_time": strict_score,
        "ambiguous": sum(ambiguous),
        "offered_items_per_s": offered,
        "ingestion_rate": RATE,
        "ingestion_burst_size": BURST,
        "edge_allowed_items": edge_items,
        "min_margin_ms": min(margins_ms),
        "median_margin_ms": statistics.median(margins_ms),
        "send_late_ms_p50_p99_max": [late_ms[len(late_ms) // 2], pct(late_ms, 0.99), late_ms[-1]],
        "response_ms_p50_p99_allowed": [pct(latency_ms[200], 0.5), pct(latency_ms[200], 0.99)],
        "response_ms_p50_p99_denied": [pct(latency_ms[429], 0.5), pct(latency_ms[429], 0.99)],
        "disagreements_at_send_time": [
            {**asdict(p), "reference_allowed": ok}
            for p, ok in zip(pushes, at_send, strict=True)
            if (p.status == 200) != ok
        ][:30],
    }
    out = tmp_path / "accuracy.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    record_property("accuracy", json.dumps({k: summary[k] for k in list(summary)[:-1]}))
    for name, sc in (("at send time", strict_score), ("timing-tolerant", score)):
        print(
            f"\naccuracy, {name}: {sc['agreement']:.2%} of {len(pushes)} decisions agree; "
            f"false deny {sc['false_deny_rate']:.2%} ({sc['false_denies']}), "
            f"false allow {sc['false_allow_rate']:.2%} ({sc['false_allows']}); allowed items "
            f"edge {edge_items} vs reference {sc['allowed_items']}",
            end="",
        )
    print(
        f"\n{sum(ambiguous)} pushes timing-ambiguous; closest decision on the schedule "
        f"{min(margins_ms):.1f} ms from flipping; details in {out}"
    )

    # The setup did what it says: about half the offered items pass.
    assert 0.45 <= score["allowed_items"] / sum(p.items for p in pushes) <= 0.6, summary
    assert score["agreement"] >= 0.99, summary
    assert abs(edge_items - score["allowed_items"]) <= max(p.items for p in pushes), summary
    # The RLS's own counters tell the same story as the responses.
    assert metric_allowed == edge_items
    assert metric_denied == len(pushes) - len(edge_allowed)
    # Every allowed push arrived once, byte-identical, in order; no denied push arrived.
    assert [(r.header(SEQ_HEADER), r.body) for r in received] == [
        (str(p.seq), bodies[p.body]) for p in edge_allowed
    ]
    if sum(ambiguous) > 0.1 * len(pushes):
        pytest.skip(f"machine too busy: {sum(ambiguous)} of {len(pushes)} decisions ambiguous")
