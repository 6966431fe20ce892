"""The run: reader → bounded queue → pool of workers under one rate limit → results log.

This is the thin shell that wires the pure core to I/O. A feeder reads and maps batches
off the event loop (``asyncio.to_thread``), plans each row against the results file and
puts the rows to send on a bounded queue, so memory stays flat whatever the input size.
Workers take rows, mark them in flight (durably), post them under the shared
:class:`RateLimit`, retry what may be retried, and record every outcome.

Stopping: a fatal answer (401/404), a signal or an unwritable results file stops all new
requests at once; requests already on the wire are let finish for a bounded time, then
everything is flushed and the results file compacted. A second SIGINT cancels at once: rows
on the wire stay ``unknown``.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bulkpost.activity import Activity, InvalidRow, RowMapper
from bulkpost.client import Credentials, LeadSquaredClient
from bulkpost.errors import AbortRun, BulkpostError, ResultsWriteError, UsageError
from bulkpost.mapping import Mapping, check_columns
from bulkpost.progress import Progress
from bulkpost.ratelimit import RateLimit, RateSpec
from bulkpost.response import Classified, Verdict
from bulkpost.results import ResultsLog, RowOutcome
from bulkpost.resume import Action, Status, plan_row
from bulkpost.source import Source, count_rows, open_source

log = structlog.get_logger("bulkpost")


@dataclass(slots=True)
class RunOptions:
    """Everything one run needs; the CLI and the Python API both build one."""

    input: Path
    mapping: Mapping
    results: Path
    host: str = ""
    credentials: Credentials | None = None
    rate: RateSpec = field(default_factory=lambda: RateSpec(25, 5.0))
    rate_margin: float | None = None  # seconds; None: 2% of the window
    workers: int = 0  # 0: enough to keep the limit busy
    dry_run: bool = False
    resend_unknown: bool = False
    encoding: str = "utf-8"
    max_attempts: int = 5
    backoff: float = 1.0
    timeout: float = 30.0
    drain_timeout: float = 30.0
    max_rate_limited: float = 900.0  # seconds of rate limiting without a success
    progress: bool = False

    def worker_count(self) -> int:
        if self.workers > 0:
            return self.workers
        # Enough requests in flight to keep the limit busy even at 4 s of latency.
        return min(64, max(2, math.ceil(self.rate.per_second * 4)))


@dataclass(slots=True)
class Summary:
    """What happened to the input's rows. Printed as the last line of stdout."""

    rows: int = 0
    posted: int = 0
    skipped: int = 0
    failed: int = 0
    rejected: int = 0
    invalid: int = 0
    unknown: int = 0
    to_send: int = 0
    rate_limited: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    calls_per_s: float = 0.0
    dry_run: bool = False
    aborted: str = ""
    results: str = ""

    def count(self, status: Status) -> None:
        name = status.value
        setattr(self, name, getattr(self, name) + 1)

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 3
        not_done = self.failed + self.rejected + self.invalid + self.unknown
        if self.dry_run:
            return 1 if self.invalid else 0
        return 0 if not_done == 0 else 1

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rows": self.rows, "posted": self.posted, "skipped": self.skipped,
            "failed": self.failed, "rejected": self.rejected, "invalid": self.invalid,
            "unknown": self.unknown, "elapsed_s": round(self.elapsed_s, 3),
            "calls_per_s": round(self.calls_per_s, 3), "rate_limited": self.rate_limited,
            "retries": self.retries, "results": self.results, "exit_code": self.exit_code,
        }
        if self.dry_run:
            data["dry_run"] = True
            data["to_send"] = self.to_send
        if self.aborted:
            data["aborted"] = self.aborted
        return data


class _Retry(Exception):
    """An attempt whose answer says: back off and try again."""

    def __init__(self, outcome: Classified) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


class _Stopped(Exception):
    """The run is stopping; this row was not sent (again)."""


