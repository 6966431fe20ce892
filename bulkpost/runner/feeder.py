"""The feeder: the input read, mapped and planned, a batch at a time, onto the workers' queue.

Owns the one pass over the input. A batch is read and mapped off the event loop
(``asyncio.to_thread``), with what the history holds of its rows' keys; then each row is
planned (:func:`bulkpost.core.planner.decide`) and the plan applied: a row to send goes on the
bounded queue as a :class:`~bulkpost.delivery.single.Job`; any other is recorded and counted here.
The feeder decides nothing itself. The next batch is put once the queue has drained below
its low-water mark, so memory stays flat whatever the input size.

Before the first row: the activity types' field rules the rows are mapped by
(:func:`field_rules`, read by the preflight), the progress bar's counts
(:func:`track_progress`), and :meth:`Feeder.read_ahead`, one read of the input that refuses
a results file whose posted rows now hold other content and takes every row's key
(:class:`~bulkpost.storage.input_keys.InputKeys`), so that the rows of a repeated key are planned
knowing all of them (:mod:`bulkpost.core.repeats`). An input that can be read once only is
checked row by row as it is planned, each row knowing the rows before it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pyarrow as pa
import structlog

from bulkpost.core.activity import Activity, FieldRule, InvalidRow, RowMapper
from bulkpost.core.attempts import Job
from bulkpost.core.key_holder import KeyHolder
from bulkpost.core.options import RunOptions
from bulkpost.core.planner import Plan, PlanOptions, decide, needs_line
from bulkpost.core.repeats import Repeat
from bulkpost.core.resume import Action, other_input, posted_differs
from bulkpost.core.statuses import Status
from bulkpost.core.summary import Summary
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.lookups import Lookups
from bulkpost.delivery.single import Delivery
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import MappingError
from bulkpost.reading.source import NOT_UTF8, Source, count_rows, open_source
from bulkpost.runner.dispatch import JobQueue
from bulkpost.runner.preflight import event_codes, run_preflight
from bulkpost.runner.progress import Progress
from bulkpost.storage.history.database import History
from bulkpost.storage.input_keys import InputKeys
from bulkpost.storage.report import ProblemGroups
from bulkpost.storage.results import ResultsLog

log = structlog.get_logger("bulkpost")

FieldRules = dict[int, tuple[FieldRule, ...]]


class Feeder:
    """Feeds one run's rows to its workers (or, in a dry run, only counts them)."""

    def __init__(self, options: RunOptions, results: ResultsLog, history: History | None,
                 lookups: Lookups | None, summary: Summary, progress: Progress,
                 problems: ProblemGroups, stopping: StopSignal) -> None:
        self.options = options
        self.plan_options = PlanOptions(options, history=history is not None)
        self._results = results
        self._history = history
        self._lookups = lookups
        self._summary = summary
        self._progress = progress
        self._problems = problems
        self._stopping = stopping
        self._keys = InputKeys()
        self._keys_read = False  # every row's key was taken before the first row

    def close(self) -> None:
        """Drop the input's keys (a temporary database)."""
        self._keys.close()

    async def feed(self, source: Source, queue: JobQueue[Job] | None,
                   rules: FieldRules | None) -> None:
        """Every row planned and applied; ``queue`` None: a dry run (rows are counted)."""
        opts, results = self.options, self._results
        mapper = RowMapper(opts.mapping, source.utc_columns, source.typed_columns, rules)
        while not self._stopping.is_set():
            got = await asyncio.to_thread(self._read_and_map, source, mapper)
            if queue is not None:
                await queue.wait_for_room()  # the next batch was read and mapped meanwhile
            if got is None:
                self._summary.repeated_keys = await asyncio.to_thread(self._keys.report)
                if (not self._keys_read and self._summary.repeated_keys
                        and not self.options.dry_run):
                    log.warning("input.repeated_keys", repeated=self._summary.repeated_keys,
                                read_once=True)
                if queue is not None:
                    await self._carry_over(queue)
                    queue.close()
                return
            items, screened, repeats = got
            for item in items:
                self._summary.rows += 1
                recorded = results.recorded(item.row)
                key_holder = screened.get(item.row)
                lookups = self._lookups
                wanted = (lookups is not None and not lookups.calibration.reading.calibrated
                          and not lookups.calibration.distrust)
                line = results.last_outcome(item.row) if needs_line(
                    item, recorded, key_holder, self.plan_options, sample_wanted=wanted) else None
                plan = decide(item, recorded, line, key_holder, self.plan_options,
                              sample_wanted=wanted, repeat=repeats.get(item.row))
                if (plan.action is Action.SKIP_KEY and key_holder is not None
                        and key_holder.posted):
                    self._summary.created_before += 1
                self._apply(item, plan, queue)

    async def _carry_over(self, queue: JobQueue[Job]) -> None:
        """With a history, once the input is read: queue the rows earlier runs left
        unfinished whose key this input does not hold (looked up first when they may have
        been created; updates sent again)."""
        history = self._history
        if history is None:
            return
        after, taken = "", 0
        while not self._stopping.is_set():
            page = await asyncio.to_thread(history.carried, after)
            if not page:
                break
            if not taken:
                log.info("history.carrying", first_from=page[0].origin)
            for carried in page:
                when = datetime.fromtimestamp(carried.at, UTC)
                queue.put(Job(carried.activity, reconcile_first=not carried.update_of,
                              window=self.plan_options.sent_until(
                                  when, self.options.max_attempts),
                              update_of=carried.update_of,
                              carried_from=(carried.origin, carried.activity.row)))
            taken += len(page)
            self._progress.add_rows(len(page))
            after = page[-1].key
            await queue.wait_for_room()
        self._summary.carried = taken

    def _read_and_map(self, source: Source, mapper: RowMapper
                      ) -> tuple[list[Activity | InvalidRow], dict[int, KeyHolder],
                                 dict[int, Repeat]] | None:
        """The next batch, mapped; what the history holds of its rows' keys, and the
        input's other rows with them."""
        batch = source.next_batch()
        if batch is None:
            return None
        mapped: list[Activity | InvalidRow] = [
            InvalidRow(row, "", batch.broken_columns.get(row, ""), reason, "")
            for row, reason in batch.broken]
        mapped.extend(mapper.map_batch(batch.rows, batch.columns))
        if batch.broken:  # only then are the rows out of order
            mapped.sort(key=lambda item: item.row)
        screened: dict[int, KeyHolder] = {}
        if self._history is not None:
            screened = self._history.screen([i for i in mapped if isinstance(i, Activity)])
        repeats = (self._keys.repeats_of(mapped) if self._keys_read
                   else self._keys.add(mapped))
        return mapped, screened, repeats

    def _apply(self, item: Activity | InvalidRow, plan: Plan,
               queue: JobQueue[Job] | None) -> None:
        """Do what the row's plan says."""
        summary = self._summary
        if plan.repair:
            assert self._history is not None and isinstance(item, Activity)
            self._history.posted(item, plan.repair)
        if plan.other_claim:
            log.info("history.other_claim",
                     row=item.row, run_of_the_other=plan.other_claim)
        if plan.changed:
            summary.changed += 1
        if plan.action is Action.SKIP_REPEAT:
            summary.repeats += 1
        if plan.sends:
            assert isinstance(item, Activity)
            if queue is None:
                summary.to_send += 1
                self._progress.done()
            else:
                queue.put(Job(item, plan.recorded_status, reconcile_first=plan.action
                              is Action.RECONCILE, window=plan.window,
                              update_of=plan.update_of))
            return
        assert plan.counted is not None
        if plan.record is not None:
            self._results.record(plan.record)
        if plan.problem is not None:
            column, reason = plan.problem
            self._problems.add(column, reason, item.row)
            if plan.action is Action.RECORD_INVALID and NOT_UTF8 in reason:
                summary.undecodable += 1
        summary.count(plan.counted)
        if plan.action is Action.SKIP_POSTED:
            summary.done_before += 1
        self._progress.done(passed_over=plan.passed_over)
        if plan.sample is not None and self._lookups is not None:
            assert isinstance(item, Activity)
            self._lookups.calibration.offer_sample(item, *plan.sample)

    # -- before the first row ------------------------------------------------------------
    async def read_ahead(self, rules: FieldRules | None) -> None:
        """One read of the input before any call: refuse a results file whose posted rows
        now hold other content (those rows would be skipped, never sent: another input, or
        the same file edited where it was posted), and take every row's key, saying which
        keys repeat. A stream that can be read once only is checked row by row as it is
        planned."""
        if isinstance(self.options.input, pa.RecordBatchReader):
            return
        started = time.monotonic()
        differ = await asyncio.to_thread(self._read_keys, rules,
                                         self._results.last_posted_row())
        if differ:
            raise other_input(differ)
        log.info("input.read_ahead", seconds=round(time.monotonic() - started, 1))
        self._keys_read = not self._stopping.is_set()
        repeated = await asyncio.to_thread(self._keys.report)
        if repeated and not self.options.dry_run:  # a dry run lists them in its report
            log.warning("input.repeated_keys", repeated=repeated)

    def _read_keys(self, rules: FieldRules | None, last: int) -> list[int]:
        """Every row's key taken; the first rows (up to six) up to ``last`` recorded
        posted with other content (then the read stops: the run is refused)."""
        opts, results = self.options, self._results
        source = open_source(opts.input, opts.mapping.used_columns(), encoding=opts.encoding,
                             delimiter=opts.delimiter)
        mapper = RowMapper(opts.mapping, source.utc_columns, source.typed_columns, rules)
        differ: list[int] = []
        with source:
            while (batch := source.next_batch()) is not None and not self._stopping.is_set():
                items: list[Activity | InvalidRow] = [
                    InvalidRow(row, "", "", reason, "") for row, reason in batch.broken]
                items.extend(mapper.map_batch(batch.rows, batch.columns))
                if batch.broken:
                    items.sort(key=lambda item: item.row)
                differ.extend(item.row for item in items if item.row <= last
                              and posted_differs(item, results.recorded(item.row)))
                if len(differ) >= 6:
                    break
                self._keys.take(items)
        return sorted(differ)[:6]


