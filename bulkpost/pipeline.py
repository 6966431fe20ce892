"""The run: reader → bounded queue → pools of workers under their rate limits → results log.

This is the thin shell that wires the pure core to I/O. A feeder reads and maps batches
off the event loop (``asyncio.to_thread``), plans each row against the results file and
puts the rows to send on a bounded queue, so memory stays flat whatever the input size.
Workers take rows, mark them in flight (durably), post them under their shared
:class:`RateLimit`, retry what may be retried, and record every outcome. By ``--mode``:
single-call workers take one row at a time under ``--rate``; bulk workers take up to
``--batch-size`` rows for one bulk call under ``--bulk-rate``; ``both`` runs both pools off
the same queue, adding the two allowances up.

Stopping: a fatal answer (401/404), a signal or an unwritable results file stops all new
requests at once; requests already on the wire are let finish for a bounded time, then
everything is flushed and the results file compacted. A second SIGINT cancels at once: rows
on the wire stay ``unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import structlog

from bulkpost.activity import Activity, FieldRule, InvalidRow, RowMapper, by_email
from bulkpost.calibration import load_reading, save_reading
from bulkpost.client import Credentials, LeadSquaredClient
from bulkpost.delivery import (
    BACKOFF_CAP,
    Courier,
    DeliverySettings,
    Job,
    LookupFailed,
    Stopped,
    Tally,
)
from bulkpost.dispatch import JobQueue
from bulkpost.errors import (
    ACCESS_KEY,
    HOST,
    SECRET_KEY,
    AbortRun,
    BulkpostError,
    Given,
    MappingError,
    ResultsWriteError,
    Setting,
    UsageError,
)
from bulkpost.history import Earlier, History
from bulkpost.mapping import Mapping, check_columns
from bulkpost.preflight import event_codes, run_preflight
from bulkpost.progress import Progress
from bulkpost.ratelimit import RateLimit, RateSpec
from bulkpost.reconcile import Reading, SendWindow
from bulkpost.report import ProblemGroups
from bulkpost.results import ResultsLog, RowOutcome, parse_utc_text
from bulkpost.resume import Action, Previous, Status, other_input, plan_row, posted_differs
from bulkpost.source import (
    NOT_UTF8,
    InputSource,
    Source,
    count_rows,
    describe,
    input_columns,
    open_source,
)
from bulkpost.verify import field_infos, read_back

log = structlog.get_logger("bulkpost")


@dataclass(slots=True)
class RunOptions:
    """Everything one run needs; the CLI and the Python API both build one."""

    input: InputSource  # a CSV or Parquet path, or Arrow data (the Python API)
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
    delimiter: str | None = None  # None: sniffed from the header line
    max_attempts: int = 5
    backoff: float = 1.0
    timeout: float = 30.0
    drain_timeout: float = 30.0
    max_rate_limited: float = 900.0  # seconds of rate limiting without a success
    progress: bool = False
    preflight: bool = True  # read the activity types' schemas and check rows against them
    decimal_comma: bool = False  # accept 12,5 in Number fields (sent as 12.5)
    run_id: str = ""  # "": a new one (new_run_id)
    mode: str = "single"  # single | bulk | both: which calls create activities
    bulk_rate: RateSpec = field(default_factory=lambda: RateSpec(1, 5.0))
    batch_size: int = 25  # activities per bulk call (1..25)
    history: Path | None = None  # keys posted by earlier runs, across inputs (SQLite)
    on_changed: str = "skip"  # skip | post | fail: a key posted before, with other content
    verify_first: int = 1  # rows sent alone and read back before any other (0: none)

    def __post_init__(self) -> None:
        # The CLI's choices refuse these values first: the messages are the Python API's.
        if self.on_changed not in ("skip", "post", "fail"):
            raise UsageError("{given}: expected skip, post or fail",
                             given=Given(Setting("on_changed"), self.on_changed))
        if self.history is not None:
            self.history = Path(self.history)
            if self.history.resolve() == Path(self.results).resolve():
                raise UsageError(f"{self.history}: the history and the results file must be "
                                 "two files")
        if self.mode not in ("single", "bulk", "both"):
            raise UsageError("{given}: expected single, bulk or both",
                             given=Given(Setting("mode"), self.mode))
        if not 1 <= self.batch_size <= 25:
            raise UsageError("{given}: a bulk call takes 1 to 25 activities",
                             given=Given(Setting("batch_size"), self.batch_size))

    def worker_count(self) -> int:
        """Single-call workers (0 in bulk mode, where look-ups and re-sends after a look-up
        are made by the bulk workers themselves, under the single-call limit)."""
        if self.mode == "bulk":
            return 0
        if self.workers > 0:
            return self.workers
        # Enough requests in flight to keep the limit busy even at 4 s of latency. Beside
        # bulk workers, fewer: each holds a row while it waits for a slot, and at the end of
        # the input those rows would wait there while bulk calls could have taken them.
        horizon = 2.5 if self.mode == "both" else 4
        return min(64, max(2, math.ceil(self.rate.per_second * horizon)))

    def bulk_worker_count(self) -> int:
        """Bulk-call workers: enough to keep the bulk limit busy at 8 s a call."""
        if self.mode == "single":
            return 0
        return min(16, max(2, math.ceil(self.bulk_rate.per_second * 8)))

    def connections(self) -> int:
        return max(2, self.worker_count() + self.bulk_worker_count())


def new_run_id() -> str:
    """A run's id, for logs and summaries: its UTC start and a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass(slots=True)
