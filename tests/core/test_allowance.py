"""Learning the account's rate limit, and sharing it, on a virtual clock.

The calls go through the real call layer (:class:`ApiCalls` under a :class:`RateLimit`
with its :class:`Allowance`) to a simulated account: a strict sliding window of N accepted
calls in any T seconds, a trip of 10-50 ms to it, answers after 80-600 ms (a refusal at
once), and another client on the same account when a test says so. Every figure is exact
and replays: the clock is virtual and the randomness seeded.
"""

from __future__ import annotations

import asyncio
import collections
import random
from dataclasses import dataclass, field

import pytest

from bulkpost.core.allowance import (
    DOCUMENTED_MAXIMUM,
    PROBE_AFTER,
    Allowance,
    RateSpec,
    Sent,
    said_limit,
)
from bulkpost.core.response import Classified, Verdict
from bulkpost.delivery.calls import ApiCalls, DeliverySettings
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.stop import StopSignal
from tests.clock import run_virtual

MARGIN = 0.1  # the default margin at a 5-second period


@dataclass
class Account:
    """A strict sliding window: at most ``calls`` accepted in any ``period`` seconds."""

    calls: int
    period: float
    said: RateSpec | None = None  # what the refusal's text names (None: the real limit)
    silent: bool = False  # the refusal names no limit at all (a bare 403)
    accepted: collections.deque[float] = field(default_factory=collections.deque)
    ours: list[float] = field(default_factory=list)  # our accepted calls' arrivals
    theirs: list[float] = field(default_factory=list)  # the other client's
    sends: list[float] = field(default_factory=list)  # when each of our calls left
    refused: int = 0  # our calls refused
    refused_at: list[float] = field(default_factory=list)  # when each was refused
    stray: set[int] = field(default_factory=set)  # our arrivals refused whatever the window

    def arrive(self, now: float, ours: bool = True) -> bool:
        while self.accepted and self.accepted[0] <= now - self.period:
            self.accepted.popleft()
        arrival = len(self.ours) + self.refused
        if len(self.accepted) >= self.calls or (ours and arrival in self.stray):
            self.refused += ours
            if ours:
                self.refused_at.append(now)
            return False
        self.accepted.append(now)
        (self.ours if ours else self.theirs).append(now)
        return True

    def text(self) -> str:
        if self.silent:
            return "Forbidden"
        said = self.said or RateSpec(self.calls, self.period)
        return f"API calls exceeded the limit of {said.calls} in {said.period:g} second(s)"

    def from_second(self) -> float:
        """Our accepted calls per second from the second to the last, of N/T."""
        ours = self.ours
        return (len(ours) - 2) / (ours[-1] - ours[1]) / (self.calls / self.period)

    def used(self, start: float, end: float) -> float:
        """Our accepted calls per second between two moments, as a fraction of N/T."""
        inside = [t for t in self.ours if start <= t < end]
        return (len(inside) - 1) / (inside[-1] - inside[0]) / (self.calls / self.period)


def learning_limit(start: RateSpec = DOCUMENTED_MAXIMUM, *, learnt: bool = False,
                   probe_after: float = PROBE_AFTER) -> RateLimit:
    return RateLimit(start, MARGIN, Allowance(start, learning=True, learnt=learnt,
                                              jitter=MARGIN,
                                              probe_after=probe_after))


