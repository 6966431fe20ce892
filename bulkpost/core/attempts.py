"""What to do next with a row, or a bulk call, being delivered: delivery's state machines.

Every decision of delivery lives here, apart from any I/O (the sans-IO way): a machine is
given what came of its last step and returns the next one. The drivers
(:class:`bulkpost.delivery.single.RowDelivery`, :class:`bulkpost.delivery.bulk.BulkDelivery`) carry
the steps
out: send (the in-flight mark first), look up, wait, record. The rules of one row
(:class:`RowAttempts`):

- an attempt looks the row up first when it may have been created already (an uncertain
  answer, this run or earlier): found, the row is ``posted`` with that activity's Id
  (``reconciled``); not found, it is sent;
- posted or rejected, the answer is recorded; a fatal answer (keys, host) fails the row and
  stops the run; a refusal that does not prove nothing was created (an ``MX…`` error under a
  5xx or a 200 outside the validation family: :func:`bulkpost.core.response.proves_refusal`) is
  looked up after a backoff: found, ``posted``; not found, ``rejected`` with its reason (an
  application error is not worth sending again). An update so refused is sent again (it is
  idempotent), as after any uncertain answer;
- an answer that may be tried again waits :meth:`Backoff.after` the attempts made, then
  tries again (looking up first if the answer was uncertain), up to ``max_attempts``
  attempts; then the row is ``failed``;
- a look-up that cannot tell leaves the row ``unknown`` (``unverified``), never sent again on
  a guess; while the first rows calibrate the look-ups, such a row is set aside instead
  (:class:`SetAside`), to be looked up once the look-ups are calibrated;
- an update (``--on-changed update``) is idempotent: one whose answer was lost is simply
  sent again, never looked up. Done, the row is ``updated`` with the activity's Id; an
  answer naming another activity is not understood (``unknown``); a refusal (the activity
  was deleted, a value refused) is ``rejected`` with the reason.

A bulk call (:class:`BatchAttempts`) takes each item's outcome from the answer only where
it accounts for the item unambiguously: posted, rejected, or not created (sent again in
bulk after a backoff). Items rate limited go again at once after the pause (no attempt).
Every other row goes on alone through :class:`RowAttempts`: a call refused as a whole (a
row may be bad), an item left out of the answer, a lost or uncertain answer. Only a 4xx
proves nothing was created; after anything else those rows are looked up first.

Rate-limited answers never reach a machine: the call layer (:mod:`bulkpost.delivery.calls`) sits
them out. Nor does a stop: the driver records what it knows of the row
(:meth:`bulkpost.delivery.recorder.Recorder.record_stopped`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter

from bulkpost.core.activity import Activity
from bulkpost.core.reconcile import SendWindow
from bulkpost.core.response import Classified, Verdict
from bulkpost.core.statuses import Status

BACKOFF_CAP = 30  # the longest wait between attempts, in multiples of --backoff


class Backoff:
    """How long to wait after a failed attempt: ``backoff`` times 2**(n-1) after the n-th,
    plus a jitter of up to one more ``backoff``, never over :data:`BACKOFF_CAP` backoffs.

    The schedule is tenacity's (``wait_exponential_jitter``), so the look-ups' retries
    (:meth:`bulkpost.delivery.calls.ApiCalls.lookup`, run by tenacity) and delivery's share it.
    Its default jitter (a whole second) would make a short backoff long.
    """

    def __init__(self, backoff: float) -> None:
        self.wait = wait_exponential_jitter(multiplier=backoff, max=backoff * BACKOFF_CAP,
                                            jitter=backoff)

    def after(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` attempts (1 or more) failed."""
        state = RetryCallState(AsyncRetrying(), None, (), {})
        state.attempt_number = failed_attempts
        return float(self.wait(state))


@dataclass(slots=True)
class Job:
    """A row for a worker: the request, and what the results file recorded of it."""

    activity: Activity
    recorded_status: Status | None = None  # its status in the results file, if any
    reconcile_first: bool = False  # an earlier run may have created it
    window: SendWindow | None = None  # when an earlier run may have sent it
    update_of: str = ""  # --on-changed update: the activity its key holds, to update
    # Carried over: a row an earlier run left unfinished, no longer in any input (the
    # input and the row it came from). Recorded in the history only.
    carried_from: tuple[str, int] | None = None


@dataclass(slots=True)
class RowState:
    """What this run knows of one row while delivering it."""

    job: Job
    attempts: int = 0
    last: Classified | None = None
    marked: bool = False  # this run wrote an ``unknown`` line for the row
    uncertain: bool = False  # an attempt (this run or earlier) may have created it
    first_sent: datetime | None = None
    last_sent: datetime | None = None
    status: Status | None = None  # recorded by this run
    counted: bool = False  # in the delivery counts

    def window(self, timeout: float) -> SendWindow | None:
        if self.first_sent is None or self.last_sent is None:
            return self.job.window
        return SendWindow.around(self.first_sent, self.last_sent, timeout).joined(
            self.job.window)