class Run:
    """One execution of ``bulkpost run``."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.summary = Summary(dry_run=options.dry_run, results=str(options.results))
        self.limit = RateLimit(options.rate, options.rate_margin)
        self.stopping = asyncio.Event()
        self._abort: BulkpostError | None = None
        self._calls = 0
        self._rate_limited_since: float | None = None
        self._on_wire: set[asyncio.Task[Any]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._feeder: asyncio.Task[None] | None = None
        self._interrupts = 0
        self.progress = Progress(enabled=options.progress,
                                 calls_per_second=self.limit.sustained_per_second)

    # -- control -------------------------------------------------------------------------
    def stop(self, error: BulkpostError) -> None:
        """Stop sending now; requests on the wire may finish (bounded by drain_timeout)."""
        if self._abort is None:
            self._abort = error
            log.error("stopping", reason=str(error))
        self.stopping.set()
        if self._feeder is not None:
            self._feeder.cancel()
        for task in self._workers:
            if task not in self._on_wire:
                task.cancel()

    def interrupt(self, signame: str) -> None:
        self._interrupts += 1
        if self._interrupts == 1:
            log.warning("interrupted: finishing requests on the wire; interrupt again to quit "
                        "at once", signal=signame)
            self.stop(AbortRun(f"interrupted by {signame}"))
        else:
            log.warning("interrupted again: stopping at once; rows on the wire stay unknown",
                        signal=signame)
            for task in self._workers:
                task.cancel()

    # -- the run ---------------------------------------------------------------------------
    async def execute(self) -> Summary:
        opts = self.options
        source = open_source(opts.input, opts.mapping.used_columns(), encoding=opts.encoding)
        check_columns(opts.mapping, source.columns, str(opts.input))
        results = ResultsLog(opts.results).open()
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self.interrupt, signal.Signals(signum).name)
                installed.append(signum)
            except (NotImplementedError, RuntimeError):
                pass
        counter: asyncio.Task[int | None] | None = None
        try:
            if opts.progress:
                if source.total_rows is not None:
                    self.progress.set_total(source.total_rows)
                else:
                    counter = loop.create_task(asyncio.to_thread(
                        count_rows, opts.input, encoding=opts.encoding))
                    counter.add_done_callback(
                        lambda t: self.progress.set_total(t.result()) if not t.cancelled()
                        and t.exception() is None else None)
            log.info("run started", input=str(opts.input), results=str(opts.results),
                     rate=str(opts.rate), workers=opts.worker_count(), dry_run=opts.dry_run,
                     resumed_rows=sum(results.counts().values()))
            if opts.dry_run:
                await self._feed(source, results, None)
            else:
                await self._post_all(source, results)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            if counter is not None:
                counter.cancel()
            self.progress.close()
            self.summary.elapsed_s = time.monotonic() - started
            if self.summary.elapsed_s > 0:
                self.summary.calls_per_s = self._calls / self.summary.elapsed_s
            try:
                if self._interrupts < 2:
                    await results.sync()
                    results.compact()
            finally:
                results.close()
        if self._abort is not None:
            if isinstance(self._abort, AbortRun):
                self.summary.aborted = str(self._abort)
            else:
                raise self._abort
        log.info("run finished", **self.summary.as_dict())
        return self.summary

    async def _post_all(self, source: Source, results: ResultsLog) -> None:
        opts = self.options
        assert opts.credentials is not None
        queue: asyncio.Queue[Activity | None] = asyncio.Queue(maxsize=opts.worker_count() * 4)
        async with LeadSquaredClient(opts.host, opts.credentials, timeout=opts.timeout,
                                     connections=opts.worker_count()) as client:
            self._feeder = asyncio.create_task(self._feed(source, results, queue))
            self._workers = [asyncio.create_task(self._work(queue, client, results))
                             for _ in range(opts.worker_count())]
            everything: asyncio.Future[Any] = asyncio.gather(self._feeder, *self._workers)
            stopped: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait({everything, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if everything.done():
                    error = everything.exception()
                    if isinstance(error, BulkpostError):
                        self.stop(error)
                    elif error is not None and not isinstance(error, asyncio.CancelledError):
                        raise error
                if self.stopping.is_set():
                    # Requests on the wire may finish, for a bounded time.
                    _done, late = await asyncio.wait(self._workers, timeout=opts.drain_timeout)
                    for task in late:
                        task.cancel()
            finally:
                stopped.cancel()
                await asyncio.gather(self._feeder, *self._workers, return_exceptions=True)

    # -- feeder ----------------------------------------------------------------------------
    def _read_and_map(self, source: Source,
                      mapper: RowMapper) -> list[Activity | InvalidRow] | None:
        batch = source.next_batch()
        if batch is None:
            return None
        mapped: list[Activity | InvalidRow] = [
            InvalidRow(row, "", "", reason, "") for row, reason in batch.broken]
        mapped.extend(mapper.map_batch(batch.rows, batch.columns))
        mapped.sort(key=lambda item: item.row)
        return mapped

    async def _feed(self, source: Source, results: ResultsLog,
                    queue: asyncio.Queue[Activity | None] | None) -> None:
        opts = self.options
        mapper = RowMapper(opts.mapping, source.utc_columns)
        summary = self.summary
        while not self.stopping.is_set():
            items = await asyncio.to_thread(self._read_and_map, source, mapper)
            if items is None:
                if queue is not None:
                    for _ in range(opts.worker_count()):
                        await queue.put(None)  # one end mark per worker
                return
            for item in items:
                summary.rows += 1
                previous = results.previous(item.row)
                action = plan_row(item, previous, opts.resend_unknown)
                if action is Action.SEND:
                    assert isinstance(item, Activity)
                    if queue is None:
                        summary.to_send += 1
                        self.progress.done()
                    else:
                        self.progress.queued()
                        await queue.put(item)
                elif action is Action.RECORD_INVALID:
                    assert isinstance(item, InvalidRow)
                    results.record(RowOutcome(
                        item.row, item.key, Status.INVALID, error_type=item.column,
                        error=item.reason, content_hash=item.content_hash))
                    summary.invalid += 1
                    self.progress.done()
                elif action is Action.SKIP_POSTED:
                    summary.skipped += 1
                    self.progress.done()
                else:
                    assert previous is not None
                    summary.count(previous.status)
                    self.progress.done()

    # -- workers ---------------------------------------------------------------------------
    async def _work(self, queue: asyncio.Queue[Activity | None], client: LeadSquaredClient,
                    results: ResultsLog) -> None:
        while (item := await queue.get()) is not None:
            if self.stopping.is_set():
                return
            try:
                outcome = await self._deliver(item, client, results)
            except ResultsWriteError as exc:
                self.stop(exc)
                return
            self.summary.count(outcome.status)
            self.progress.done(sent=True)

    async def _deliver(self, item: Activity, client: LeadSquaredClient,
                       results: ResultsLog) -> RowOutcome:
        opts = self.options
        attempts = 0
        last: Classified | None = None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(opts.max_attempts),
            wait=wait_exponential_jitter(initial=opts.backoff, max=opts.backoff * 30),
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            await results.mark_in_flight(item.row, item.key, item.content_hash)
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        self.summary.retries += 1
                    last = await self._send(item, client)
                    if last.verdict is Verdict.RETRY:
                        log.debug("retrying", row=item.row, error=last.error, attempt=attempts)
                        raise _Retry(last)
        except _Retry:
            pass
        except _Stopped:
            outcome = self._outcome(item, last, attempts, stopped=True)
            results.record(outcome)
            return outcome
        except asyncio.CancelledError:
            # Cancelled while not on the wire (a graceful stop): nothing of this attempt
            # was sent, so the row may be retried. On the wire it stays ``unknown``.
            task = asyncio.current_task()
            if task in self._on_wire:
                self._on_wire.discard(task)
                self.summary.unknown += 1
            else:
                results.record(self._outcome(item, last, attempts, stopped=True))
                self.summary.failed += 1
            raise
        assert last is not None
        outcome = self._outcome(item, last, attempts)
        results.record(outcome)
        if last.verdict is Verdict.FATAL:
            self.stop(AbortRun(last.error))
        return outcome

    def _outcome(self, item: Activity, last: Classified | None, attempts: int,
                 stopped: bool = False) -> RowOutcome:
        if stopped or last is None:
            error = "stopped before it was sent" if last is None else (
                f"stopped while retrying: {last.error}")
            return RowOutcome(item.row, item.key, Status.FAILED,
                              http_status=last.http_status if last else None,
                              error_type=last.error_type if last else "stopped",
                              error=error, attempts=attempts, content_hash=item.content_hash)
        status = {
            Verdict.POSTED: Status.POSTED,
            Verdict.REJECTED: Status.REJECTED,
            Verdict.RETRY: Status.FAILED,
            Verdict.FATAL: Status.FAILED,
        }[last.verdict]
        return RowOutcome(item.row, item.key, status, activity_id=last.activity_id,
                          http_status=last.http_status, error_type=last.error_type,
                          error=last.error, attempts=attempts, content_hash=item.content_hash)

    async def _send(self, item: Activity, client: LeadSquaredClient) -> Classified:
        """One attempt: wait for a slot, post, and sit out rate limiting until answered."""
        task = asyncio.current_task()
        assert task is not None
        while True:
            if self.stopping.is_set():
                raise _Stopped
            await self.limit.acquire()
            if self.stopping.is_set():
                raise _Stopped
            self._on_wire.add(task)
            self._calls += 1
            # Cancelled here, the task stays "on the wire": its row remains unknown.
            answer = await client.post_activity(item.body)
            self._on_wire.discard(task)
            if answer.verdict is not Verdict.RATE_LIMITED:
                if answer.verdict is Verdict.POSTED:
                    self._rate_limited_since = None
                return answer
            self._note_rate_limited(answer)

    def _note_rate_limited(self, answer: Classified) -> None:
        self.summary.rate_limited += 1
        now = time.monotonic()
        if self._rate_limited_since is None:
            self._rate_limited_since = now
        elif now - self._rate_limited_since > self.options.max_rate_limited:
            self.stop(AbortRun(
                f"rate limited for {now - self._rate_limited_since:.0f} s without a success: "
                "the daily quota may be spent, or another client uses the whole allowance; "
                "run the same command later to resume"))
            raise _Stopped
        if self.limit.paused_for() <= 0:
            log.warning("rate limited by the server: pausing all workers",
                        retry_after=answer.retry_after, error=answer.error)
        self.limit.pause(answer.retry_after)


def run_sync(options: RunOptions, *, configure: Callable[[], None] | None = None) -> Summary:
    """Run to completion on a fresh event loop (the CLI's entry)."""
    if configure is not None:
        configure()
    if not options.dry_run and (options.credentials is None or not options.host):
        raise UsageError("a real run needs --host (or LSQ_HOST) and LSQ_ACCESS_KEY / "
                         "LSQ_SECRET_KEY")
    return asyncio.run(Run(options).execute())
