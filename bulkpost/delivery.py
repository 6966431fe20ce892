"""Delivering rows: one row's attempts, and the :class:`Courier` the workers of a run share.

Owns the life of one row from the moment a worker takes it: hold its content lock, mark it
in flight (durably), post it, back off and retry what may be retried, and record the
outcome. Whenever an attempt's outcome is uncertain (the request may have been carried
out) the row is looked up before it is sent again: found, it is ``posted`` with that
activity's Id; not found, it is sent; the look-up itself failing, it stays ``unknown`` with
the reason. Rows that an earlier run left ``unknown`` or ``failed`` arrive here marked to be
reconciled first. While the first rows go (``--verify-first``), a row whose look-up must
wait for the calibration is set aside (``deferred``) instead of left unknown.

The :class:`Courier` is the composition the pipeline uses, and each part is its own module:

- :mod:`bulkpost.calls`: calls under the rate limit, the rate-limit storm clock, retries;
- :mod:`bulkpost.lookups`: reconciliation look-ups and their calibration;
- :mod:`bulkpost.flight`: what a row in flight is, content locks, recording outcomes;
- this module: single-row delivery; :mod:`bulkpost.bulk`: bulk delivery.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import structlog

from bulkpost.activity import Activity
from bulkpost.bulk import BulkDelivery
from bulkpost.calibration import Reading
from bulkpost.calls import (
    BACKOFF_CAP,
    ApiCalls,
    Call,
    DeliverySettings,
    LookupFailed,
    Retry,
    Stopped,
    Tally,
)
from bulkpost.client import LeadSquaredClient
from bulkpost.errors import AbortRun, BulkpostError
from bulkpost.flight import Flight, Job, KeyedLocks, Recorder
from bulkpost.history import History
from bulkpost.lookups import Lookups, NotYetTrusted
from bulkpost.ratelimit import RateLimit
from bulkpost.reconcile import SendWindow, timeless_hash
from bulkpost.response import Classified, Verdict
from bulkpost.results import ResultsLog
from bulkpost.resume import Status

__all__ = [
    "BACKOFF_CAP",
    "Courier",
    "DeliverySettings",
    "Job",
    "KeyedLocks",
    "LookupFailed",
    "NotYetTrusted",
    "RowDelivery",
    "Stopped",
    "Tally",
]

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
            self._calls.tally.statuses[status] += 1
        return status or Status.UNKNOWN

    async def deliver_alone(self, job: Job, flight: Flight | None = None) -> Status | None:
        """Attempts of one row, on its own; ``flight``: what a bulk call left of it.
        None: set aside to be looked up once the look-ups are calibrated."""
        flight = flight or Flight(job, uncertain=job.reconcile_first)
        try:
            try:
                found = await self._attempt(flight)
            except Retry:
                if self._settings.max_attempts <= 1:
                    raise
                async for attempt in self._calls.retrying(Retry, after_first=True):
                    with attempt:
                        found = await self._attempt(flight)
            if found is not None:
                return self._recorder.record(flight, Status.POSTED, activity_id=found,
                                             error_type="reconciled", error="")
        except Retry:
            return self._recorder.record(flight, Status.FAILED)
        except LookupFailed as exc:
            if isinstance(exc, NotYetTrusted) and self.deferring:
                # Its unknown line is on disk; it comes back, looked up first, once the
                # look-ups are calibrated.
                self.deferred.append(Job(job.activity, Status.UNKNOWN, reconcile_first=True,
                                         window=flight.window(self._settings.timeout)))
                return None
            return self._recorder.record(
                flight, Status.UNKNOWN, error_type="unverified",
                error=f"may have been created; not sent again, since the look-up could not "
                      f"tell: {exc}. Run again to look it up again (or --resend-unknown if "
                      "you know it was not created)")
        except Stopped:
            return self._recorder.settle_interrupted(flight)
        except asyncio.CancelledError:
            self._recorder.settle_interrupted(flight, cancelled=True)
            raise
        last = flight.last
        assert last is not None
        status = Status.POSTED if last.verdict is Verdict.POSTED else (
            Status.REJECTED if last.verdict is Verdict.REJECTED else Status.FAILED)
        outcome = self._recorder.record(flight, status)
        if last.verdict is Verdict.FATAL:
            self._calls.stop(AbortRun(last.error))
        return outcome

    async def _attempt(self, flight: Flight) -> str | None:
        """One attempt: look the row up first if it may exist (return the Id found), else
        send it; raise Retry to try again."""
        if flight.uncertain:
            found = await self._lookups.reconcile(flight.job.activity,
                                                  flight.window(self._settings.timeout))
            if found is not None:
                return found
            flight.uncertain = False  # not created: safe to send
        await self._send(flight)
        return None

    async def _send(self, flight: Flight) -> None:
        """One attempt: mark in flight, post, classify; raise Retry to try again."""
        item = flight.job.activity
        if flight.attempts:
            self._calls.tally.retries += 1
        flight.attempts += 1
        answer, _ = await self._calls.call(
            functools.partial(self._post, item.body),
            before_sending=functools.partial(self._recorder.mark_in_flight, [flight]))
        flight.last = answer
        if answer.verdict is Verdict.RETRY:
            flight.uncertain = flight.uncertain or answer.uncertain
            log.debug("retrying", row=item.row, error=answer.error, attempt=flight.attempts,
                      uncertain=answer.uncertain)
            raise Retry(answer.error)

    async def _post(self, body: bytes) -> tuple[Classified, Any]:
        return await self._client.post_activity(body), None


class Courier:
    """Delivers rows for the workers of one run; all of them share it.

    A composition: :attr:`calls` (every request, under the rate limit), :attr:`lookups`
    (reconciliation and what it learned), single-row and bulk delivery, which record
    through one :class:`Recorder`. ``results`` None: look-ups only.
    """

    def __init__(self, settings: DeliverySettings, limit: RateLimit, client: LeadSquaredClient,
                 results: ResultsLog | None, stopping: asyncio.Event,
                 stop: Callable[[BulkpostError], None], history: History | None = None,
                 reading: Reading | None = None) -> None:
        self.settings = settings
        self.calls = ApiCalls(settings, limit, stopping, stop)
        self.lookups = Lookups(self.calls, client, results, history, reading)
        self._recorder = Recorder(self.calls, self.lookups, results, client.credentials,
                                  history)
        locks = KeyedLocks()
        # --history: keys are claimed there with the in-flight mark (the recorder's).
        self._rows = RowDelivery(self.calls, self.lookups, self._recorder, locks, client)
        self._bulk = BulkDelivery(self.calls, self._recorder, locks, client,
                                  self._rows.deliver_alone)

    # -- delivery --------------------------------------------------------------------------
    async def deliver(self, job: Job) -> Status:
        """Deliver one row and record its outcome; return the row's status now."""
        return await self._rows.deliver(job)

    async def deliver_batch(self, jobs: list[Job], limit: RateLimit) -> list[Status]:
        """Deliver rows in bulk calls under ``limit``; every row must name its lead the
        same way (all by Id, or all by e-mail). Return the rows' statuses now."""
        return await self._bulk.deliver(jobs, limit)

    @property
    def tally(self) -> Tally:
        return self.calls.tally

    @property
    def on_wire(self) -> set[asyncio.Task[Any]]:
        """Tasks whose create is on the wire: not cancelled when the run stops."""
        return self.calls.on_wire

    @property
    def created(self) -> list[tuple[Activity, str]]:
        """This run's first clear creates (up to 64), to read back."""
        return self._recorder.created

    @property
    def deferring(self) -> bool:
        """Set aside rows whose look-up must wait for the calibration (--verify-first)."""
        return self._rows.deferring

    @deferring.setter
    def deferring(self, value: bool) -> None:
        self._rows.deferring = value

    @property
    def deferred(self) -> list[Job]:
        """The rows set aside while ``deferring``, to be looked up after the calibration."""
        return self._rows.deferred

    @deferred.setter
    def deferred(self, jobs: list[Job]) -> None:
        self._rows.deferred = jobs

    # -- look-ups --------------------------------------------------------------------------
    async def lookup(self, call: Call) -> Any:
        """A look-up answered, with retries; raise LookupFailed when it cannot be had."""
        return await self.calls.lookup(call)

    def offer_sample(self, item: Activity, activity_id: str,
                     window: SendWindow | None = None) -> None:
        """A row known to be created as ``activity_id``: what calibration looks up."""
        self.lookups.offer_sample(item, activity_id, window)

    async def calibrate(self) -> None:
        """Learn how the account answers look-ups from a row known to be created."""
        await self.lookups.calibrate()

    async def settle_offset(self) -> None:
        """Learn how Offset counts, if still unknown, on this run's first created row."""
        await self.lookups.settle_offset(self.created)

    @property
    def reading(self) -> Reading:
        """How the account answers look-ups, as learned so far."""
        return self.lookups.reading

    @reading.setter
    def reading(self, reading: Reading) -> None:
        self.lookups.reading = reading

    @property
    def distrust(self) -> str:
        """Why look-ups cannot be trusted on this account ("": they can)."""
        return self.lookups.distrust

    @distrust.setter
    def distrust(self, reason: str) -> None:
        self.lookups.distrust = reason

    @property
    def kinds(self) -> dict[int, dict[str, str]]:
        """Event → SchemaName → kind, from the preflight: how look-ups compare values."""
        return self.lookups.kinds

    @kinds.setter
    def kinds(self, kinds: dict[int, dict[str, str]]) -> None:
        self.lookups.kinds = kinds

    @property
    def on_learned(self) -> Callable[[Reading], None] | None:
        """Called with each reading learned (to save it for the next run)."""
        return self.lookups.on_learned

    @on_learned.setter
    def on_learned(self, save: Callable[[Reading], None] | None) -> None:
        self.lookups.on_learned = save