# -- steps ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """Mark the row in flight and post it; give the answer to :meth:`RowAttempts.answered`.
    ``retry``: not the row's first send (counted as a retry)."""

    retry: bool


@dataclass(frozen=True, slots=True)
class LookUp:
    """Look the row up; give the Id found (or None) to :meth:`RowAttempts.looked_up`, or
    why it failed to :meth:`RowAttempts.lookup_failed`."""

    window: SendWindow | None  # when it may have been sent


@dataclass(frozen=True, slots=True)
class Wait:
    """Back off (ending early if the run stops), then ask :meth:`~RowAttempts.waited`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Record:
    """Record the row's outcome; what is None comes from its last answer. The row is done.
    ``stop_run``: a fatal answer's error; the run stops with it."""

    status: Status
    activity_id: str = ""
    error_type: str | None = None
    error: str | None = None
    stop_run: str = ""


@dataclass(frozen=True, slots=True)
class SetAside:
    """Look-ups are not calibrated yet: hand ``job`` back, to be looked up after the
    calibration. Its ``unknown`` line is on disk meanwhile. The row is done for now."""

    job: Job


RowStep = Send | LookUp | Wait | Record | SetAside


def _status_of(answer: Classified) -> Status:
    if answer.verdict is Verdict.POSTED:
        return Status.POSTED
    return Status.REJECTED if answer.verdict is Verdict.REJECTED else Status.FAILED


def _updated(answer: Classified, update_of: str) -> Record:
    """A success answered to an update of ``update_of``."""
    if answer.activity_id and answer.activity_id != update_of:
        return Record(Status.UNKNOWN, activity_id=update_of, error_type="unverified",
                      error=f"the update of activity {update_of} was answered with activity "
                            f"{answer.activity_id}: not understood. Run again to update it "
                            "again")
    return Record(Status.UPDATED, activity_id=update_of)


class RowAttempts:
    """The attempts of one row: start with :meth:`start`, feed each step's outcome back."""

    def __init__(self, row: RowState, *, max_attempts: int, backoff: Backoff,
                 timeout: float) -> None:
        self.row = row
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._timeout = timeout
        self._tries = 0  # attempts begun (a look-up and the send it allows are one)
        self._refused = False  # refused, not proven: looked up, and rejected if not found

    def start(self) -> RowStep:
        return self._attempt()

    def looked_up(self, activity_id: str | None) -> RowStep:
        """The look-up's answer: the Id of the row's activity, or None (not created)."""
        if activity_id:
            return Record(Status.POSTED, activity_id=activity_id, error_type="reconciled",
                          error="")
        self.row.uncertain = False  # not created: safe to send
        if self._refused:  # the refusal stands: recorded with its answer's reason
            said = self.row.last.error if self.row.last is not None else ""
            return Record(Status.REJECTED, error=f"{said} (looked up: not created)")
        return self._send()

    def lookup_failed(self, reason: str, *, not_yet_trusted: bool,
                      may_set_aside: bool) -> RowStep:
        """The look-up could not tell. ``not_yet_trusted``: only because look-ups are not
        calibrated yet; ``may_set_aside``: the run is calibrating them (--verify-first)."""
        if not_yet_trusted and may_set_aside:
            return SetAside(Job(self.row.job.activity, Status.UNKNOWN, reconcile_first=True,
                                window=self.row.window(self._timeout)))
        return Record(Status.UNKNOWN, error_type="unverified",
                      error=f"may have been created; not sent again, since the look-up could "
                            f"not tell: {reason}. Run again to look it up again (or "
                            "--resend-unknown if you know it was not created)")

    def answered(self, answer: Classified) -> RowStep:
        """The answer to the row's send (never "rate limited": that is sat out before)."""
        self.row.last = answer
        update_of = self.row.job.update_of
        if update_of and answer.verdict is Verdict.POSTED:
            return _updated(answer, update_of)
        if answer.verdict is Verdict.REJECTED and answer.uncertain and not update_of:
            # It may have been carried out before the error: looked up, after a backoff.
            self._refused = self.row.uncertain = True
            return Wait(self._backoff.after(self._tries))
        if answer.verdict is Verdict.REJECTED and answer.uncertain:
            answer = dataclasses.replace(answer, verdict=Verdict.RETRY)  # sent again
        if answer.verdict is not Verdict.RETRY:
            fatal = answer.error if answer.verdict is Verdict.FATAL else ""
            return Record(_status_of(answer), stop_run=fatal)
        # An update may be sent again whatever became of it: never looked up.
        self.row.uncertain = not update_of and (self.row.uncertain or answer.uncertain)
        if self._tries >= self._max_attempts:
            return Record(Status.FAILED)
        return Wait(self._backoff.after(self._tries))

    def waited(self) -> RowStep:
        return self._attempt()

    def _attempt(self) -> RowStep:
        self._tries += 1
        if self.row.uncertain and not self.row.job.update_of:
            return LookUp(self.row.window(self._timeout))
        return self._send()

    def _send(self) -> Send:
        retry = self.row.attempts > 0
        self.row.attempts += 1
        return Send(retry=retry)


