"""The rate limit on a virtual clock: never N+1 calls in any window, full allowance used."""

from __future__ import annotations

import asyncio

import pytest
from aiolimiter import AsyncLimiter

from bulkpost.core.allowance import RateSpec, parse_rate
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.errors import UsageError
from tests.clock import run_virtual


def most_in_any_window(times: list[float], period: float) -> int:
    """The most starts inside any closed window [t, t + period]."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] > period:
            start += 1
        best = max(best, end - start + 1)
    return best


async def _starts(acquire: object, calls: int, workers: int = 30,
                  busy: float = 0.3) -> list[float]:
    """When each of ``calls`` starts, ``workers`` at a time, each ``busy`` seconds after."""
    loop = asyncio.get_running_loop()
    times: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(calls):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await acquire()  # type: ignore[operator]
            times.append(loop.time())
            await asyncio.sleep(busy)  # latency: the worker is busy for a while

    await asyncio.gather(*(worker() for _ in range(workers)))
    return times


@pytest.mark.parametrize(("text", "calls", "period"), [
    ("25/5s", 25, 5.0), ("10/5", 10, 5.0), ("2/5s", 2, 5.0), ("100/1m", 100, 60.0),
    (" 20 / 5 s ", 20, 5.0), ("5/0.5s", 5, 0.5),
])
def test_parse_rate(text: str, calls: int, period: float) -> None:
    assert parse_rate(text) == RateSpec(calls, period)


@pytest.mark.parametrize("text", ["", "25", "x/5s", "0/5s", "25/0s", "-1/5s", "25/5h"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(text)


def test_checker_catches_plain_aiolimiter_burst() -> None:
    """The measured fact: AsyncLimiter(25, 5) as-is puts 49 calls in the first window."""

    async def scenario() -> list[float]:
        limiter = AsyncLimiter(25, 5)
        return await _starts(limiter.acquire, 100, workers=60)

    assert most_in_any_window(run_virtual(scenario()), 5.0) >= 45


@pytest.mark.parametrize("spec", [RateSpec(25, 5), RateSpec(10, 5), RateSpec(2, 5),
                                  RateSpec(100, 1)])
def test_never_more_than_n_in_any_window_and_full_allowance(spec: RateSpec) -> None:
    async def scenario() -> list[float]:
        limit = RateLimit(spec)
        return await _starts(limit.acquire, spec.calls * 8, workers=spec.calls + 5)

    times = run_virtual(scenario())
    assert most_in_any_window(times, spec.period) <= spec.calls
    # Margin counted too: N+1 consecutive starts span at least T + 2% of T.
    ordered = sorted(times)
    spans = [ordered[i + spec.calls] - ordered[i] for i in range(len(ordered) - spec.calls)]
    assert min(spans) >= spec.period * 1.02 - 1e-9
    sustained = (len(ordered) - 1) / (ordered[-1] - ordered[0])
    assert sustained >= 0.95 * spec.per_second


def test_window_holds_after_idle_and_after_a_pause() -> None:
    spec = RateSpec(25, 5)

    async def scenario() -> list[float]:
        limit = RateLimit(spec, margin=0.1)
        first = await _starts(limit.acquire, 40)
        await asyncio.sleep(60)  # idle: a leaky bucket with room for N would burst here
        second = await _starts(limit.acquire, 40)
        limit.pause(7.5)
        paused_at = asyncio.get_running_loop().time()
        third = await _starts(limit.acquire, 40)
        assert min(third) >= paused_at + 7.5
        return first + second + third

    times = run_virtual(scenario())
    assert most_in_any_window(times, spec.period) <= spec.calls


def test_pause_during_wait_is_honoured() -> None:
    spec = RateSpec(5, 1)

    async def scenario() -> tuple[float, list[float]]:
        limit = RateLimit(spec, margin=0.0)
        loop = asyncio.get_running_loop()
        waiters = [asyncio.create_task(limit.acquire()) for _ in range(10)]
        times: list[float] = []
        for waiter in waiters:
            waiter.add_done_callback(lambda _t: times.append(loop.time()))
        await asyncio.sleep(0.5)
        limit.pause()  # one whole window (1 s) from now
        paused_until = loop.time() + 1.0
        await asyncio.gather(*waiters)
        return paused_until, times

    paused_until, times = run_virtual(scenario())
    started_late = [t for t in times if t > 0.5 + 1000.0]
    assert started_late and min(started_late) >= paused_until - 1e-9
    assert most_in_any_window(times, 1.0) <= 5


def test_the_log_keeps_only_starts_inside_the_window() -> None:
    """A lifted limit (N of a million) must not hold a million starts in memory."""
    limit_box: list[RateLimit] = []

    async def scenario() -> tuple[list[float], int]:
        limit = RateLimit(RateSpec(1_000_000, 1.0))
        limit_box.append(limit)
        times = await _starts(limit.acquire, 3000, workers=10)
        return times, len(limit._starts)

    times, kept = run_virtual(scenario())
    assert len(times) == 3000
    # Workers are busy 0.3 s per call: about 10 calls per 0.3 s, so ~35 in a 1.02 s window.
    assert kept <= 50
    assert kept == sum(1 for t in times if t > max(times) - limit_box[0].window)


async def _prepared_sends(limit: RateLimit, calls: int, stamp: bool) -> list[float]:
    """Workers that take a slot, then prepare (a claim's fsync: 0-300 ms) before sending."""
    import random

    draw = random.Random(5)

    async def send() -> None:
        slot = await limit.reserve()
        try:
            await asyncio.sleep(draw.choice((0.0, 0.0, 0.3)))
            if stamp:
                slot.sending()
        finally:
            slot.release()

    return await _starts(send, calls, workers=12, busy=0.2)


def test_a_call_counts_from_when_it_leaves_not_from_its_grant() -> None:
    spec = RateSpec(5, 1.0)

    async def scenario(stamp: bool) -> list[float]:
        return await _prepared_sends(RateLimit(spec, margin=0.0), 80, stamp)

    unstamped = run_virtual(scenario(False))
    # The checker sees the danger: slots counted from the grant let sends crowd together.
    assert most_in_any_window(unstamped, spec.period) > spec.calls
    sends = run_virtual(scenario(True))
    assert len(sends) == 80
    assert most_in_any_window(sends, spec.period) <= spec.calls
    rate = (len(sends) - 1) / (max(sends) - min(sends))
    assert rate >= 0.85 * spec.per_second


def test_a_slot_never_sent_keeps_its_grant_time() -> None:
    async def scenario() -> tuple[float, float]:
        limit = RateLimit(RateSpec(1, 1.0), margin=0.0)
        loop = asyncio.get_running_loop()
        first = await limit.reserve()
        granted = loop.time()
        first.release()  # given up (the run stopping): the next call waits from the grant
        await limit.acquire()
        return granted, loop.time()

    granted, second = run_virtual(scenario())
    assert second - granted == pytest.approx(1.0, abs=1e-3)


def test_the_storm_clock_runs_while_answers_are_all_rate_limited_and_stops_at_any_other() -> None:
    async def scenario() -> list[float]:
        limit = RateLimit(RateSpec(5, 1.0))
        seen = [limit.rate_limited()]  # the first of a storm
        await asyncio.sleep(7.5)
        seen.append(limit.rate_limited())
        limit.answered()  # any other answer: the storm is over
        await asyncio.sleep(3.0)
        seen.append(limit.rate_limited())  # a new storm starts its own clock
        await asyncio.sleep(2.0)
        seen.append(limit.rate_limited())
        return seen

    assert run_virtual(scenario()) == pytest.approx([0.0, 7.5, 0.0, 2.0])