async def post(limit: RateLimit, account: Account, count: int, *, workers: int = 20,
               seed: int = 1, other: tuple[float, float, float] | None = None,
               trip: tuple[float, float] = (0.01, 0.05)) -> ApiCalls:
    """Make ``count`` calls through the call layer, ``workers`` at a time; ``other``:
    another client calling at (start, stop, calls per second) on the same account."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    calls = ApiCalls(DeliverySettings(5, 1.0, 30.0, 900.0), limit, StopSignal())
    begin = loop.time()

    async def one_call() -> tuple[Classified, None]:
        account.sends.append(loop.time() - begin)
        await asyncio.sleep(rng.uniform(*trip))  # the trip to the server
        if not account.arrive(loop.time() - begin):
            return Classified(Verdict.RATE_LIMITED, 429, error=account.text(),
                              error_type="MXAPIRateLimitExceededException"), None
        await asyncio.sleep(rng.uniform(0.08, 0.6))
        return Classified(Verdict.POSTED, 200, activity_id="A"), None

    todo = list(range(count))

    async def worker() -> None:
        while todo:
            todo.pop()
            await calls.call(one_call)

    async def other_client(start: float, stop: float, per_second: float) -> None:
        await asyncio.sleep(start)
        while loop.time() - begin < stop:
            account.arrive(loop.time() - begin, ours=False)
            await asyncio.sleep(1 / per_second)

    extra = [other_client(*other)] if other else []
    await asyncio.gather(*(worker() for _ in range(workers)), *extra)
    return calls


@pytest.mark.parametrize(("calls", "count"), [(10, 300), (2, 60), (5, 150), (20, 500)])
def test_a_run_without_a_rate_learns_the_plan_and_uses_nearly_all_of_it(calls: int,
                                                                         count: int) -> None:
    account = Account(calls, 5.0)
    limit = learning_limit()
    made = run_virtual(post(limit, account, count))
    assert limit.allowance.ceiling == calls and limit.allowance.learnt
    assert account.refused == made.counts.rate_limited <= 5
    assert account.used(0, 1e9) >= 0.93


@pytest.mark.parametrize("said", [RateSpec(25, 5.0), RateSpec(5, 5.0), RateSpec(40, 5.0),
                                  RateSpec(10, 60.0)])
def test_a_429_text_naming_another_limit_is_not_believed(said: RateSpec) -> None:
    account = Account(10, 5.0, said=said)
    limit = learning_limit()
    made = run_virtual(post(limit, account, 300))
    assert limit.allowance.ceiling == 10 and limit.allowance.learnt
    assert made.counts.rate_limited <= 10
    assert account.used(0, 1e9) >= 0.85


def test_a_limit_learnt_earlier_is_used_from_the_first_call_without_a_429() -> None:
    account = Account(10, 5.0)
    limit = learning_limit(RateSpec(10, 5.0), learnt=True)
    run_virtual(post(limit, account, 200))
    assert account.refused == 0 and limit.allowance.ceiling == 10
    assert account.used(0, 1e9) >= 0.95


def test_a_stray_429_lowers_the_share_for_a_while_but_teaches_no_limit() -> None:
    account = Account(25, 5.0, stray={3})  # the 4th call is refused, the window not full
    limit = learning_limit()
    made = run_virtual(post(limit, account, 400))
    # The stray one taught nothing; the probe above 25 met the window once and taught 25.
    assert made.counts.rate_limited == 2
    assert account.refused_at[0] < 1.0 and account.refused_at[1] > 10.0
    assert limit.allowance.ceiling == 25 and limit.allowance.learnt
    assert limit.spec.calls == 25  # the share climbed back
    assert account.used(20, 1e9) >= 0.95


def test_a_given_rate_is_never_lowered_by_the_answers_but_its_share_yields() -> None:
    account = Account(10, 5.0)  # the plan allows less than the rate given
    limit = RateLimit(RateSpec(25, 5.0), MARGIN)
    made = run_virtual(post(limit, account, 300))
    assert limit.allowance.ceiling == 25 and not limit.allowance.learnt
    # Each climb back toward 25 meets the window again: a 429 every few windows, while
    # the old whole-window pause lost a third of the allowance.
    assert account.used(0, 1e9) >= 0.85
    assert made.counts.rate_limited <= 30


@pytest.mark.parametrize("learning", [True, False])
def test_beside_another_client_it_takes_nearly_all_that_is_left_and_recovers(
        learning: bool) -> None:
    account = Account(25, 5.0)
    limit = learning_limit() if learning else RateLimit(RateSpec(25, 5.0), MARGIN)
    # Alone for 60 s, then another client spends half the allowance for 20 s.
    made = run_virtual(post(limit, account, 700, other=(60.0, 80.0, 2.5)))
    left = 5.0 - len(account.theirs) / 20.0
    during = [t for t in account.ours if 60.0 <= t < 80.0]
    assert len(during) / 20.0 / left >= 0.85
    # Recovered: the whole allowance again within 15 s of the other client's last call.
    assert account.used(95.0, 1e9) >= 0.95
    assert limit.allowance.ceiling == 25  # sharing taught no limit
    assert made.counts.rate_limited <= 15


def test_never_more_calls_in_a_window_than_the_learnt_limit_once_learnt() -> None:
    """What the run sends (refused calls included), once the first window has taught it
    the limit: never more than the limit in any window of the limit's own length."""
    account = Account(10, 5.0)
    limit = learning_limit()
    run_virtual(post(limit, account, 150))
    assert limit.allowance.ceiling == 10 and account.sends[-1] > 60
    later = [t for t in account.sends if t >= 3.0]  # 10 calls at 0.2 s, then the lesson
    for i, start in enumerate(later):
        assert sum(1 for t in later[i:i + 11] if t < start + 5.0 + MARGIN) <= 10


