"""Delivering rows: the drivers of delivery's state machines, and what a run's workers share.

Owns the life of one row from the moment a worker takes it: hold its content lock, run its
:class:`~bulkpost.core.attempts.RowAttempts` (look up, mark in flight durably, post, back off,
record) until it says the row is done. What to do next is decided there, apart from any I/O;
this module only carries the steps out. Whenever an attempt's outcome is uncertain the row is
looked up before it is sent again; rows an earlier run left ``unknown`` or ``failed`` arrive
marked to be looked up first. While the first rows go (``--verify-first``), a row whose
look-up must wait for the calibration is set aside (``deferred``) instead of left unknown.

:class:`Delivery` is what the workers of one run share, each part its own module:

- :mod:`bulkpost.delivery.calls`: calls under the rate limit, the rate-limit storm, retries;
- :mod:`bulkpost.delivery.lookups`: reconciliation look-ups and their calibration;
- :mod:`bulkpost.delivery.recorder`: what a row being delivered is, content locks, the recorder;
- :mod:`bulkpost.core.attempts`: the state machines; this module and :mod:`bulkpost.delivery.bulk`
  drive them.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import structlog

from bulkpost.core.activity import update_body
from bulkpost.core.attempts import Job, LookUp, Record, RowAttempts, RowState, Send, SetAside, Wait
from bulkpost.core.reconcile import Reading, timeless_hash
from bulkpost.core.response import Classified
from bulkpost.core.statuses import Status
from bulkpost.delivery.bulk import BulkDelivery
from bulkpost.delivery.calls import ApiCalls, DeliverySettings, LookupFailed, Stopped
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.lookup_calibration import NotYetTrusted
from bulkpost.delivery.lookups import Lookups
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.recorder import KeyedLocks, Recorder
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import AbortRun
from bulkpost.storage.history.database import History
from bulkpost.storage.results import ResultsLog

log = structlog.get_logger("bulkpost")


class RowDelivery:
    """Delivers rows one at a time for the workers of one run."""

    def __init__(self, calls: ApiCalls, lookups: Lookups, recorder: Recorder,
                 locks: KeyedLocks, client: LeadSquaredClient) -> None:
        self._calls = calls
        self._settings = calls.settings
        self._lookups = lookups
        self._recorder = recorder
        self._locks = locks
        self._client = client
        # While the first rows go (--verify-first), a row whose look-up must wait for the
        # calibration is set aside here, to be looked up after it, instead of left unknown.
        self.deferring = False
        self.deferred: list[Job] = []

    async def deliver(self, job: Job) -> Status:
        """Deliver one row and record its outcome; return the row's status now."""
        async with self._locks.hold(timeless_hash(job.activity.body)):
            status = await self.deliver_alone(job)
        if status is not None:
            self._calls.counts.count(status, carried=job.carried_from is not None)
        return status or Status.UNKNOWN

    async def deliver_alone(self, job: Job, row: RowState | None = None) -> Status | None:
        """Attempts of one row, on its own; ``row``: what a bulk call left of it.
        None: set aside to be looked up once the look-ups are calibrated."""
        row = row or RowState(job, uncertain=job.reconcile_first)
        attempts = RowAttempts(row, max_attempts=self._settings.max_attempts,
                               backoff=self._calls.backoff_schedule,
                               timeout=self._settings.timeout)
        try:
            step = attempts.start()
            while True:
                if isinstance(step, LookUp):
                    try:
                        found = await self._lookups.reconcile(job.activity, step.window)
                    except LookupFailed as exc:
                        step = attempts.lookup_failed(
                            str(exc), not_yet_trusted=isinstance(exc, NotYetTrusted),
                            may_set_aside=self.deferring)
                    else:
                        step = attempts.looked_up(found)
                elif isinstance(step, Send):
                    self._calls.counts.retries += step.retry
                    step = attempts.answered(await self._send(row))
                elif isinstance(step, Wait):
                    last = row.last
                    log.debug("row.retrying", row=job.activity.row, attempt=row.attempts,
                              error=last.error if last else "",
                              uncertain=last.uncertain if last else False)
                    await self._calls.backoff(step.seconds)
                    step = attempts.waited()
                elif isinstance(step, SetAside):
                    # Its unknown line is on disk; it comes back, looked up first, once the
                    # look-ups are calibrated.
                    self.deferred.append(step.job)
                    return None
                else:
                    return self._record(row, step)
        except Stopped:
            return self._recorder.record_stopped(row)
        except asyncio.CancelledError:
            self._recorder.record_stopped(row, cancelled=True)
            raise

    def _record(self, row: RowState, record: Record) -> Status:
        status = self._recorder.record(row, record.status, activity_id=record.activity_id,
                                       error_type=record.error_type, error=record.error)
        if record.stop_run:
            self._calls.stopping.stop(AbortRun(record.stop_run))
        return status

    async def _send(self, row: RowState) -> Classified:
        """Mark the row in flight once its slot is ours, post it (or update the activity
        it updates), and return the answer."""
        job = row.job
        if job.update_of:
            call = functools.partial(self._update, update_body(job.activity, job.update_of),
                                     job.update_of)
        else:
            call = functools.partial(self._post, job.activity.body)
        answer, _ = await self._calls.call(
            call, before_sending=functools.partial(self._recorder.mark_in_flight, [row]))
        return answer

    async def _post(self, body: bytes) -> tuple[Classified, Any]:
        return await self._client.post_activity(body), None

    async def _update(self, body: bytes, activity_id: str) -> tuple[Classified, Any]:
        return await self._client.update_activity(body, activity_id), None


class Delivery:
    """What the workers of one run share, made once per run: :attr:`calls` (every request,
    under the rate limit), :attr:`lookups` (reconciliation, what it learned),
    :attr:`recorder`, and the single-row (:attr:`rows`) and bulk (:attr:`bulk`) drivers.
    ``results`` None: look-ups only."""

    def __init__(self, settings: DeliverySettings, limit: RateLimit, client: LeadSquaredClient,
                 results: ResultsLog | None, stopping: StopSignal,
                 history: History | None = None, reading: Reading | None = None) -> None:
        self.calls = ApiCalls(settings, limit, stopping)
        self.lookups = Lookups(self.calls, client, results, history, reading)
        # --history: keys are claimed there with the in-flight mark (the recorder's).
        self.recorder = Recorder(self.calls, self.lookups, results, client.credentials,
                                 history)
        locks = KeyedLocks()
        self.rows = RowDelivery(self.calls, self.lookups, self.recorder, locks, client)
        self.bulk = BulkDelivery(self.calls, self.recorder, locks, client,
                                 self.rows.deliver_alone)