class Summary:
    """What happened to the input's rows. Printed as the last line of stdout."""

    rows: int = 0
    posted: int = 0
    skipped: int = 0  # posted earlier: by an earlier run, or under the same key (--history)
    changed: int = 0  # --history: keys posted before with other content (see --on-changed)
    failed: int = 0
    rejected: int = 0
    invalid: int = 0
    unknown: int = 0
    to_send: int = 0
    calls: int = 0
    rate_limited: int = 0
    retries: int = 0
    reconciled: int = 0
    found_posted: int = 0
    lookups: int = 0  # pages of "Get Activities of a Lead" read to reconcile rows
    calibration_calls: int = 0  # pages read to learn how the account answers look-ups
    verify_calls: int = 0  # first rows read back (--verify-first)
    elapsed_s: float = 0.0
    dry_run: bool = False
    estimated_s: float = 0.0  # dry run: how long sending to_send rows would take
    problems: list[str] = field(default_factory=list)  # dry run: invalid rows, grouped
    aborted: str = ""
    results: str = ""
    run_id: str = ""
    history: str = ""
    undecodable: int = 0  # invalid rows with a cell that is not UTF-8 (not in as_dict)
    interrupted: bool = False  # stopped by a signal: as the user asked (not in as_dict)

    def count(self, status: Status, rows: int = 1) -> None:
        name = status.value
        setattr(self, name, getattr(self, name) + rows)

    def add(self, tally: Tally) -> None:
        """Fold in what the workers counted."""
        for status, rows in tally.statuses.items():
            self.count(status, rows)
        self.calls += tally.calls
        self.rate_limited += tally.rate_limited
        self.retries += tally.retries
        self.reconciled += tally.reconciled
        self.found_posted += tally.found_posted
        self.lookups += tally.lookup_calls
        self.calibration_calls += tally.calibration_calls
        self.verify_calls += tally.verify_calls

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0

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
            "calls": self.calls, "calls_per_s": round(self.calls_per_s, 3),
            "rate_limited": self.rate_limited, "retries": self.retries,
            "reconciled": self.reconciled, "found_posted": self.found_posted,
            "lookups": self.lookups, "calibration_calls": self.calibration_calls,
            "verify_calls": self.verify_calls,
            "results": self.results, "exit_code": self.exit_code, "run_id": self.run_id,
        }
        if self.dry_run:
            data["dry_run"] = True
            data["to_send"] = self.to_send
            data["estimated_s"] = round(self.estimated_s)
            data["problems"] = self.problems
        else:
            # Rows read but not finished when the run stopped (they resume next time).
            data["pending"] = self.rows - sum(getattr(self, s.value) for s in Status)
        if self.history:
            data["history"] = self.history
            data["changed"] = self.changed
        if self.aborted:
            data["aborted"] = self.aborted
        return data