def test_a_limit_learnt_beside_another_client_is_probed_and_outgrown_once_it_stops() -> None:
    """While another client steadily takes 5 of the plan's 25, every answer says the plan
    is 20: that is what the run learns. Once the other stops, the probe finds out."""
    other = (0.0, 100.0, 1.0)
    early = Account(25, 5.0)
    limit = learning_limit(probe_after=120.0)
    run_virtual(post(limit, early, 250, other=other))
    assert limit.allowance.learnt and limit.allowance.ceiling < 25  # indistinguishable
    account = Account(25, 5.0)
    limit = learning_limit(probe_after=120.0)
    made = run_virtual(post(limit, account, 1300, other=other))
    # The probe climbed past the wrong limit to the plan's and met its window: learnt.
    assert limit.allowance.ceiling == 25 and limit.allowance.learnt
    probe = 120.0 + 10.0  # quiet at the wrong limit from the first window, then the probe
    assert account.used(probe + 15.0, 1e9) >= 0.95
    assert made.counts.rate_limited <= 10


def test_a_learnt_limit_that_holds_costs_one_probe_429_now_and_then() -> None:
    account = Account(10, 5.0)
    limit = learning_limit(RateSpec(10, 5.0), learnt=True, probe_after=60.0)
    made = run_virtual(post(limit, account, 3000))  # about 1,500 s
    assert limit.allowance.ceiling == 10 and limit.allowance.learnt
    # Probes at 60, 180, 420 and 900 s: each meets the window once (maybe twice in flight).
    assert 4 <= made.counts.rate_limited <= 8
    assert account.used(0, 1e9) >= 0.95


def test_a_slot_a_smaller_share_dropped_before_it_left_still_counts() -> None:
    """A call granted a slot, then held (its claim's fsync) while a 429 shrinks the share
    from 25 to 2: when it leaves, it counts, and no window holds more than 2 after."""
    async def scenario() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        limit = learning_limit()
        sends: list[float] = []
        held = None
        for index in range(25):
            slot = await limit.reserve()
            if index == 22:
                held = slot
            else:
                slot.sending()
                slot.release()
                sends.append(loop.time())
        assert held is not None
        allowance = limit.allowance
        allowance.share = allowance._base = 2
        allowance._limited_at = loop.time() + 100  # held at 2
        shrunk_at = loop.time()
        for index in range(8):
            slot = await limit.reserve()
            slot.sending()
            slot.release()
            sends.append(loop.time())
            if index == 0:
                held.sending()
                held.release()
                sends.append(loop.time())
        return sorted(t for t in sends if t >= shrunk_at), limit.spec.calls

    after, share = run_virtual(scenario())
    assert share == 2
    for i, start in enumerate(after):
        assert sum(1 for t in after[i:] if t < start + 5.0 + MARGIN - 1e-9) <= 2


# -- limits above the documented maximum: the climb ----------------------------------------
def test_an_account_allowing_72_is_found_and_used_with_one_refusal() -> None:
    """A live answer read "exceeded the limit of 72 in 5 second(s)": with the defaults,
    a 1,200-row load starts at the documented 25, climbs one call over what the account
    has proven as fast as the answers come, and stops at the one refusal that names 72."""
    account = Account(72, 5.0)
    limit = learning_limit()
    made = run_virtual(post(limit, account, 1200))
    assert limit.allowance.ceiling == 72 and limit.allowance.learnt
    assert account.from_second() >= 0.8
    assert made.counts.rate_limited == account.refused <= 10
    assert account.refused == 1


