"""The call layer on a virtual clock, with a fake client: slots, retries, rate-limit storms.

Every request of a run goes through :class:`ApiCalls`; these tests drive it with scripted
answers (:mod:`tests.fakes`) and check what it waits for, what it retries, what it counts
and when it stops the run, exactly, in virtual seconds.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import Any

import pytest

from bulkpost.core.allowance import RateSpec
from bulkpost.core.response import Classified, Verdict
from bulkpost.delivery.calls import ApiCalls, DeliverySettings, LookupFailed, Stopped
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import AbortRun, BulkpostError
from tests.clock import run_virtual
from tests.fakes import OK, POSTED, FakeClient, rate_limited, retry

FAST = RateSpec(100, 1)  # spacing ~0.01 s: the limit is not what these tests measure
SLACK = 0.05  # rate-limit spacing and loop turns, in virtual seconds


def _calls(limit: RateLimit | None = None, *, attempts: int = 3, backoff: float = 1.0,
           max_rate_limited: float = 120.0) -> tuple[ApiCalls, list[BulkpostError]]:
    """An ApiCalls and every reason it was told to stop for."""
    stopping = StopSignal()
    reasons: list[BulkpostError] = []
    stopping.listen(lambda: reasons.append(stopping.reason) if stopping.reason else None)
    settings = DeliverySettings(attempts, backoff, 30.0, max_rate_limited)
    return ApiCalls(settings, limit or RateLimit(FAST), stopping), reasons


def _setting(fake: FakeClient) -> functools.partial[Any]:
    return functools.partial(fake.as_client().activity_setting, 7)


def test_a_look_up_answered_after_a_retry_waits_one_backoff_with_jitter() -> None:
    async def scenario() -> tuple[Any, FakeClient, ApiCalls]:
        fake = FakeClient(reads=[(retry(), None), (OK, {"Fields": []})])
        calls, _ = _calls(backoff=2.0)
        return await calls.lookup(_setting(fake)), fake, calls

    document, fake, calls = run_virtual(scenario())
    assert document == {"Fields": []}
    first, second = fake.times("activity_setting")
    # The answer's latency, then backoff * 2**0 plus a jitter of up to one backoff.
    assert 0.1 + 2.0 <= second - first <= 0.1 + 4.0 + SLACK
    assert calls.counts.calls == 2 and calls.counts.creates == 0


@pytest.mark.parametrize(("answers", "answered", "made"), [
    ([(retry(), None)], False, 3),  # no usable answer until the attempts were spent
    ([(Classified(Verdict.REJECTED, 400, error_type="MXInvalidInputException",
                  error="no such type"), None)], True, 1),  # refused: never retried
])
def test_a_look_up_that_cannot_be_had_fails_and_says_whether_it_was_answered(
        answers: list[tuple[Classified, Any]], answered: bool, made: int) -> None:
    async def scenario() -> tuple[LookupFailed, FakeClient]:
        fake = FakeClient(reads=answers)
        calls, reasons = _calls(attempts=3, backoff=0.5)
        with pytest.raises(LookupFailed) as failed:
            await calls.lookup(_setting(fake))
        assert not reasons
        return failed.value, fake

    failure, fake = run_virtual(scenario())
    assert failure.answered is answered
    assert len(fake.sent) == made


def test_a_fatal_answer_to_a_look_up_stops_the_run() -> None:
    async def scenario() -> list[BulkpostError]:
        fake = FakeClient(reads=[(Classified(Verdict.FATAL, 401, error="wrong keys"), None)])
        calls, reasons = _calls()
        with pytest.raises(Stopped):
            await calls.lookup(_setting(fake))
        assert calls.stopping.is_set() and len(fake.sent) == 1
        return reasons

    reasons = run_virtual(scenario())
    assert [str(reason) for reason in reasons] == ["wrong keys"]
    assert isinstance(reasons[0], AbortRun)


def test_rate_limited_answers_are_sat_out_not_counted_as_attempts() -> None:
    async def scenario() -> tuple[Any, FakeClient, ApiCalls]:
        fake = FakeClient(reads=[(rate_limited(7.0), None)] * 4 + [(OK, "found")])
        calls, reasons = _calls(attempts=1)  # one attempt: any retry would fail it
        document = await calls.lookup(_setting(fake))
        assert not reasons
        return document, fake, calls

    document, fake, calls = run_virtual(scenario())
    assert document == "found"
    times = fake.times("activity_setting")
    assert len(times) == 5
    for earlier, later in itertools.pairwise(times):
        assert 0.1 + 7.0 <= later - earlier <= 0.1 + 7.0 + SLACK  # the server's Retry-After
    assert calls.counts.rate_limited == 4 and calls.counts.calls == 5


def test_a_rate_limit_storm_longer_than_max_rate_limited_stops_the_run() -> None:
    async def scenario() -> tuple[list[BulkpostError], FakeClient, float]:
        fake = FakeClient(reads=[(rate_limited(10.0), None)])
        calls, reasons = _calls(max_rate_limited=30.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Stopped):
            await calls.lookup(_setting(fake))
        return reasons, fake, loop.time() - started

    reasons, fake, elapsed = run_virtual(scenario())
    assert len(reasons) == 1 and isinstance(reasons[0], AbortRun)
    assert "rate limited for 30 s without a success" in str(reasons[0])
    # Answers at 0.1 (the storm starts), 10.2, 20.3 and 30.4: over 30 s, no call after.
    assert len(fake.sent) == 4
    assert 30.0 < elapsed < 31.0


def test_any_other_answer_ends_the_storm_and_starts_its_clock_afresh() -> None:
    async def scenario() -> tuple[list[BulkpostError], FakeClient]:
        storm = [(rate_limited(10.0), None)] * 3  # 20 s of storm: under the 30 s allowed
        fake = FakeClient(reads=[*storm, (OK, 1), *storm, (OK, 2)])
        calls, reasons = _calls(max_rate_limited=30.0)
        assert await calls.lookup(_setting(fake)) == 1
        assert await calls.lookup(_setting(fake)) == 2
        return reasons, fake

    reasons, fake = run_virtual(scenario())
    assert reasons == [] and len(fake.sent) == 8


def test_a_create_counts_from_when_it_leaves_not_from_its_slot() -> None:
    """One call per 5 s: a create whose claim (before_sending) takes 3 s leaves at 3 s,
    and the next call may not leave before 3 s + the window."""

    async def scenario() -> tuple[list[float], ApiCalls, list[bool]]:
        fake = FakeClient(posts=[POSTED], reads=[(OK, None)])
        limit = RateLimit(RateSpec(1, 5.0))
        calls, _ = _calls(limit)
        on_wire: list[bool] = []
        fake.on_call = lambda _: on_wire.append(asyncio.current_task() in calls.on_wire)

        async def slow_claim() -> None:
            await asyncio.sleep(3.0)

        async def post() -> tuple[Classified, Any]:
            return await fake.as_client().post_activity(b"{}"), None

        loop = asyncio.get_running_loop()
        started = loop.time()
        await calls.call(post, before_sending=slow_claim)
        await calls.call(_setting(fake))
        return [at - started for at in [call.at for call in fake.sent]], calls, on_wire

    (create, look_up), calls, on_wire = run_virtual(scenario())
    assert create == pytest.approx(3.0, abs=SLACK)
    assert look_up >= 3.0 + 5.0 * 1.02 - 1e-9  # the window and its margin, from the leaving
    assert on_wire == [True, False]  # a create is on the wire until answered; a read is not
    assert not calls.on_wire
    assert (calls.counts.calls, calls.counts.creates) == (2, 1)


def test_a_stop_while_waiting_for_a_slot_sends_nothing() -> None:
    async def scenario() -> tuple[FakeClient, ApiCalls]:
        fake = FakeClient(reads=[(OK, "first")])
        calls, _ = _calls(RateLimit(RateSpec(1, 10.0)))
        assert await calls.lookup(_setting(fake)) == "first"
        waiting = asyncio.ensure_future(calls.lookup(_setting(fake)))
        await asyncio.sleep(2.0)
        assert not waiting.done()  # its slot is 10 s away
        calls.stopping.stop(AbortRun("interrupted by SIGINT"))
        with pytest.raises(Stopped):
            await waiting
        return fake, calls

    fake, calls = run_virtual(scenario())
    assert len(fake.sent) == 1 and calls.counts.calls == 1


def test_a_backoff_ends_at_once_when_the_run_stops() -> None:
    async def scenario() -> float:
        calls, _ = _calls()
        loop = asyncio.get_running_loop()
        started = loop.time()
        loop.call_later(1.5, calls.stopping.stop, AbortRun("interrupted by SIGINT"))
        await calls.backoff(600.0)
        return loop.time() - started

    assert run_virtual(scenario()) == pytest.approx(1.5, abs=0.01)


def test_the_stop_signal_keeps_the_first_reason_and_tells_each_listener_as_asked() -> None:
    async def scenario() -> tuple[StopSignal, list[str]]:
        stopping = StopSignal()
        heard: list[str] = []
        stopping.listen(lambda: heard.append("every"))
        stopping.listen(lambda: heard.append(f"once: {stopping.reason}"), once=True)
        waiter = asyncio.ensure_future(stopping.wait())
        await asyncio.sleep(0)
        assert not waiter.done() and not stopping.is_set()
        stopping.stop(AbortRun("interrupted by SIGINT"), asked=True)
        stopping.stop(AbortRun("wrong keys"))
        await waiter
        return stopping, heard

    stopping, heard = run_virtual(scenario())
    assert str(stopping.reason) == "interrupted by SIGINT" and stopping.asked
    assert heard == ["every", "once: interrupted by SIGINT", "every"]


def test_a_runs_calls_are_made_as_its_options_say(tmp_path: Any) -> None:
    from bulkpost.core.mapping import parse_mapping
    from bulkpost.core.options import RunOptions

    options = RunOptions(input=tmp_path / "in.csv", results=tmp_path / "r.csv",
                         mapping=parse_mapping({"activity": {"event": 201,
                                                             "lead_id_column": "lead"}}),
                         max_attempts=2, backoff=0.25, timeout=7.0, max_rate_limited=60.0)
    assert DeliverySettings.of(options) == DeliverySettings(2, 0.25, 7.0, 60.0)