class Run:
    """One execution of ``bulkpost run``."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.summary = Summary(dry_run=options.dry_run, results=str(options.results),
                               run_id=options.run_id or new_run_id(),
                               history=str(options.history or ""))
        self.history: History | None = None
        self.limit = RateLimit(options.rate, options.rate_margin)
        self.bulk_limit = RateLimit(options.bulk_rate, options.rate_margin)
        self.stopping = asyncio.Event()
        self._abort: BulkpostError | None = None
        self._courier: Courier | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._feeder: asyncio.Task[None] | None = None
        # The feeder enqueues a whole mapped batch at once, then waits for the queue to
        # drain below this before enqueuing the next: one wake-up per batch, not per row.
        self._low_water = max(options.worker_count() * 4,
                              options.bulk_worker_count() * options.batch_size * 2)
        self._interrupts = 0
        self._gate = asyncio.Event()  # open once the first rows are checked
        self._gate.set()
        self._fields: Callable[[int], Any] = field_infos(options.mapping, None)
        self.problems = ProblemGroups()
        self.progress = Progress(enabled=options.progress,
                                 calls_per_second=self.activities_per_second())

    def activities_per_second(self) -> float:
        """What the mode's allowances sustain: single calls, full bulk calls, or both."""
        opts, per_second = self.options, 0.0
        if opts.mode != "bulk":
            per_second += self.limit.sustained_per_second
        if opts.mode != "single":
            per_second += self.bulk_limit.sustained_per_second * opts.batch_size
        return per_second

    # -- control -------------------------------------------------------------------------
    def stop(self, error: BulkpostError, *, asked: bool = False) -> None:
        """Stop sending now; requests on the wire may finish (bounded by drain_timeout).
        ``asked``: the user asked for it (a signal), which is no error."""
        if self._abort is None:
            self._abort = error
            if not asked:
                log.error("stopping", reason=str(error))
        self.stopping.set()
        if self._feeder is not None:
            self._feeder.cancel()
        on_wire = self._courier.on_wire if self._courier else set()
        for task in self._workers:
            if task not in on_wire:
                task.cancel()

    def interrupt(self, signame: str) -> None:
        self._interrupts += 1
        if self._interrupts == 1:
            log.warning("interrupted: finishing requests on the wire; interrupt again to quit "
                        "at once", signal=signame)
            self.summary.interrupted = True
            self.stop(AbortRun(f"interrupted by {signame}"), asked=True)
        else:
            log.warning("interrupted again: stopping at once; rows on the wire stay unknown",
                        signal=signame)
            for task in self._workers:
                task.cancel()

    # -- the run ---------------------------------------------------------------------------
    async def execute(self) -> Summary:
        """The whole run; every log line it writes carries the run id."""
        with structlog.contextvars.bound_contextvars(run_id=self.summary.run_id):
            return await self._execute()

    async def _execute(self) -> Summary:
        opts = self.options
        check_columns(opts.mapping, input_columns(opts.input, encoding=opts.encoding,
                                                  delimiter=opts.delimiter),
                      describe(opts.input))
        source = open_source(opts.input, opts.mapping.used_columns(), encoding=opts.encoding,
                             delimiter=opts.delimiter)
        if opts.history is None:
            return await self._execute_with(source, None)
        history = History(opts.history, self.summary.run_id).open()
        try:
            self.history = history
            return await self._execute_with(source, history)
        finally:
            history.close()

    async def _execute_with(self, source: Source, history: History | None) -> Summary:
        opts = self.options
        results = ResultsLog(opts.results, companion=history).open()
        if history is not None and not opts.dry_run:
            try:
                history.register(describe(opts.input), str(opts.results))
            except BaseException:
                results.close()
                raise
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
                        count_rows, opts.input, encoding=opts.encoding,
                        delimiter=opts.delimiter))
                    counter.add_done_callback(
                        lambda t: self.progress.set_total(t.result()) if not t.cancelled()
                        and t.exception() is None else None)
            finished = results.counts()
            self.progress.resuming(finished[Status.POSTED] + finished[Status.REJECTED]
                                   + finished[Status.SKIPPED])
            log.info("run started", input=describe(opts.input), results=str(opts.results),
                     rate=str(opts.rate), workers=opts.worker_count(), mode=opts.mode,
                     bulk_rate=str(opts.bulk_rate) if opts.mode != "single" else None,
                     bulk_workers=opts.bulk_worker_count(), dry_run=opts.dry_run,
                     resumed_rows=sum(results.counts().values()))
            async with contextlib.AsyncExitStack() as stack:
                client: LeadSquaredClient | None = None
                if opts.credentials is not None and opts.host:
                    client = await stack.enter_async_context(LeadSquaredClient(
                        opts.host, opts.credentials, timeout=opts.timeout,
                        connections=opts.connections()))
                    settings = DeliverySettings(opts.max_attempts, opts.backoff, opts.timeout,
                                                opts.max_rate_limited)
                    self._courier = Courier(settings, self.limit, client, results,
                                            self.stopping, self.stop, history,
                                            load_reading(opts.results, opts.host, history))
                    if self._courier.reading.calibrated:
                        log.info("look-ups calibrated by an earlier run",
                                 reading=self._courier.reading.describe())

                    def keep(reading: Reading) -> None:
                        if reading.calibrated:
                            save_reading(opts.results, opts.host, reading, history,
                                         self.summary.run_id)

                    self._courier.on_learned = keep
                try:
                    rules = await self._preflight(client)
                except Stopped:
                    rules = None  # a fatal answer: stop() has recorded why
                except AbortRun as exc:
                    rules = None
                    self.stop(exc)
                if self._abort is None:
                    await self._check_same_input(results, rules)
                    if opts.dry_run:
                        await self._feed(source, results, None, rules)
                    else:
                        assert client is not None and self._courier is not None
                        self._fields = field_infos(opts.mapping, rules)
                        await self._post_all(source, results, self._courier, client, rules)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            if counter is not None:
                counter.cancel()
            self.progress.close()
            self.summary.elapsed_s = time.monotonic() - started
            if self._courier is not None:
                self.summary.add(self._courier.tally)
            try:
                if self._interrupts < 2:
                    await results.sync()
                    results.compact()
            except ResultsWriteError as exc:
                # The log is valid as it stands (a rerun reads it the same); say so, and
                # keep the reason the run stopped, if it stopped.
                log.error("results file not compacted", reason=str(exc))
                if self._abort is None:
                    self._abort = exc
            finally:
                results.close()
        if self._abort is not None:
            if isinstance(self._abort, AbortRun):
                self.summary.aborted = str(self._abort)
            else:
                if history is not None:
                    self._finish_history(history, self._abort.exit_code)
                raise self._abort
        if opts.dry_run:
            self.summary.problems = self.problems.lines()
            # What the real run would take at the configured rate (look-ups not counted).
            self.summary.estimated_s = self.summary.to_send / self.activities_per_second()
        if history is not None:
            self._finish_history(history)
        log.info("run finished", **self.summary.as_dict())
        return self.summary

    def _finish_history(self, history: History, exit_code: int | None = None) -> None:
        """Commit the history's last writes and how the run ended; warn of changed keys."""
        summary = self.summary
        if summary.changed and self.options.on_changed == "skip":
            log.warning("rows skipped: their key was posted before with other content; "
                        "--on-changed post sends them, fail lists them", rows=summary.changed)
        if self.options.dry_run:
            return
        try:
            history.finish(summary.exit_code if exit_code is None else exit_code,
                           summary.posted, summary.skipped, summary.changed)
        except ResultsWriteError as exc:
            # Its claims were committed before each send; only the last posted marks and the
            # run's line are missing, and the next run repairs them from the results file.
            log.error("history not finished", reason=str(exc))
            if not summary.aborted:
                summary.aborted = str(exc)

    async def _preflight(self, client: LeadSquaredClient | None
                         ) -> dict[int, tuple[FieldRule, ...]] | None:
        """The field rules per event code, or None when the schemas are not read."""
        opts = self.options
        if not opts.preflight or client is None or self._courier is None:
            if opts.mapping.display_names:
                raise MappingError(
                    f"{opts.mapping.source}: fields given by display name "
                    f"({', '.join(map(repr, opts.mapping.display_names))}) need the activity "
                    "type's schema: give --host and the keys (and no --no-preflight), or use "
                    "SchemaNames")
            if opts.dry_run and opts.preflight:
                log.warning("no --host or keys: the dry run checks rows without the activity "
                            "types' schemas")
            return None
        codes = await event_codes(opts.mapping, opts.input, opts.encoding, opts.delimiter)
        if not codes:
            if opts.mapping.display_names:
                raise MappingError(f"{opts.mapping.source}: fields given by display name need "
                                   "the event codes before the run: give a constant event, or "
                                   "an input that can be read twice")
            return None
        result = await run_preflight(opts.mapping, self._courier, client, codes,
                                     decimal_comma=opts.decimal_comma)
        self._courier.kinds = {code: {rule.schema_name: rule.kind for rule in rules}
                               for code, rules in result.rules.items()}
        return result.rules

    async def _check_same_input(self, results: ResultsLog,
                                rules: dict[int, tuple[FieldRule, ...]] | None) -> None:
        """Refuse, before any call, a results file whose posted rows now hold other
        content: those rows would be skipped, never sent (another input, or the same file
        edited where it was posted). One read of the input up to the last posted row; a
        stream that can be read once only is checked row by row as it is planned."""
        last = results.last_posted_row()
        if not last or isinstance(self.options.input, pa.RecordBatchReader):
            return
        differ = await asyncio.to_thread(self._posted_differing, results, rules, last)
        if differ:
            raise other_input(differ)

    def _posted_differing(self, results: ResultsLog,
                          rules: dict[int, tuple[FieldRule, ...]] | None,
                          last: int) -> list[int]:
        """The first rows (up to six) up to ``last`` recorded posted with other content."""
        opts = self.options
        source = open_source(opts.input, opts.mapping.used_columns(), encoding=opts.encoding,
                             delimiter=opts.delimiter)
        mapper = RowMapper(opts.mapping, source.utc_columns, source.typed_columns, rules)
        differ: list[int] = []
        while len(differ) < 6 and (batch := source.next_batch()) is not None:
            items: list[Activity | InvalidRow] = [
                InvalidRow(row, "", "", reason, "") for row, reason in batch.broken]
            items.extend(mapper.map_batch(batch.rows, batch.columns))
            differ.extend(item.row for item in items
                          if item.row <= last and posted_differs(item, results.previous(item.row)))
            if batch.rows and batch.rows[-1] >= last:
                break
        return sorted(differ)[:6]

    async def _post_all(self, source: Source, results: ResultsLog, courier: Courier,
                        client: LeadSquaredClient,
                        rules: dict[int, tuple[FieldRule, ...]] | None) -> None:
        opts = self.options
        queue: JobQueue[Job] = JobQueue(self._low_water)
        self._feeder = asyncio.create_task(self._feed(source, results, queue, rules))
        self._workers = []
        if opts.verify_first:
            self._gate.clear()
            self._workers.append(asyncio.create_task(self._first_rows(queue, courier, client)))
        self._workers += [asyncio.create_task(self._work(queue, courier))
                          for _ in range(opts.worker_count())]
        self._workers += [asyncio.create_task(self._work_bulk(queue, courier))
                          for _ in range(opts.bulk_worker_count())]
        everything: asyncio.Future[Any] = asyncio.gather(self._feeder, *self._workers)
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({everything, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if everything.done():
                error = everything.exception()
                if isinstance(error, BulkpostError):
                    # An input or usage problem found mid-file, after requests went out,
                    # is an abort: the summary must say what was done.
                    sent = courier.tally.creates > 0
                    self.stop(AbortRun(str(error)) if sent and error.exit_code == 2
                              else error)
                elif error is not None and not isinstance(error, asyncio.CancelledError):
                    log.error("internal error", exc_info=error)
                    self.stop(AbortRun(f"internal error ({type(error).__name__}: {error}); "
                                       "please report it. Rerun to resume"))
            if self.stopping.is_set():
                # Requests on the wire may finish, for a bounded time.
                _done, late = await asyncio.wait(self._workers, timeout=opts.drain_timeout)
                for task in late:
                    task.cancel()
        finally:
            stopped.cancel()
            for task in (self._feeder, *self._workers):
                task.cancel()  # no-op for the finished ones
            await asyncio.gather(self._feeder, *self._workers, return_exceptions=True)

    # -- feeder ----------------------------------------------------------------------------
    def _read_and_map(self, source: Source, mapper: RowMapper
                      ) -> tuple[list[Activity | InvalidRow], dict[int, Earlier]] | None:
        """The next batch, mapped, and what the history holds of its rows' keys."""
        batch = source.next_batch()
        if batch is None:
            return None
        mapped: list[Activity | InvalidRow] = [
            InvalidRow(row, "", batch.broken_columns.get(row, ""), reason, "")
            for row, reason in batch.broken]
        mapped.extend(mapper.map_batch(batch.rows, batch.columns))
        if batch.broken:  # only then are the rows out of order
            mapped.sort(key=lambda item: item.row)
        screened: dict[int, Earlier] = {}
        if self.history is not None:
            screened = self.history.screen([i for i in mapped if isinstance(i, Activity)])
        return mapped, screened

    async def _feed(self, source: Source, results: ResultsLog,
                    queue: JobQueue[Job] | None,
                    rules: dict[int, tuple[FieldRule, ...]] | None) -> None:
        opts = self.options
        mapper = RowMapper(opts.mapping, source.utc_columns, source.typed_columns, rules)
        summary = self.summary
        while not self.stopping.is_set():
            got = await asyncio.to_thread(self._read_and_map, source, mapper)
            if queue is not None:
                await queue.wait_for_room()  # the next batch was read and mapped meanwhile
            if got is None:
                if queue is not None:
                    queue.close()
                return
            items, screened = got
            for item in items:
                summary.rows += 1
                previous = results.previous(item.row)
                action = plan_row(item, previous, opts.resend_unknown)
                earlier = screened.get(item.row) if screened else None
                if self.history is not None:
                    decided = self._against_history(item, previous, action, earlier, results)
                    if decided is None:
                        continue  # settled by the history
                    action, previous = decided
                if action in (Action.SEND, Action.RECONCILE):
                    assert isinstance(item, Activity)
                    if queue is None:
                        summary.to_send += 1
                        self.progress.done()
                    else:
                        queue.put(self._job(item, action, previous, results, earlier))
                elif action is Action.RECORD_INVALID:
                    assert isinstance(item, InvalidRow)
                    if NOT_UTF8 in item.reason:
                        summary.undecodable += 1
                    results.record(RowOutcome(
                        item.row, item.key, Status.INVALID, error_type=item.column,
                        error=item.reason, content_hash=item.content_hash))
                    self.problems.add(item.column, item.reason, item.row)
                    summary.invalid += 1
                    self.progress.done()
                elif action is Action.SKIP_POSTED:
                    summary.skipped += 1
                    self.progress.done(passed_over=True)
                    if previous is not None and isinstance(item, Activity):
                        self._offer_posted(item, previous, results)
                else:
                    assert previous is not None
                    summary.count(previous.status)
                    self.progress.done(passed_over=True)

    def _offer_posted(self, item: Activity, previous: Previous, results: ResultsLog) -> None:
        """A row an earlier run posted, with this very content: what calibration may look
        up, while look-ups are not calibrated (a resumed run)."""
        courier = self._courier
        if (courier is None or courier.reading.calibrated or courier.distrust
                or previous.status is not Status.POSTED
                or previous.content_hash != item.content_hash):
            return
        outcome = results.last_outcome(item.row)
        if outcome is not None and outcome.activity_id and outcome.updated_at:
            courier.offer_sample(item, outcome.activity_id, self._sent_until(
                parse_utc_text(outcome.updated_at), max(1, outcome.attempts)))

    def _sent_until(self, last: datetime, attempts: int) -> SendWindow:
        """When attempts that ended at ``last`` may have reached the API: each of at most
        a timeout and a backoff."""
        opts = self.options
        span = attempts * (opts.timeout + BACKOFF_CAP * opts.backoff)
        return SendWindow.around(last - timedelta(seconds=span), last, opts.timeout)

    def _against_history(self, item: Activity | InvalidRow, previous: Previous | None,
                         action: Action, earlier: Earlier | None,
                         results: ResultsLog) -> tuple[Action, Previous | None] | None:
        """The row's plan, and the earlier outcome its job carries, given what the history
        holds of its key; None: the row was settled here (``skipped``, or ``invalid`` by
        ``--on-changed fail``).

        A row skipped as ``changed`` or ``duplicate key`` is decided again: ``--on-changed``
        or the input's other rows may say otherwise now. A row skipped because its key was
        posted is as final as a posted row.
        """
        history = self.history
        assert history is not None
        line = None  # the row's skipped line, when it is decided again
        if action is Action.SKIP_POSTED and previous is not None and isinstance(item, Activity):
            recorded = results.last_outcome(item.row)  # its posted or skipped line
            if (previous.status is Status.SKIPPED and recorded is not None
                    and recorded.error_type in ("changed", "duplicate key")):
                line, action, previous = recorded, Action.SEND, None
            elif (recorded is not None and recorded.activity_id and not self.options.dry_run
                  and (earlier is None or not (earlier.posted or earlier.row))):
                # Posted (by this row, or by the run its skipped line names), but not in this
                # history: the run stopped before committing it, or used another history.
                # Repair that (a key posted since, with any content, is left as it is).
                history.posted(item, recorded.activity_id)
        if earlier is None or action not in (Action.SEND, Action.RECONCILE):
            return action, previous
        assert isinstance(item, Activity)
        key = f"key {item.key!r}" if item.key else "its content"
        if earlier.same_content:
            if earlier.row or earlier.posted:
                self._settle(item, results, Status.SKIPPED, "duplicate key" if earlier.row
                             else "history", f"{key} was {earlier.describe()}",
                             earlier.activity_id if earlier.posted else "", line)
                return None
            return Action.RECONCILE, previous  # a run that stopped sent it: look it up
        if not earlier.posted and not earlier.row:
            # Runs that stopped sent only other content under this key; whether that was
            # created cannot be looked up (its content is not known here). The key may hold
            # nothing yet: send this row.
            log.info("key sent by a run that stopped, with other content: sending this row",
                     row=item.row, run_of_the_other=earlier.run_id)
            return action, previous
        self.summary.changed += 1
        if self.options.on_changed == "post":
            return action, previous
        if self.options.on_changed == "skip":
            self._settle(item, results, Status.SKIPPED, "changed",
                         f"{key} was {earlier.describe()}, with other content; skipped "
                         "(--on-changed skip)", "", line)
            return None
        column = self.options.mapping.key_column or "key"
        reason = f"{key} was {earlier.describe()}, with other content (--on-changed fail)"
        self._settle(item, results, Status.INVALID, column, reason, "", None)
        self.problems.add(column, reason, item.row)
        return None

    def _settle(self, item: Activity, results: ResultsLog, status: Status, error_type: str,
                error: str, activity_id: str, line: RowOutcome | None) -> None:
        """Count a row the feeder settles without a call, and record it, unless ``line``
        (its skipped line, decided again) says so already or this is a dry run (which
        decides nothing)."""
        unchanged = line is not None and (line.status, line.error_type, line.activity_id) == (
            status, error_type, activity_id)
        if not unchanged and not (self.options.dry_run and status is Status.SKIPPED):
            results.record(RowOutcome(item.row, item.key, status, activity_id=activity_id,
                                      error_type=error_type, error=error,
                                      content_hash=item.content_hash))
        self.summary.count(status)
        self.progress.done(passed_over=status is Status.SKIPPED)

    def _job(self, item: Activity, action: Action, previous: Previous | None,
             results: ResultsLog, earlier: Earlier | None = None) -> Job:
        if action is not Action.RECONCILE:
            return Job(item, previous.status if previous else None)
        window = None
        outcome = None
        if previous is not None and previous.status in (Status.UNKNOWN, Status.FAILED):
            outcome = results.last_outcome(item.row)
        if outcome is not None and outcome.updated_at:  # the earlier run's, in this file
            window = self._sent_until(parse_utc_text(outcome.updated_at),
                                      max(1, outcome.attempts))
        if earlier is not None and not earlier.posted and not earlier.row:
            # The history's claim, marked at ``at`` by its last attempt, of at most
            # --max-attempts.
            window = self._sent_until(datetime.fromtimestamp(earlier.at, UTC),
                                      self.options.max_attempts).joined(window)
        return Job(item, previous.status if previous else None, reconcile_first=True,
                   window=window)

    # -- workers ---------------------------------------------------------------------------
    async def _first_rows(self, queue: JobQueue[Job], courier: Courier,
                          client: LeadSquaredClient) -> None:
        """``--verify-first``: send rows alone until N are created, read them back and
        calibrate the look-ups, before any other row goes; stop (exit 3) when a stored
        value is not the one sent. Rows to be looked up first wait for the calibration."""
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
                if self.stopping.is_set() or not await self._guarded(courier.deliver(job), job):
                    return
                self.progress.done()
            if self.stopping.is_set() or not courier.created:
                return
            await self._check_stored(courier, client, courier.created[:wanted])
            await courier.calibrate()
            await courier.settle_offset()
        except Stopped:
            return
        finally:
            courier.deferring = False
            queue.put_front(courier.deferred + waiting)
            courier.deferred.clear()
            self._gate.set()

    async def _check_stored(self, courier: Courier, client: LeadSquaredClient,
                            created: list[tuple[Activity, str]]) -> None:
        """Read the first created rows back; stop the run when a value differs."""
        for item, activity_id in created:
            courier.tally.verify_calls += 1
            try:
                found = await read_back(courier, client, item, activity_id,
                                        self._fields(item.event), courier.reading.entities)
            except LookupFailed as exc:
                log.warning("first rows not read back", row=item.row, reason=str(exc))
                return
            if found:
                shown = "; ".join(
                    f"column {d.column!r} ({d.label}): sent {d.sent!r}, stored "
                    + ("nothing" if d.stored is None else repr(d.stored)) for d in found[:5])
                self.stop(AbortRun(
                    f"row {item.row} (activity {activity_id}) was stored with other values "
                    f"than sent: {shown}. Nothing more was sent: check the mapping and the "
                    "activity type's fields (`bulkpost verify` reads more rows back), then "
                    "run the same command again"))
                return
        log.info("first rows read back: stored as sent", rows=len(created))

    async def _work(self, queue: JobQueue[Job], courier: Courier) -> None:
        await self._gate.wait()
        while (job := await queue.get()) is not None:
            if self.stopping.is_set() or not await self._guarded(courier.deliver(job), job):
                return
            self.progress.done()

    async def _work_bulk(self, queue: JobQueue[Job], courier: Courier) -> None:
        await self._gate.wait()
        size = self.options.batch_size
        while jobs := await queue.get_batch(size, _bulk_kind):
            if self.stopping.is_set():
                return
            if len(jobs) == 1 and jobs[0].reconcile_first:
                # To be looked up first: on its own, under the single-call limit.
                done = await self._guarded(courier.deliver(jobs[0]), jobs[0])
            else:
                done = await self._guarded(courier.deliver_batch(jobs, self.bulk_limit),
                                           jobs[0])
            if not done:
                return
            self.progress.done(len(jobs))  # at once: the rate sees one batch, not a burst

    async def _guarded(self, delivery: Awaitable[Any], job: Job) -> bool:
        """Await a delivery; on a write failure or a bug, stop the run and say False."""
        try:
            await delivery
        except ResultsWriteError as exc:
            self.stop(exc)
            return False
        except Exception as exc:  # a bug: stop cleanly, with a summary, rather than hang
            log.error("internal error", row=job.activity.row, exc_info=exc)
            self.stop(AbortRun(f"internal error at row {job.activity.row} "
                               f"({type(exc).__name__}: {exc}); please report it. "
                               "Rerun to resume"))
            return False
        return True


def _bulk_kind(job: Job) -> str | None:
    """Which bulk endpoint a row goes to; None: it goes alone (it is looked up first)."""
    if job.reconcile_first:
        return None
    return "email" if by_email(job.activity) else "id"


def run_sync(options: RunOptions) -> Summary:
    """Run to completion on a fresh event loop (the CLI's entry)."""
    if not options.dry_run and (options.credentials is None or not options.host):
        raise UsageError("a real run needs {host} (or LSQ_HOST) and {access} / {secret}",
                         host=HOST, access=ACCESS_KEY, secret=SECRET_KEY)
    return asyncio.run(Run(options).execute())