@pytest.mark.parametrize("calls", [40, 72, 150])
def test_a_climb_costs_one_refusal_and_no_window_holds_more_than_one_over(calls: int) -> None:
    account = Account(calls, 5.0)
    limit = learning_limit()
    run_virtual(post(limit, account, calls * 20, workers=64))
    assert limit.allowance.ceiling == calls and account.refused == 1
    sends = account.sends  # refused calls included, as our clock sent them
    for i, start in enumerate(sends):
        assert sum(1 for t in sends[i:i + calls + 2] if t < start + 5.0 + MARGIN) <= calls + 1


@pytest.mark.parametrize(("calls", "count"), [(25, 600), (10, 600)])
def test_at_25_and_10_the_climb_costs_one_refusal_and_nearly_nothing_else(
        calls: int, count: int) -> None:
    account = Account(calls, 5.0)
    limit = learning_limit()
    run_virtual(post(limit, account, count))
    assert limit.allowance.ceiling == calls and limit.allowance.learnt
    assert account.refused == 1
    assert account.from_second() >= 0.97


@pytest.mark.parametrize("account", [Account(72, 5.0, said=RateSpec(25, 5.0)),
                                     Account(72, 5.0, silent=True)],
                         ids=["text names 25", "text names nothing"])
def test_a_text_that_lies_or_says_nothing_costs_a_second_probe_not_the_limit(
        account: Account) -> None:
    limit = learning_limit()
    run_virtual(post(limit, account, 1200))
    assert limit.allowance.ceiling == 72 and limit.allowance.learnt
    assert account.refused == 2  # the second probe's 429 at the same count corroborates
    assert account.from_second() >= 0.75


@pytest.mark.parametrize("calls", [20, 72])
def test_arrivals_spread_by_latency_never_prove_a_call_too_many(calls: int) -> None:
    """Trips of 5 to 95 ms: calls our clock puts within 5 s may reach the server over more.
    Judged against what is certain, the climb ends at the plan's limit with one refusal
    (two when the text names 25 whatever the plan), never a ceiling one call too high met
    by a 429 every few windows."""
    for said in (None, RateSpec(25, 5.0)):
        account = Account(calls, 5.0, said=said)
        limit = learning_limit()
        run_virtual(post(limit, account, calls * 25, seed=3, trip=(0.005, 0.095)))
        assert limit.allowance.ceiling == calls and limit.allowance.learnt
        assert account.refused == (1 if said is None else 2)
        assert limit.allowance.surely <= calls


def test_a_limit_learnt_while_taking_a_share_is_not_kept_as_the_plan() -> None:
    """Under --share another client is expected on the account: two 429s with our 15 calls
    in the window may be its doing. The run takes them into account (learnt_held), and a
    later run does not start at them (tests/runner/test_limits.py)."""
    allowance = Allowance(DOCUMENTED_MAXIMUM, learning=True, jitter=MARGIN)
    allowance.held = True
    now = 0.0
    for _ in range(2):
        calls = [Sent(now + i * 0.3) for i in range(16)]
        for call in calls:
            allowance.sent(call)
        for call in calls[:15]:
            allowance.answered(call, False, now + 4.9)
        allowance.answered(calls[15], True, now + 4.9, RateSpec(25, 5.0))
        now += 20
    assert allowance.ceiling == 15 and allowance.learnt and allowance.learnt_held


def test_a_text_naming_more_than_the_learnt_limit_starts_a_probe_early() -> None:
    """A limit of 25 learnt earlier, the plan upgraded to 72: another client's calls make
    one of ours meet the window, and its text names 72. Not believed, but probed at once
    instead of after ten minutes."""
    account = Account(72, 5.0)
    limit = learning_limit(RateSpec(25, 5.0), learnt=True)
    made = run_virtual(post(limit, account, 1500, other=(20.0, 22.0, 40.0)))
    assert limit.allowance.ceiling == 72 and limit.allowance.learnt
    assert account.used(60.0, 1e9) >= 0.9  # long before PROBE_AFTER
    assert made.counts.rate_limited <= 10