# -- bulk ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendBatch:
    """Mark these rows in flight and post them in one bulk call; give the answer to
    :meth:`BatchAttempts.answered`. ``retries``: rows sent before (counted as retries)."""

    rows: list[RowState]
    retries: int = 0


@dataclass(slots=True)
class BatchNext:
    """What came of a bulk answer, to carry out in this order: ``lifted`` (an answer other
    than "rate limited" came: the limit's storm clock stops), ``refused`` (log it), the
    ``records``, ``stop_run``, ``rate_limited`` (pause for this answer), then ``then``:
    the next bulk step, or None when the bulk call is over and :attr:`BatchAttempts.alone`
    go on their own."""

    then: SendBatch | Wait | None
    records: list[tuple[RowState, Record]] = field(default_factory=list)
    lifted: bool = False
    refused: bool = False  # refused as a whole: its rows go on alone
    rate_limited: Classified | None = None
    stop_run: str = ""


class BatchAttempts:
    """The attempts of one bulk call's rows: :meth:`start`, then feed each answer back."""

    def __init__(self, rows: list[RowState], *, max_attempts: int, backoff: Backoff) -> None:
        self._rows = rows
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._tries = 0
        self._again: list[RowState] = []  # answered "not created" in this attempt
        self.alone: list[RowState] = []  # rows to deliver one at a time, in order

    def start(self) -> SendBatch:
        return self._attempt(self._rows)

    def waited(self) -> SendBatch:
        again, self._again = self._again, []
        return self._attempt(again)

    def answered(self, sent: list[RowState], answer: Classified,
                 outcomes: list[Classified | None]) -> BatchNext:
        """The answer to a bulk call of ``sent``, with each item's outcome (None: the
        answer does not account for it)."""
        if answer.verdict is not Verdict.OK:
            return self._refused(sent, answer)
        records: list[tuple[RowState, Record]] = []
        limited: list[RowState] = []
        for row, outcome in zip(sent, outcomes, strict=True):
            row.last = outcome or answer
            if outcome is None:
                row.uncertain = True  # not accounted for: may have been created
                self.alone.append(row)
            elif outcome.verdict is Verdict.POSTED and row.job.update_of:
                records.append((row, _updated(outcome, row.job.update_of)))
            elif outcome.verdict in (Verdict.POSTED, Verdict.REJECTED):
                records.append((row, Record(_status_of(outcome))))
            elif outcome.verdict is Verdict.RATE_LIMITED:
                limited.append(row)
            else:  # the item was not created, and no reason given
                self._again.append(row)
        lifted = len(limited) < len(sent)  # some items went through
        if limited:
            return BatchNext(SendBatch(limited), records, lifted=lifted,
                             rate_limited=limited[0].last or answer)
        return self._end_of_attempt(records, lifted=lifted)

    def _refused(self, sent: list[RowState], answer: Classified) -> BatchNext:
        """A bulk call not answered item by item."""
        for row in sent:
            row.last = answer
        if answer.verdict is Verdict.FATAL:
            return BatchNext(None, [(row, Record(Status.FAILED)) for row in sent], lifted=True,
                             stop_run=answer.error)
        if answer.verdict is Verdict.REJECTED:
            # Each row goes on its own call, where a bad row is refused alone. Only a 4xx
            # proves nothing was created; after a 5xx or a 200 carrying an MX error, the
            # rows are looked up first.
            certain = answer.http_status is not None and 400 <= answer.http_status < 500
            for row in sent:
                row.uncertain = row.uncertain or not certain
            self.alone += sent
            after = self._end_of_attempt([], lifted=True)
            after.refused = True
            return after
        if answer.uncertain:
            for row in sent:
                row.uncertain = True
            self.alone += sent
            return self._end_of_attempt([], lifted=True)
        self._again += sent  # never reached the server: the same call again, backed off
        return self._end_of_attempt([], lifted=True)

    def _end_of_attempt(self, records: list[tuple[RowState, Record]], *,
                        lifted: bool) -> BatchNext:
        if not self._again:
            return BatchNext(None, records, lifted=lifted)
        if self._tries >= self._max_attempts:  # "not created" every time: safe, failed
            records += [(row, Record(Status.FAILED)) for row in self._again]
            self._again = []
            return BatchNext(None, records, lifted=lifted)
        return BatchNext(Wait(self._backoff.after(self._tries)), records, lifted=lifted)

    def _attempt(self, rows: list[RowState]) -> SendBatch:
        self._tries += 1
        retries = sum(1 for row in rows if row.attempts)
        for row in rows:
            row.attempts += 1
        return SendBatch(rows, retries)
