"""Delivery's state machines, on their own: answers in, the next step out. No I/O, no clock.

Each test feeds :class:`RowAttempts` or :class:`BatchAttempts` a script of answers and checks
every step it asks for, in order. The drivers that carry the steps out are tested with a
fake client in ``test_delivery.py`` and ``test_bulk.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bulkpost.core.activity import Activity, content_hash
from bulkpost.core.attempts import (
    BACKOFF_CAP,
    Backoff,
    BatchAttempts,
    Job,
    LookUp,
    Record,
    RowAttempts,
    RowState,
    RowStep,
    Send,
    SendBatch,
    SetAside,
    Wait,
)
from bulkpost.core.reconcile import SendWindow
from bulkpost.core.response import Classified, Verdict
from bulkpost.core.statuses import Status
from tests.fakes import POSTED, rate_limited, retry

LEAD = "3c6ef372-fe94-4f3a-a54f-f53a5f1d36f1"
REJECTED = Classified(Verdict.REJECTED, 400, error_type="MXInvalidInputException",
                      error="bad value")
FATAL = Classified(Verdict.FATAL, 401, error_type="unauthorized", error="wrong keys")
NOT_CREATED = Classified(Verdict.RETRY, 200, error="item not created")
OK = Classified(Verdict.OK, 200)


def _row(n: int = 1, *, uncertain: bool = False) -> RowState:
    data = json.dumps({"RelatedProspectId": LEAD, "ActivityEvent": 301,
                       "ActivityNote": f"note {n}"}).encode()
    job = Job(Activity(n, f"K{n}", LEAD, data, content_hash(data), 301),
              reconcile_first=uncertain)
    return RowState(job, uncertain=uncertain)


def _machine(row: RowState, attempts: int = 3, backoff: float = 1.0) -> RowAttempts:
    return RowAttempts(row, max_attempts=attempts, backoff=Backoff(backoff), timeout=30.0)


def _kind(step: RowStep) -> str:
    if isinstance(step, Record):
        return f"record {step.status.value}"
    return type(step).__name__.lower()


# -- one row -------------------------------------------------------------------------------
def test_a_row_is_sent_and_its_answer_recorded() -> None:
    row = _row()
    machine = _machine(row)
    assert machine.start() == Send(retry=False)
    step = machine.answered(POSTED)
    assert step == Record(Status.POSTED)  # Id, status and error from the answer
    assert (row.attempts, row.last) == (1, POSTED)


@pytest.mark.parametrize(("answer", "status", "stop_run"), [
    (REJECTED, Status.REJECTED, ""),
    (FATAL, Status.FAILED, "wrong keys"),
])
def test_a_refusal_is_recorded_at_once_and_a_fatal_one_stops_the_run(
        answer: Classified, status: Status, stop_run: str) -> None:
    machine = _machine(_row())
    machine.start()
    assert machine.answered(answer) == Record(status, stop_run=stop_run)


MX_AFTER = Classified(Verdict.REJECTED, 500, error_type="MXUnknownException",
                     error="An error occurred after saving", uncertain=True)


def test_a_refusal_not_proven_is_looked_up_after_a_backoff_and_found_posted() -> None:
    row = _row()
    machine = _machine(row)
    machine.start()
    step = machine.answered(MX_AFTER)
    assert isinstance(step, Wait) and 1.0 <= step.seconds <= 2.0
    assert isinstance(machine.waited(), LookUp)
    assert machine.looked_up("found-id") == Record(Status.POSTED, activity_id="found-id",
                                                   error_type="reconciled", error="")
    assert row.attempts == 1  # never sent again


def test_a_refusal_not_proven_and_not_found_is_rejected_never_sent_again() -> None:
    row = _row()
    machine = _machine(row, attempts=1)  # even on the last attempt: the look-up is owed
    machine.start()
    assert isinstance(machine.answered(MX_AFTER), Wait)
    assert isinstance(machine.waited(), LookUp)
    assert machine.looked_up(None) == Record(
        Status.REJECTED, error="An error occurred after saving (looked up: not created)")
    assert row.attempts == 1


def test_a_refusal_not_proven_whose_look_up_cannot_tell_leaves_the_row_unknown() -> None:
    machine = _machine(_row())
    machine.start()
    machine.answered(MX_AFTER)
    machine.waited()
    step = machine.lookup_failed("no answer", not_yet_trusted=False, may_set_aside=False)
    assert isinstance(step, Record) and step.status is Status.UNKNOWN


def test_an_update_refused_without_proof_is_sent_again_as_it_is_idempotent() -> None:
    row = _row()
    row.job = Job(row.job.activity, update_of="act-1")
    machine = _machine(row, attempts=2)
    machine.start()
    assert isinstance(machine.answered(MX_AFTER), Wait)
    assert machine.waited() == Send(retry=True)  # no look-up: an update is sent again
    step = machine.answered(MX_AFTER)
    assert isinstance(step, Record) and step.status is Status.FAILED  # attempts spent


def test_a_retryable_answer_backs_off_then_sends_again_until_the_attempts_are_spent() -> None:
    row = _row()
    machine = _machine(row, attempts=3, backoff=2.0)
    steps: list[RowStep] = [machine.start()]
    for _ in range(3):
        steps.append(machine.answered(retry()))
        if isinstance(steps[-1], Wait):
            steps.append(machine.waited())
    assert [_kind(step) for step in steps] == [
        "send", "wait", "send", "wait", "send", "record failed"]
    assert [step.retry for step in steps if isinstance(step, Send)] == [False, True, True]
    first, second = (step.seconds for step in steps if isinstance(step, Wait))
    assert 2.0 <= first <= 4.0 and 4.0 <= second <= 6.0  # 2**(n-1) backoffs, + one of jitter
    assert row.attempts == 3


def test_one_attempt_only_fails_the_row_on_the_first_retryable_answer() -> None:
    machine = _machine(_row(), attempts=1)
    machine.start()
    assert machine.answered(retry()) == Record(Status.FAILED)


def test_after_an_uncertain_answer_the_next_attempt_looks_up_first() -> None:
    row = _row()
    machine = _machine(row)
    machine.start()
    row.first_sent = row.last_sent = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert isinstance(machine.answered(retry(uncertain=True)), Wait)
    step = machine.waited()
    assert step == LookUp(SendWindow.around(row.first_sent, row.last_sent, 30.0))
    assert machine.looked_up(None) == Send(retry=True)  # not found: safe to send
    assert not row.uncertain
    assert machine.answered(POSTED) == Record(Status.POSTED)


def test_a_row_found_by_its_look_up_is_posted_with_that_id_and_never_sent() -> None:
    row = _row(uncertain=True)  # an earlier run may have created it
    machine = _machine(row)
    assert machine.start() == LookUp(None)
    assert machine.looked_up("act-7") == Record(Status.POSTED, activity_id="act-7",
                                                 error_type="reconciled", error="")
    assert row.attempts == 0


def test_a_look_up_that_cannot_tell_leaves_the_row_unknown_never_sent_on_a_guess() -> None:
    machine = _machine(_row(uncertain=True))
    machine.start()
    step = machine.lookup_failed("timed out", not_yet_trusted=False, may_set_aside=True)
    assert isinstance(step, Record) and step.status is Status.UNKNOWN
    assert step.error_type == "unverified" and "timed out" in (step.error or "")


@pytest.mark.parametrize("may_set_aside", [False, True])
def test_a_row_whose_look_up_waits_for_the_calibration_is_set_aside_only_while_calibrating(
        may_set_aside: bool) -> None:
    machine = _machine(_row(uncertain=True))
    machine.start()
    step = machine.lookup_failed("not calibrated yet", not_yet_trusted=True,
                                 may_set_aside=may_set_aside)
    if may_set_aside:
        assert isinstance(step, SetAside)
        assert step.job.reconcile_first and step.job.recorded_status is Status.UNKNOWN
    else:
        assert isinstance(step, Record) and step.status is Status.UNKNOWN


def test_the_attempts_count_the_look_up_and_its_send_as_one() -> None:
    machine = _machine(_row(uncertain=True), attempts=2)
    assert isinstance(machine.start(), LookUp)
    assert machine.looked_up(None) == Send(retry=False)
    assert isinstance(machine.answered(retry(uncertain=True)), Wait)  # attempt 1 of 2
    assert isinstance(machine.waited(), LookUp)
    assert machine.looked_up(None) == Send(retry=True)
    assert machine.answered(retry()) == Record(Status.FAILED)  # attempt 2 of 2


def test_the_backoff_doubles_with_a_jitter_of_one_backoff_and_stays_under_the_cap() -> None:
    backoff = Backoff(0.5)
    for failed in range(1, 12):
        wait = backoff.after(failed)
        base = min(0.5 * 2 ** (failed - 1), 0.5 * BACKOFF_CAP)
        assert base <= wait <= min(base + 0.5, 0.5 * BACKOFF_CAP)


# -- one bulk call -------------------------------------------------------------------------
def test_a_bulk_answer_records_what_it_accounts_for_and_sends_the_rest_alone() -> None:
    rows = [_row(n) for n in range(1, 5)]
    machine = BatchAttempts(rows, max_attempts=3, backoff=Backoff(1.0))
    assert machine.start() == SendBatch(rows, retries=0)
    after = machine.answered(rows, OK, [POSTED, REJECTED, None, POSTED])
    assert after.then is None and after.lifted and not after.refused
    assert [(row.job.activity.row, record.status) for row, record in after.records] == [
        (1, Status.POSTED), (2, Status.REJECTED), (4, Status.POSTED)]
    assert machine.alone == [rows[2]] and rows[2].uncertain  # not accounted for


def test_bulk_items_answered_not_created_go_again_in_bulk_after_a_backoff() -> None:
    rows = [_row(n) for n in range(1, 4)]
    machine = BatchAttempts(rows, max_attempts=2, backoff=Backoff(1.0))
    machine.start()
    after = machine.answered(rows, OK, [POSTED, NOT_CREATED, NOT_CREATED])
    assert isinstance(after.then, Wait) and 1.0 <= after.then.seconds <= 2.0
    again = machine.waited()
    assert again == SendBatch(rows[1:], retries=2)
    after = machine.answered(again.rows, OK, [NOT_CREATED, POSTED])
    # Attempts spent: "not created" every time, so failed (safe), never unknown.
    assert after.then is None
    assert [(row.job.activity.row, record.status) for row, record in after.records] == [
        (3, Status.POSTED), (2, Status.FAILED)]
    assert machine.alone == []


def test_bulk_items_rate_limited_go_again_at_once_without_an_attempt() -> None:
    rows = [_row(n) for n in range(1, 4)]
    machine = BatchAttempts(rows, max_attempts=1, backoff=Backoff(1.0))
    machine.start()
    limited = rate_limited(5.0)
    after = machine.answered(rows, OK, [POSTED, limited, limited])
    assert after.then == SendBatch(rows[1:], retries=0) and after.rate_limited == limited
    assert after.lifted  # one item went through: the storm clock stops
    assert [row.attempts for row in rows] == [1, 1, 1]
    after = machine.answered(rows[1:], OK, [limited, limited])
    assert after.then == SendBatch(rows[1:]) and not after.lifted  # still a storm
    after = machine.answered(rows[1:], OK, [POSTED, POSTED])
    assert after.then is None and len(after.records) == 2


@pytest.mark.parametrize(("http_status", "looked_up_first"), [(400, False), (500, True),
                                                              (200, True)])
def test_a_bulk_call_refused_as_a_whole_sends_its_rows_alone(
        http_status: int, looked_up_first: bool) -> None:
    rows = [_row(n) for n in range(1, 3)]
    machine = BatchAttempts(rows, max_attempts=3, backoff=Backoff(1.0))
    machine.start()
    refused = Classified(Verdict.REJECTED, http_status, error="bad batch")
    after = machine.answered(rows, refused, [None, None])
    assert after.then is None and after.refused and after.records == []
    assert machine.alone == rows
    # Only a 4xx proves nothing was created.
    assert [row.uncertain for row in rows] == [looked_up_first] * 2


def test_a_lost_bulk_answer_sends_every_row_alone_looked_up_first() -> None:
    rows = [_row(n) for n in range(1, 3)]
    machine = BatchAttempts(rows, max_attempts=3, backoff=Backoff(1.0))
    machine.start()
    after = machine.answered(rows, retry(uncertain=True), [None, None])
    assert after.then is None and machine.alone == rows
    assert all(row.uncertain for row in rows)


def test_a_bulk_call_that_never_reached_the_server_goes_again_in_bulk() -> None:
    rows = [_row(n) for n in range(1, 3)]
    machine = BatchAttempts(rows, max_attempts=3, backoff=Backoff(1.0))
    machine.start()
    after = machine.answered(rows, retry(), [None, None])
    assert isinstance(after.then, Wait) and machine.alone == []
    assert machine.waited() == SendBatch(rows, retries=2)


def test_a_fatal_bulk_answer_fails_the_batch_and_stops_the_run() -> None:
    rows = [_row(n) for n in range(1, 3)]
    machine = BatchAttempts(rows, max_attempts=3, backoff=Backoff(1.0))
    machine.start()
    after = machine.answered(rows, FATAL, [None, None])
    assert after.then is None and after.stop_run == "wrong keys"
    assert [record.status for _, record in after.records] == [Status.FAILED] * 2


def test_a_refusal_after_some_items_went_again_keeps_those_items_for_another_attempt() -> None:
    rows = [_row(n) for n in range(1, 4)]
    machine = BatchAttempts(rows, max_attempts=3, backoff=Backoff(1.0))
    machine.start()
    limited = rate_limited()
    after = machine.answered(rows, OK, [NOT_CREATED, limited, limited])
    assert after.then == SendBatch(rows[1:])
    refused = Classified(Verdict.REJECTED, 400, error="bad batch")
    after = machine.answered(rows[1:], refused, [None, None])
    assert after.refused and machine.alone == rows[1:]
    assert isinstance(after.then, Wait)  # row 1 said "not created": again, in bulk
    assert machine.waited() == SendBatch([rows[0]], retries=1)