def test_a_text_seen_lying_is_no_hint() -> None:
    allowance = Allowance(DOCUMENTED_MAXIMUM, learning=True, jitter=MARGIN)
    for at in range(10):
        call = Sent(at * 0.1)
        allowance.sent(call)
        allowance.answered(call, False, at * 0.1 + 0.05)
    refused = Sent(1.0)
    allowance.sent(refused)
    allowance.answered(refused, True, 1.0, RateSpec(72, 5.0))  # 10 of ours filled it
    assert allowance.texts_lie and allowance.hint is None


def test_a_given_rate_never_climbs() -> None:
    account = Account(72, 5.0)
    limit = RateLimit(RateSpec(25, 5.0), MARGIN)
    run_virtual(post(limit, account, 400))
    assert account.refused == 0 and limit.allowance.ceiling == 25
    sends = account.sends
    for i, start in enumerate(sends):
        assert sum(1 for t in sends[i:i + 27] if t < start + 5.0 + MARGIN) <= 25


def test_a_limit_above_25_learnt_earlier_is_used_from_the_first_call() -> None:
    account = Account(72, 5.0)
    limit = learning_limit(RateSpec(72, 5.0), learnt=True)
    run_virtual(post(limit, account, 1200))
    assert account.refused == 0 and limit.allowance.ceiling == 72
    assert account.from_second() >= 0.95


# -- the pure parts ----------------------------------------------------------------------
@pytest.mark.parametrize(("text", "said"), [
    ("API calls exceeded the limit of 25 in 5 second(s)", RateSpec(25, 5.0)),
    ("api calls exceeded the LIMIT OF 10 in 5 seconds", RateSpec(10, 5.0)),
    ("Rate limit exceeded", None), ("", None), ("limit of 0 in 5 second(s)", None),
])
def test_said_limit_reads_what_the_text_names(text: str, said: RateSpec | None) -> None:
    assert said_limit(text) == said


def _sent(allowance: Allowance, at: float) -> Sent:
    call = Sent(at)
    allowance.sent(call)
    return call


def test_a_429_corroborated_by_a_second_one_teaches_the_limit() -> None:
    allowance = Allowance(RateSpec(25, 5.0), learning=True, jitter=0.1)
    calls = [_sent(allowance, 0.2 * i) for i in range(12)]
    for call in calls[:10]:
        allowance.answered(call, False, 3.0)
    first = allowance.answered(calls[10], True, 2.1)
    assert first is not None and not first.learnt and first.counted == 10
    assert allowance.share_at(2.1) == 10 and allowance.ceiling == 25
    second = allowance.answered(calls[11], True, 2.3)
    assert second is not None and second.learnt and allowance.ceiling == 10


def test_the_text_corroborates_a_429_only_when_it_names_what_was_counted() -> None:
    allowance = Allowance(RateSpec(25, 5.0), learning=True, jitter=0.1)
    calls = [_sent(allowance, 0.2 * i) for i in range(11)]
    for call in calls[:10]:
        allowance.answered(call, False, 3.0)
    lesson = allowance.answered(calls[10], True, 2.1, said=RateSpec(10, 5.0))
    assert lesson is not None and lesson.learnt and allowance.ceiling == 10


def test_a_429_with_fewer_of_ours_than_proven_is_another_client_not_the_plan() -> None:
    allowance = Allowance(RateSpec(25, 5.0), learning=True, jitter=0.1)
    alone = [_sent(allowance, 0.2 * i) for i in range(25)]
    for call in alone:
        allowance.answered(call, False, 6.0)
    assert allowance.proven == 25
    late = [_sent(allowance, 10 + 0.4 * i) for i in range(13)]
    for call in late[:12]:
        allowance.answered(call, False, 16.0)
    lesson = allowance.answered(late[12], True, 15.0, said=RateSpec(12, 5.0))
    assert lesson is not None and not lesson.learnt
    assert allowance.ceiling == 25 and allowance.share_at(15.0) == 12
    # A whole period without a 429, then 1, 3, 7… more each half period, up to 25.
    assert allowance.share_at(19.9) == 12
    assert [allowance.share_at(t) for t in (20.0, 22.5, 25.0, 27.5)] == [13, 15, 19, 25]