async def field_rules(options: RunOptions, delivery: Delivery | None,
                      client: LeadSquaredClient | None) -> FieldRules | None:
    """The field rules per event code, or None when the schemas are not read (they are
    read through ``delivery``, whose look-ups learn the fields' kinds)."""
    opts = options
    if not opts.preflight or client is None or delivery is None:
        if opts.mapping.display_names:
            raise MappingError(
                f"{opts.mapping.source}: fields given by display name "
                f"({', '.join(map(repr, opts.mapping.display_names))}) need the activity "
                "type's schema: give --host and the keys (and no --no-preflight), or use "
                "SchemaNames")
        if opts.dry_run and opts.preflight:
            log.warning("dry_run.no_schemas")
        return None
    codes = await event_codes(opts.mapping, opts.input, opts.encoding, opts.delimiter)
    if not codes:
        if opts.mapping.display_names:
            raise MappingError(f"{opts.mapping.source}: fields given by display name need "
                               "the event codes before the run: give a constant event, or "
                               "an input that can be read twice")
        return None
    result = await run_preflight(opts.mapping, delivery.calls, client, codes,
                                 decimal_comma=opts.decimal_comma)
    delivery.lookups.calibration.kinds = {
        code: {rule.schema_name: rule.kind for rule in rules}
        for code, rules in result.rules.items()}
    return result.rules


def track_progress(progress: Progress, options: RunOptions, source: Source,
                   results: ResultsLog) -> asyncio.Task[int | None] | None:
    """Tell the bar the rows finished before (to be passed over) and the input's size;
    return the task counting the rows of an input that cannot say (cancel it at the end)."""
    counter = None
    if options.progress:
        if source.total_rows is not None:
            progress.set_total(source.total_rows)
        else:
            counter = asyncio.get_running_loop().create_task(asyncio.to_thread(
                count_rows, options.input, encoding=options.encoding,
                delimiter=options.delimiter))
            counter.add_done_callback(
                lambda t: progress.set_total(t.result()) if not t.cancelled()
                and t.exception() is None else None)
    finished = results.counts()
    progress.resuming(finished[Status.POSTED] + finished[Status.REJECTED]
                      + finished[Status.SKIPPED] + finished[Status.UPDATED]
                      + finished[Status.FIXED])
    return counter
