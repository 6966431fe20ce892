"""Single-row delivery on a virtual clock, with a fake client and a real results file.

Each test scripts the API's answers (:mod:`tests.fakes`), delivers rows through the
:class:`Delivery` the pipeline uses, and checks what was sent, in which order and when (in
virtual seconds), and what the results file says of each row afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.activity import Activity, content_hash
from bulkpost.core.allowance import RateSpec
from bulkpost.core.attempts import Job
from bulkpost.core.reconcile import Reading
from bulkpost.core.response import Classified, Verdict
from bulkpost.core.results_line import RowOutcome
from bulkpost.core.statuses import Status
from bulkpost.delivery.calls import DeliverySettings
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.single import Delivery
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import AbortRun, BulkpostError
from bulkpost.storage.results import ResultsLog
from bulkpost.storage.results_file import read_outcomes
from tests.clock import run_virtual
from tests.fakes import OK, POSTED, SECRET, FakeClient, inline_threads, rate_limited, retry

LEAD = "3c6ef372-fe94-4f3a-a54f-f53a5f1d36f1"
WHEN = "2024-03-01 10:00:00"
SLACK = 0.05  # rate-limit spacing and loop turns, in virtual seconds
# Look-ups as an earlier run learned them: "not found" is trusted.
FAST = RateSpec(100, 1)  # spacing ~0.01 s: the limit is not what most tests measure
CALIBRATED = Reading(calibrated=True, created_on="posted", entities="none", offset="rows",
                     record_count="total")


def _row(n: int) -> Activity:
    body = {"RelatedProspectId": LEAD, "ActivityEvent": 301, "ActivityNote": f"note {n}",
            "ActivityDateTime": WHEN, "Fields": [{"SchemaName": "mx_Custom_1", "Value": f"K{n}"}]}
    data = json.dumps(body, separators=(",", ":")).encode()
    return Activity(n, f"K{n}", LEAD, data, content_hash(data), 301)


def _page(*rows: int) -> tuple[Classified, Any]:
    """A look-up's answer holding the activities created from these rows."""
    return OK, {"RecordCount": len(rows), "ProspectActivities": [
        {"Id": f"act-{n}", "EventCode": 301, "CreatedOn": WHEN, "ActivityNote": f"note {n}",
         "Data": {"mx_Custom_1": f"K{n}"}} for n in rows]}


class Run:
    """One run's delivery over a real results file, and what it stopped for."""

    def __init__(self, tmp_path: Path, fake: FakeClient, *, spec: RateSpec = FAST,
                 attempts: int = 5, backoff: float = 1.0, max_rate_limited: float = 120.0,
                 reading: Reading | None = None) -> None:
        self.path = tmp_path / "results.csv"
        self.fake = fake
        self.settings = DeliverySettings(attempts, backoff, 30.0, max_rate_limited)
        self.spec = spec
        self.reading = reading
        self.reasons: list[BulkpostError] = []
        self.elapsed = 0.0

    def __call__(self, scenario: Callable[[Delivery], Awaitable[Any]]) -> Any:
        """Run ``scenario`` with a fresh delivery on a virtual clock; return its result."""
        results = ResultsLog(self.path).open()

        async def main() -> Any:
            inline_threads()
            loop = asyncio.get_running_loop()
            stopping = StopSignal()
            stopping.listen(lambda: self.reasons.append(stopping.reason)
                            if stopping.reason and stopping.reason not in self.reasons
                            else None)
            self.delivery = Delivery(self.settings, RateLimit(self.spec), self.fake.as_client(),
                                     results, stopping, reading=self.reading)
            started = loop.time()
            try:
                return await scenario(self.delivery)
            finally:
                self.elapsed = loop.time() - started

        try:
            return run_virtual(main())
        finally:
            results.close()

    def lines(self, row: int) -> list[RowOutcome]:
        """Every line the results file holds for ``row``, in order."""
        return [outcome for outcome in read_outcomes(self.path) if outcome.row == row]


