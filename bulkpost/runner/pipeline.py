"""The run's lifecycle: source → feeder (each row's plan) → queue → workers → delivery → results.

The thin shell around the parts: it opens and closes the results file and the history,
the client and the delivery, wires the feeder (:mod:`bulkpost.runner.feeder`) to the worker pools
(:mod:`bulkpost.runner.workers`) through a bounded queue, handles signals, stops, and turns errors
into the run's outcome (:class:`~bulkpost.core.summary.Summary`, or an exception).

Stopping: a fatal answer (401/404), a signal or an unwritable results file stops all new
requests at once; requests already on the wire are let finish for a bounded time, then
everything is flushed and the results file compacted. A second SIGINT cancels at once: rows
on the wire stay ``unknown`` (the tasks and their stop: :mod:`bulkpost.runner.run_tasks`).
A day's budget of calls spent (``--daily-calls``) stops the run the same way, as no error:
exit 4.

The account's clock (:mod:`bulkpost.onboarding.account_zone`) is read before the first other call
when a ``--share`` schedule or a daily budget needs it, and the day's budget started on it
(:mod:`bulkpost.runner.account_day`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from bulkpost.core.attempts import Job
from bulkpost.core.mapping import check_columns
from bulkpost.core.options import RunOptions, new_run_id
from bulkpost.core.resume import new_results_advice, new_results_file
from bulkpost.core.summary import Summary
from bulkpost.delivery.calls import Stopped
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.readback import field_infos
from bulkpost.delivery.single import Delivery
from bulkpost.delivery.stop import StopSignal, signals_handled
from bulkpost.errors import AbortRun, BudgetSpent, HistoryLocked, ResultsWriteError
from bulkpost.onboarding.account_zone import share_fraction
from bulkpost.onboarding.region import find_url
from bulkpost.reading.source import Source, describe, input_columns, open_source
from bulkpost.runner import logs
from bulkpost.runner.account_day import AccountDay
from bulkpost.runner.dispatch import JobQueue
from bulkpost.runner.feeder import Feeder, field_rules, track_progress
from bulkpost.runner.limits import RunLimits
from bulkpost.runner.progress import Progress
from bulkpost.runner.run_tasks import RunTasks
from bulkpost.runner.workers import Workers, new_delivery
from bulkpost.storage.history.accounts import account_history_path, ensure_private_dir
from bulkpost.storage.history.database import History, finish_history
from bulkpost.storage.report import ProblemGroups
from bulkpost.storage.results import ResultsLog

log = structlog.get_logger("bulkpost")


class Run:
    """One execution of ``bulkpost run``."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.summary = Summary(dry_run=options.dry_run, results=str(options.results),
                               run_id=options.run_id or new_run_id(),
                               history=str(options.history or ""))
        self.history: History | None = None
        self.day = AccountDay(options)  # the account's clock, and --daily-calls' budget
        self.fraction = (share_fraction(options.share, self.day.clock)
                         if options.share is not None else None)
        self.limits = RunLimits(options, None, self.fraction)
        self.stopping = StopSignal()
        self.tasks = RunTasks(self.stopping, self.summary, options.drain_timeout)
        self._delivery: Delivery | None = None
        self.problems = ProblemGroups()
        self.progress = Progress(enabled=options.progress,
                                 calls_per_second=self.activities_per_second(),
                                 share=options.share, wall=self.day.clock.now)

    def activities_per_second(self) -> float:
        """What the mode's allowances sustain: single calls, full bulk calls, or both."""
        opts, per_second = self.options, 0.0
        if opts.mode != "bulk":
            per_second += self.limits.single.sustained_per_second
        if opts.mode != "single":
            per_second += self.limits.bulk.sustained_per_second * opts.batch_size
        return per_second

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
        if opts.credentials is not None and not opts.host:  # the Python API, without host=
            opts.host = await find_url(opts.credentials)
        if opts.history is None and not opts.create_again and opts.credentials is not None:
            opts.history = account_history_path(opts.host, opts.credentials.access_key)
            self.summary.account_history = True
            ensure_private_dir(opts.history)
            log.info("history.account", path=str(opts.history))
        # A refusal of another input says what a new results file would send again.
        new_results_file.set(new_results_advice(opts.history, opts.create_again))
        # The results file first: a second run of the same command is refused naming it,
        # not the history the two would share.
        results = ResultsLog(opts.results).open()
        if results.torn_lines:
            log.warning("results.torn_line", row=results.torn_row or None)
        history = None
        try:
            if opts.history is not None:
                self.summary.history = str(opts.history)
                try:
                    history = self.history = History(opts.history,
                                                     self.summary.run_id).open()
                except HistoryLocked as exc:
                    if not self.summary.account_history:
                        raise
                    # Two loads at once on one account share its rate limit too; one that
                    # truly has nothing in common with the other may keep its own history.
                    raise HistoryLocked(f"{exc} (this account's history: two runs on one "
                                        "account at once would share it and the account's "
                                        "rate limit; or give this run --history FILE of its "
                                        "own)") from None
                results.companion = history
                if not opts.dry_run:
                    history.register(describe(opts.input), str(opts.results))
        except BaseException:
            results.discard_unused()  # refused before its first row: no file left behind
            results.close()
            if history is not None:
                history.close()
            raise
        try:
            return await self._execute_with(source, results, history)
        finally:
            source.close()  # a run stopped early lets go of its input here
            if history is not None:
                history.close()

    async def _execute_with(self, source: Source, results: ResultsLog,
                            history: History | None) -> Summary:
        """The run, its results file and history open; closes the results file."""
        opts = self.options
        started = time.monotonic()
        counter: asyncio.Task[int | None] | None = None
        raised = False
        try:
            # The history, and the host now known, may hold the limits an earlier run learnt.
            self.limits = RunLimits(opts, history, self.fraction)
            self.progress.calls_per_second = self.activities_per_second()
            with signals_handled(self.tasks.interrupt):
                counter = track_progress(self.progress, opts, source, results)
                await self._run(source, results, history)
        except BaseException:
            raised = True
            raise
        finally:
            abort = self.stopping.reason
            if counter is not None:
                counter.cancel()
            self.progress.close()
            self.summary.elapsed_s = time.monotonic() - started
            if self._delivery is not None:
                self.summary.take(self._delivery.calls.counts)
                self.limits.keep(self.summary.run_id)
            self.summary.rate = self._rates()
            if opts.share is not None:
                self.summary.share = str(opts.share)
            await self.day.close(self.summary)
            try:
                # Stopped before its first row: no results file is left behind.
                discarded = (raised or abort is not None) and results.discard_unused()
                if not discarded and self.tasks.interrupts < 2:
                    await results.sync()
                    results.compact()
            except ResultsWriteError as exc:
                # The log is valid as it stands (a rerun reads it the same); say so, and
                # keep the reason the run stopped, if it stopped.
                log.error("results.not_compacted", reason=str(exc))
                abort = abort or exc
            finally:
                results.close()
        budget = self.day.budget
        if isinstance(abort, BudgetSpent) and budget is not None:
            # Spent: a clean stop, as a signal's, with its own exit code (4).
            self.summary.budget_spent = True
            log.warning("budget.spent", calls_today=budget.spent,
                        daily_calls=budget.calls,
                        renews=budget.when_renewed())
            abort = None
        if abort is not None:
            if isinstance(abort, AbortRun):
                self.summary.aborted = str(abort)
            else:
                if history is not None:
                    finish_history(history, self.summary, opts, abort.exit_code)
                raise abort
        if opts.dry_run:
            self.summary.problems = self.problems.lines()
            # What the real run would take at the configured rate (look-ups not counted).
            self.summary.estimated_s = self.summary.to_send / self.activities_per_second()
            if opts.share is not None:  # at the schedule's fractions ahead
                self.summary.estimated_s = opts.share.seconds_for(
                    self.summary.to_send, self.activities_per_second(), self.day.clock.now())
        if history is not None:
            finish_history(history, self.summary, opts)
        # A person is told the summary once, in words, by the CLI; a program reads it here.
        if logs.for_people():
            log.debug("run.finished", **self.summary.as_dict())
        else:
            log.info("run.finished", **self.summary.as_dict())
        return self.summary

    async def _run(self, source: Source, results: ResultsLog, history: History | None) -> None:
        """The rows, from the client's opening to its closing."""
        opts = self.options
        log.info("run.started", input=describe(opts.input), results=str(opts.results),
                 rate=self._rates().get("single"), workers=opts.worker_count(), mode=opts.mode,
                 bulk_rate=self._rates().get("bulk"),
                 bulk_workers=opts.bulk_worker_count(), dry_run=opts.dry_run,
                 resumed_rows=sum(results.counts().values()))
        async with contextlib.AsyncExitStack() as stack:
            client: LeadSquaredClient | None = None
            if opts.credentials is not None and opts.host:
                client = await stack.enter_async_context(LeadSquaredClient(
                    opts.host, opts.credentials, timeout=opts.timeout,
                    connections=opts.connections()))
                self._delivery = new_delivery(opts, self.limits.single, client, results, history,
                                              self.stopping, self.summary.run_id)
                self.tasks.on_wire = self._delivery.calls.on_wire
                if not await self.day.begin(self._delivery, client, history, self.stopping):
                    return  # refused, or the day's budget is spent: nothing sent
            try:
                rules = await field_rules(opts, self._delivery, client)
            except Stopped:
                rules = None  # a fatal answer: stop() has recorded why
            except AbortRun as exc:
                rules = None
                self.tasks.stop(exc)
            if self.stopping.is_set():
                return
            lookups = self._delivery.lookups if self._delivery else None
            feeder = Feeder(opts, results, history, lookups, self.summary,
                            self.progress, self.problems, self.stopping)
            stack.callback(feeder.close)
            await feeder.read_ahead(rules)
            if opts.dry_run:
                await feeder.feed(source, None, rules)
                return
            assert client is not None and self._delivery is not None
            queue: JobQueue[Job] = JobQueue(opts.low_water())
            self.tasks.feeder = asyncio.create_task(feeder.feed(source, queue, rules))
            self.tasks.workers = Workers(opts, queue, self._delivery, client, self.limits.bulk,
                                         field_infos(opts.mapping, rules), self.progress,
                                         self.stopping).start()
            await self.tasks.until_done(self.tasks.feeder, self._delivery)

    def _rates(self) -> dict[str, str]:
        """The limits in force, for the log and the summary: "10/5s (learnt)"."""
        kinds = {"single": ("single",), "bulk": ("bulk",),
                 "both": ("single", "bulk")}[self.options.mode]
        return {kind: f"{self.limits.ceiling(kind)} ({self.limits.source(kind)})"
                for kind in kinds}
