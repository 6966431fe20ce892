"""The worker pools: tasks that take rows off the queue and deliver them.

Owns who takes which rows, and when. Single-call workers take one row at a time;
bulk workers take up to ``--batch-size`` rows bound for the same bulk endpoint, for one
bulk call under the bulk limit (a row to be looked up first goes alone, under the
single-call limit). With ``--verify-first`` one more task sends rows alone until N are
created, reads them back and calibrates the look-ups, while the others wait at a gate.
A write failure or a bug in a delivery stops the run cleanly (:meth:`Workers.guarded`).
The :class:`~bulkpost.delivery.single.Delivery` they share is made by :func:`new_delivery`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bulkpost.core.activity import Activity, by_email
from bulkpost.core.attempts import Job
from bulkpost.core.options import RunOptions
from bulkpost.core.reconcile import Reading
from bulkpost.delivery.calls import DeliverySettings, LookupFailed, Stopped
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.readback import read_back
from bulkpost.delivery.single import Delivery
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import AbortRun, ResultsWriteError
from bulkpost.runner.dispatch import JobQueue
from bulkpost.runner.progress import Progress
from bulkpost.storage.history.database import History
from bulkpost.storage.kept import load_reading, save_reading
from bulkpost.storage.results import ResultsLog

log = structlog.get_logger("bulkpost")

# Rows set aside while the first rows are checked (--verify-first): memory stays bounded when
# an input brings no new row to check (a resume, a night of updates).
MAX_SET_ASIDE = 5_000


def new_delivery(options: RunOptions, limit: RateLimit, client: LeadSquaredClient,
                 results: ResultsLog, history: History | None, stopping: StopSignal,
                 run_id: str) -> Delivery:
    """The run's delivery, knowing what earlier runs learned of the account's look-ups;
    what it learns is kept for later runs."""
    opts = options
    delivery = Delivery(DeliverySettings.of(opts), limit, client, results, stopping, history,
                        load_reading(opts.results, opts.host, history))
    calibration = delivery.lookups.calibration
    if calibration.reading.calibrated:
        log.debug("lookup.calibrated_earlier", reading=calibration.reading.describe())

    def keep(reading: Reading) -> None:
        if reading.calibrated:
            save_reading(opts.results, opts.host, reading, history, run_id)

    calibration.on_learned = keep
    return delivery


class Workers:
    """The worker tasks of one run, sharing its delivery and its queue."""

    def __init__(self, options: RunOptions, queue: JobQueue[Job], delivery: Delivery,
                 client: LeadSquaredClient, bulk_limit: RateLimit, fields: Callable[[int], Any],
                 progress: Progress, stopping: StopSignal) -> None:
        self.options = options
        self._queue = queue
        self._delivery = delivery
        self._client = client
        self._bulk_limit = bulk_limit
        self._fields = fields  # the activity types' fields, by event code (read-backs)
        self._progress = progress
        self._stopping = stopping
        self._gate = asyncio.Event()  # open once the first rows are checked

    def start(self) -> list[asyncio.Task[None]]:
        """Start every pool; the tasks end when the queue is closed and empty."""
        opts, tasks = self.options, []
        if opts.verify_first:
            tasks.append(asyncio.create_task(self._first_rows()))
        else:
            self._gate.set()
        tasks += [asyncio.create_task(self._work()) for _ in range(opts.worker_count())]
        tasks += [asyncio.create_task(self._work_bulk())
                  for _ in range(opts.bulk_worker_count())]
        return tasks

    async def _first_rows(self) -> None:
        """``--verify-first``: send rows alone until N are created, read them back and
        calibrate the look-ups, before any other row goes; stop (exit 3) when a stored
        value is not the one sent. Rows to be looked up first wait for the calibration, and
        updates for the check (a mapping that stores other values must not update either);
        at most :data:`MAX_SET_ASIDE` of them, then the rest go unchecked."""
        queue, rows = self._queue, self._delivery.rows
        created = self._delivery.recorder.created
        calibration = self._delivery.lookups.calibration
        wanted = self.options.verify_first
        waiting: list[Job] = []
        rows.deferring = True
        try:
            tries = 0
            while (len(created) < wanted and tries < wanted + 24
                   and len(waiting) < MAX_SET_ASIDE):
                job = await queue.get()
                if job is None:
                    break
                if job.reconcile_first or job.update_of:
                    waiting.append(job)
                    continue
                tries += 1
                if self._stopping.is_set() or not await self.guarded(rows.deliver(job), job):
                    return
                self._progress.done()
            if self._stopping.is_set() or not created:
                return
            await self._check_stored(created[:wanted])
            await calibration.calibrate()
            await calibration.learn_offset(created)
        except Stopped:
            return
        finally:
            rows.deferring = False
            queue.put_front(rows.deferred + waiting)
            rows.deferred.clear()
            self._gate.set()

    async def _check_stored(self, created: list[tuple[Activity, str]]) -> None:
        """Read the first created rows back; stop the run when a value differs."""
        calls, calibration = self._delivery.calls, self._delivery.lookups.calibration
        for item, activity_id in created:
            calls.counts.verify_calls += 1
            try:
                found = await read_back(calls, self._client, item, activity_id,
                                        self._fields(item.event), calibration.reading.entities)
            except LookupFailed as exc:
                log.warning("readback.failed", row=item.row, reason=str(exc))
                return
            if found:
                shown = "; ".join(
                    f"column {d.column!r} ({d.label}): sent {d.sent!r}, stored "
                    + ("nothing" if d.stored is None else repr(d.stored)) for d in found[:5])
                self._stopping.stop(AbortRun(
                    f"row {item.row} (activity {activity_id}) was stored with other values "
                    f"than sent: {shown}. Nothing more was sent: check the mapping and the "
                    "activity type's fields (`bulkpost verify` reads more rows back), then "
                    "run the same command again"))
                return
        log.info("readback.stored_as_sent", rows=len(created))

    async def _work(self) -> None:
        await self._gate.wait()
        while (job := await self._queue.get()) is not None:
            if self._stopping.is_set() or not await self.guarded(
                    self._delivery.rows.deliver(job), job):
                return
            self._progress.done()

    async def _work_bulk(self) -> None:
        await self._gate.wait()
        delivery, size = self._delivery, self.options.batch_size
        while jobs := await self._queue.get_batch(size, _bulk_kind):
            if self._stopping.is_set():
                return
            if len(jobs) == 1 and _bulk_kind(jobs[0]) is None:
                # To be looked up first (or carried over): alone, under the single-call limit.
                done = await self.guarded(delivery.rows.deliver(jobs[0]), jobs[0])
            else:
                done = await self.guarded(delivery.bulk.deliver(jobs, self._bulk_limit),
                                          jobs[0])
            if not done:
                return
            self._progress.done(len(jobs))  # at once: the rate sees one batch, not a burst

    async def guarded(self, delivery: Awaitable[Any], job: Job) -> bool:
        """Await a delivery; on a write failure or a bug, stop the run and say False."""
        try:
            await delivery
        except ResultsWriteError as exc:
            self._stopping.stop(exc)
            return False
        except Exception as exc:  # a bug: stop cleanly, with a summary, rather than hang
            log.error("internal_error", row=job.activity.row, exc_info=exc)
            self._stopping.stop(AbortRun(f"internal error at row {job.activity.row} "
                                f"({type(exc).__name__}: {exc}); please report it. "
                                "Rerun to resume"))
            return False
        return True


def _bulk_kind(job: Job) -> str | None:
    """Which bulk endpoint a row goes to; None: it goes alone (it is looked up first, or
    carried over from an earlier run)."""
    if job.reconcile_first or job.carried_from is not None:
        return None
    if job.update_of:
        return "update"
    return "email" if by_email(job.activity) else "id"