def test_a_retryable_answer_then_success_is_posted_with_two_attempts_one_backoff_apart(
        tmp_path: Path) -> None:
    run = Run(tmp_path, FakeClient(posts=[retry(), POSTED]), backoff=2.0)
    assert run(lambda delivery: delivery.rows.deliver(Job(_row(1)))) is Status.POSTED
    lines = run.lines(1)
    assert [(line.status, line.attempts) for line in lines] == [
        (Status.UNKNOWN, 1), (Status.UNKNOWN, 2), (Status.POSTED, 2)]  # marked before each
    assert lines[-1].activity_id == "act-new" and lines[-1].error == ""
    assert run.fake.methods() == ["post_activity"] * 2  # nothing was sent: no look-up
    first, second = run.fake.times("post_activity")
    assert 0.1 + 2.0 <= second - first <= 0.1 + 4.0 + SLACK  # backoff, jitter up to one more
    counts = run.delivery.calls.counts
    assert (counts.calls, counts.creates, counts.retries) == (2, 2, 1)
    assert counts.statuses == {Status.POSTED: 1}
    assert run.delivery.recorder.created == [(_row(1), "act-new")]


def test_after_an_uncertain_answer_the_row_is_looked_up_before_it_is_sent_again(
        tmp_path: Path) -> None:
    fake = FakeClient(posts=[retry(uncertain=True), POSTED], reads=[_page()])  # not found
    run = Run(tmp_path, fake, reading=CALIBRATED)
    assert run(lambda delivery: delivery.rows.deliver(Job(_row(1)))) is Status.POSTED
    assert fake.methods() == ["post_activity", "retrieve_activities", "post_activity"]
    assert run.lines(1)[-1].attempts == 2
    assert (run.delivery.calls.counts.reconciled, run.delivery.calls.counts.lookup_calls) == (1, 1)


def test_a_row_the_look_up_finds_is_posted_with_that_id_and_never_sent_again(
        tmp_path: Path) -> None:
    fake = FakeClient(posts=[retry(uncertain=True)], reads=[_page(9, 1)])
    run = Run(tmp_path, fake, reading=CALIBRATED)
    assert run(lambda delivery: delivery.rows.deliver(Job(_row(1)))) is Status.POSTED
    assert fake.methods() == ["post_activity", "retrieve_activities"]
    last = run.lines(1)[-1]
    assert (last.activity_id, last.error_type, last.attempts) == ("act-1", "reconciled", 1)
    assert run.delivery.calls.counts.found_posted == 1
    assert run.delivery.recorder.created == []  # found, not created as an answer said: no sample


@pytest.mark.parametrize("deferring", [False, True])
def test_an_uncertain_row_is_not_sent_again_while_look_ups_are_not_calibrated(
        tmp_path: Path, deferring: bool) -> None:
    fake = FakeClient(posts=[retry(uncertain=True), POSTED])

    async def scenario(delivery: Delivery) -> Status:
        delivery.rows.deferring = deferring
        return await delivery.rows.deliver(Job(_row(1)))

    run = Run(tmp_path, fake)
    assert run(scenario) is Status.UNKNOWN
    assert fake.methods() == ["post_activity"]
    last = run.lines(1)[-1]
    assert last.status is Status.UNKNOWN
    if deferring:  # set aside, to be looked up once calibrated: its in-flight line stays
        assert [job.activity.row for job in run.delivery.rows.deferred] == [1]
        assert run.delivery.rows.deferred[0].reconcile_first
        assert last.error_type == "" and not run.delivery.calls.counts.statuses
    else:
        assert last.error_type == "unverified" and "not calibrated yet" in last.error
        assert run.delivery.calls.counts.statuses == {Status.UNKNOWN: 1}


