"""The worker pools: tasks that take rows off the queue and hand them to the courier.

Owns who takes which rows, and when. Single-call workers take one row at a time;
bulk workers take up to ``--batch-size`` rows bound for the same bulk endpoint, for one
bulk call under the bulk limit (a row to be looked up first goes alone, under the
single-call limit). With ``--verify-first`` one more task sends rows alone until N are
created, reads them back and calibrates the look-ups, while the others wait at a gate.
A write failure or a bug in a delivery stops the run cleanly (:meth:`Workers.guarded`).
The courier they share is made by :func:`new_courier`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bulkpost.activity import Activity, by_email
from bulkpost.calibration import Reading, load_reading, save_reading
from bulkpost.client import LeadSquaredClient
from bulkpost.delivery import Courier, DeliverySettings, Job, LookupFailed, Stopped
from bulkpost.dispatch import JobQueue
from bulkpost.errors import AbortRun, BulkpostError, ResultsWriteError
from bulkpost.history import History
from bulkpost.options import RunOptions
from bulkpost.progress import Progress
from bulkpost.ratelimit import RateLimit
from bulkpost.readback import read_back
from bulkpost.results import ResultsLog

log = structlog.get_logger("bulkpost")


def new_courier(options: RunOptions, limit: RateLimit, client: LeadSquaredClient,
                results: ResultsLog, history: History | None, stopping: asyncio.Event,
                stop: Callable[[BulkpostError], None], run_id: str) -> Courier:
    """The run's courier, knowing what earlier runs learned of the account's look-ups;
    what it learns is kept for later runs."""
    opts = options
    settings = DeliverySettings(opts.max_attempts, opts.backoff, opts.timeout,
                                opts.max_rate_limited)
    courier = Courier(settings, limit, client, results, stopping, stop, history,
                      load_reading(opts.results, opts.host, history))
    if courier.reading.calibrated:
        log.info("look-ups calibrated by an earlier run", reading=courier.reading.describe())

    def keep(reading: Reading) -> None:
        if reading.calibrated:
            save_reading(opts.results, opts.host, reading, history, run_id)

    courier.on_learned = keep
    return courier


class Workers:
    """The worker tasks of one run, sharing its courier and its queue."""

    def __init__(self, options: RunOptions, queue: JobQueue[Job], courier: Courier,
                 client: LeadSquaredClient, bulk_limit: RateLimit, fields: Callable[[int], Any],
                 progress: Progress, stopping: asyncio.Event,
                 stop: Callable[[BulkpostError], None]) -> None:
        self.options = options
        self._queue = queue
        self._courier = courier
        self._client = client
        self._bulk_limit = bulk_limit
        self._fields = fields  # the activity types' fields, by event code (read-backs)
        self._progress = progress
        self._stopping = stopping
        self._stop = stop
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
        value is not the one sent. Rows to be looked up first wait for the calibration."""
        queue, courier = self._queue, self._courier
        wanted = self.options.verify_first
        waiting: list[Job] = []
        courier.deferring = True
        try:
            tries = 0
            while len(courier.created) < wanted and tries < wanted + 24:
                job = await queue.get()
                if job is None:
                    break
                if job.reconcile_first:
                    waiting.append(job)
                    continue
                tries += 1
                if self._stopping.is_set() or not await self.guarded(courier.deliver(job), job):
                    return
                self._progress.done()
            if self._stopping.is_set() or not courier.created:
                return
            await self._check_stored(courier.created[:wanted])
            await courier.calibrate()
            await courier.settle_offset()
        except Stopped:
            return
        finally:
            courier.deferring = False
            queue.put_front(courier.deferred + waiting)
            courier.deferred.clear()
            self._gate.set()

    async def _check_stored(self, created: list[tuple[Activity, str]]) -> None:
        """Read the first created rows back; stop the run when a value differs."""
        courier = self._courier
        for item, activity_id in created:
            courier.tally.verify_calls += 1
            try:
                found = await read_back(courier, self._client, item, activity_id,
                                        self._fields(item.event), courier.reading.entities)
            except LookupFailed as exc:
                log.warning("first rows not read back", row=item.row, reason=str(exc))
                return
            if found:
                shown = "; ".join(
                    f"column {d.column!r} ({d.label}): sent {d.sent!r}, stored "
                    + ("nothing" if d.stored is None else repr(d.stored)) for d in found[:5])
                self._stop(AbortRun(
                    f"row {item.row} (activity {activity_id}) was stored with other values "
                    f"than sent: {shown}. Nothing more was sent: check the mapping and the "
                    "activity type's fields (`bulkpost verify` reads more rows back), then "
                    "run the same command again"))
                return
        log.info("first rows read back: stored as sent", rows=len(created))

    async def _work(self) -> None:
        await self._gate.wait()
        while (job := await self._queue.get()) is not None:
            if self._stopping.is_set() or not await self.guarded(
                    self._courier.deliver(job), job):
                return
            self._progress.done()

    async def _work_bulk(self) -> None:
        await self._gate.wait()
        courier, size = self._courier, self.options.batch_size
        while jobs := await self._queue.get_batch(size, _bulk_kind):
            if self._stopping.is_set():
                return
            if len(jobs) == 1 and jobs[0].reconcile_first:
                # To be looked up first: on its own, under the single-call limit.
                done = await self.guarded(courier.deliver(jobs[0]), jobs[0])
            else:
                done = await self.guarded(courier.deliver_batch(jobs, self._bulk_limit),
                                          jobs[0])
            if not done:
                return
            self._progress.done(len(jobs))  # at once: the rate sees one batch, not a burst

    async def guarded(self, delivery: Awaitable[Any], job: Job) -> bool:
        """Await a delivery; on a write failure or a bug, stop the run and say False."""
        try:
            await delivery
        except ResultsWriteError as exc:
            self._stop(exc)
            return False
        except Exception as exc:  # a bug: stop cleanly, with a summary, rather than hang
            log.error("internal error", row=job.activity.row, exc_info=exc)
            self._stop(AbortRun(f"internal error at row {job.activity.row} "
                                f"({type(exc).__name__}: {exc}); please report it. "
                                "Rerun to resume"))
            return False
        return True


def _bulk_kind(job: Job) -> str | None:
    """Which bulk endpoint a row goes to; None: it goes alone (it is looked up first)."""
    if job.reconcile_first:
        return None
    return "email" if by_email(job.activity) else "id"
