"""How a delivered row's outcome is kept, and which rows are delivered one at a time.

Owns what single-row and bulk delivery share around the core's :class:`Job` and
:class:`RowState` (:mod:`bulkpost.core.attempts`): the content locks, and the
:class:`Recorder` that writes what became of the row. Its rules:

- rows with the same content (the content hash without the date-time) are delivered one
  at a time (:class:`KeyedLocks`), so that two identical rows can never both claim the same
  activity: each claims only an Id that no other posted row with that content holds;
- an outcome goes to the results file with the last answer's HTTP status, error and Id
  unless told otherwise; server text is scrubbed of the keys first. With ``--history`` a
  posted row's key is made posted there with its Id, a rejected row's key released;
- a row created as the answer says (not found by a look-up) is offered to calibrate the
  look-ups, and its first few are kept in ``created`` to be read back (``--verify-first``);
- a row the run stopped on is ``unknown`` if it may be on the wire or may have been
  created; ``failed`` (``stopped``) if it was sent and every answer said "not created";
  else it keeps what an earlier run recorded, or is recorded nowhere (``pending``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import structlog

from bulkpost.core.activity import Activity
from bulkpost.core.attempts import RowState
from bulkpost.core.credentials import Credentials
from bulkpost.core.results_line import IN_FLIGHT_NOTE, RowOutcome
from bulkpost.core.statuses import Status
from bulkpost.delivery.calls import ApiCalls
from bulkpost.delivery.lookups import Lookups
from bulkpost.storage.history.database import History
from bulkpost.storage.results import ResultsLog

log = structlog.get_logger("bulkpost")


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Recorder:
    """Records rows' outcomes for one run: in the results file, the history, the counts."""

    def __init__(self, calls: ApiCalls, lookups: Lookups, results: ResultsLog | None,
                 credentials: Credentials, history: History | None = None) -> None:
        self._calls = calls
        self._lookups = lookups
        self._results = results
        self._credentials = credentials
        self._history = history
        self._timeout = calls.settings.timeout
        self.created: list[tuple[Activity, str]] = []  # this run's first clear creates

    @property
    def log(self) -> ResultsLog:
        """The results file (None: look-ups only)."""
        assert self._results is not None, "this run only makes look-ups"
        return self._results

    async def mark_in_flight(self, rows: list[RowState]) -> None:
        """Right before sending, once the rate-limit slot is ours: each row's ``unknown``
        line (and its history claim) recorded, then made durable in one group commit. A
        crash leaves unknown only the rows that may really be on the wire."""
        now = datetime.now(UTC)
        for row in rows:
            job = row.job
            item = job.activity
            if self._history is not None:
                # Committed with the mark: the claim keeps the request, to be finished by a
                # later run even if no input holds the row again.
                self._history.sending(item, job.update_of, job.carried_from)
            if job.carried_from is None:
                self.log.record(RowOutcome(item.row, item.key, Status.UNKNOWN,
                                           activity_id=job.update_of, error=IN_FLIGHT_NOTE,
                                           attempts=row.attempts,
                                           content_hash=item.content_hash))
            else:  # no line of its own: the sync below must still commit its claim
                self.log.companion_wrote()
            # Its line is recorded: stopped from here on, even while waiting for the fsync,
            # the row must get a line saying what became of it.
            row.marked = True
            row.first_sent = row.first_sent or now
            row.last_sent = now
        await self.log.sync()

    def record(self, row: RowState, status: Status, *, activity_id: str = "",
               error_type: str | None = None, error: str | None = None) -> Status:
        """Record the outcome; what is not given comes from the last answer."""
        item, last = row.job.activity, row.last
        if error_type is None:
            error_type = last.error_type if last else ""
        if error is None:
            error = last.error if last else ""
        if not activity_id and last is not None:
            activity_id = last.activity_id
        # Server text goes into the file: make sure it cannot carry the keys.
        error = self._credentials.scrub(error)
        carried = row.job.carried_from
        if carried is None:
            self.log.record(RowOutcome(
                item.row, item.key, status, activity_id=activity_id,
                http_status=last.http_status if last else None, error_type=error_type,
                error=error, attempts=row.attempts, content_hash=item.content_hash))
        else:
            log.info("row.carried_over", input=carried[0], row=carried[1], key=item.key,
                     status=status.value, activity_id=activity_id, error=error)
        if status is Status.POSTED and error_type != "reconciled" and activity_id:
            # Created, as the answer says: a row to calibrate look-ups and verify with.
            self._lookups.calibration.offer_sample(item, activity_id, row.window(self._timeout))
            if len(self.created) < 64:
                self.created.append((item, activity_id))
        if self._history is not None:
            if status is Status.POSTED or status is Status.UPDATED:
                self._history.posted(item, activity_id)
            elif status is Status.REJECTED:
                self._history.released(item)
        row.status = status
        return status

    def record_stopped(self, row: RowState, *, cancelled: bool = False,
                           on_wire: bool | None = None) -> Status | None:
        """The run stopped while this row was being delivered: say what we know of it.

        ``unknown`` if it may be on the wire; ``failed`` (recorded, error_type ``stopped``)
        if it was sent this run and every answer said "not created"; its earlier outcome if
        an earlier run recorded one; else None: never sent, nothing recorded, the row is
        ``pending`` in the summary as in the results file and the report."""
        if on_wire is None:
            on_wire = self._calls.left_on_wire(cancelled)
        status: Status | None
        if on_wire or row.uncertain:
            # It may have been created and nobody has checked: unknown, for the next run
            # to reconcile. A row resumed without a new mark keeps its earlier line.
            status = Status.UNKNOWN if row.marked else (row.job.recorded_status or Status.UNKNOWN)
        elif row.marked:
            last = row.last
            reason = f"stopped while retrying: {last.error}" if last else "stopped before sending"
            status = self.record(row, Status.FAILED, error_type="stopped", error=reason)
        else:
            status = row.job.recorded_status
        if cancelled and status is not None:
            self._calls.counts.count(status, carried=row.job.carried_from is not None)
            row.counted = True
        row.status = status
        return status