def test_a_rate_limit_storm_longer_than_max_rate_limited_stops_the_run(tmp_path: Path) -> None:
    fake = FakeClient(posts=[rate_limited(10.0)])
    run = Run(tmp_path, fake, max_rate_limited=30.0)
    assert run(lambda delivery: delivery.rows.deliver(Job(_row(1)))) is Status.FAILED
    assert len(run.reasons) == 1 and isinstance(run.reasons[0], AbortRun)
    assert "rate limited for 30 s" in str(run.reasons[0])
    assert len(fake.sent) == 4 and 30.0 < run.elapsed < 31.0
    # Every answer said "not created": failed (stopped), never unknown; no retry counted.
    last = run.lines(1)[-1]
    assert (last.status, last.error_type) == (Status.FAILED, "stopped")
    assert run.delivery.calls.counts.rate_limited == 4 and run.delivery.calls.counts.retries == 0


def test_a_stop_while_waiting_for_a_slot_leaves_the_row_pending(tmp_path: Path) -> None:
    fake = FakeClient(posts=[POSTED])
    run = Run(tmp_path, fake, spec=RateSpec(1, 10.0))

    async def scenario(delivery: Delivery) -> None:
        assert await delivery.rows.deliver(Job(_row(1))) is Status.POSTED
        waiting = asyncio.ensure_future(delivery.rows.deliver(Job(_row(2))))
        await asyncio.sleep(2.0)
        assert not waiting.done()  # its slot is 10 s after the first call
        delivery.calls.stopping.stop(AbortRun("interrupted by SIGINT"))
        await waiting

    run(scenario)
    assert len(fake.sent) == 1
    assert run.lines(2) == []  # never sent, nothing recorded: pending
    assert run.delivery.calls.counts.statuses == {Status.POSTED: 1}


def test_a_stop_during_a_backoff_records_the_row_failed_at_once(tmp_path: Path) -> None:
    fake = FakeClient(posts=[retry()])
    run = Run(tmp_path, fake, backoff=100.0)

    async def scenario(delivery: Delivery) -> Status:
        asyncio.get_running_loop().call_later(1.0, delivery.calls.stopping.stop, AbortRun("stop"))
        return await delivery.rows.deliver(Job(_row(1)))

    assert run(scenario) is Status.FAILED
    assert run.elapsed == pytest.approx(1.0, abs=SLACK)  # not the 100 s backoff
    last = run.lines(1)[-1]
    assert (last.status, last.error_type) == (Status.FAILED, "stopped")
    assert last.error == "stopped while retrying: connection refused"


def test_a_row_cancelled_while_on_the_wire_stays_unknown(tmp_path: Path) -> None:
    fake = FakeClient(posts=[POSTED], latency=5.0)
    run = Run(tmp_path, fake)

    async def scenario(delivery: Delivery) -> None:
        task = asyncio.ensure_future(delivery.rows.deliver(Job(_row(1))))
        await asyncio.sleep(1.0)
        assert task in delivery.calls.on_wire
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not delivery.calls.on_wire

    run(scenario)
    assert [line.status for line in run.lines(1)] == [Status.UNKNOWN]  # the in-flight mark
    assert run.delivery.calls.counts.statuses == {Status.UNKNOWN: 1}


def test_a_rejected_row_is_recorded_at_once_with_the_keys_scrubbed(tmp_path: Path) -> None:
    refused = Classified(Verdict.REJECTED, 400, error_type="MXInvalidInputException",
                         error=f"bad value (key {SECRET})")
    run = Run(tmp_path, FakeClient(posts=[refused]))
    assert run(lambda delivery: delivery.rows.deliver(Job(_row(1)))) is Status.REJECTED
    last = run.lines(1)[-1]
    assert (last.status, last.attempts, last.http_status) == (Status.REJECTED, 1, 400)
    assert last.error == "bad value (key ***)"
    assert SECRET not in run.path.read_text()


def test_a_fatal_answer_fails_the_row_and_stops_the_run(tmp_path: Path) -> None:
    fatal = Classified(Verdict.FATAL, 401, error_type="unauthorized", error="wrong keys")
    run = Run(tmp_path, FakeClient(posts=[fatal]))
    assert run(lambda delivery: delivery.rows.deliver(Job(_row(1)))) is Status.FAILED
    assert [str(reason) for reason in run.reasons] == ["wrong keys"]
    assert run.lines(1)[-1].error == "wrong keys"
