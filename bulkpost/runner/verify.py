"""``bulkpost verify``: read posted activities back and report what LeadSquared stored otherwise.

Owns the command's options and its course: the rows chosen and mapped again
(:mod:`bulkpost.runner.verify_rows`), the keys and the activity types checked as a run checks
them (its preflight rules), the look-ups calibrated unless the run's calibration was kept,
the activities read back under the rate limit (:mod:`bulkpost.runner.verify_reading`: by
lead page where the look-ups allow, else one call per activity), a stop (a 401, a signal, a
spent quota) turned into the summary's ``aborted``, and the summary
(:mod:`bulkpost.runner.verify_report`, which also writes the report). The command reads the
results file's posted rows twice (a row's last line is its state) and keeps only the chosen
ones, so a sample of a million-row load stays small; it maps only the chosen input rows,
and refuses a results file whose content hashes the input no longer reproduces.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bulkpost.core.activity import FieldRule
from bulkpost.core.allowance import DOCUMENTED_MAXIMUM
from bulkpost.core.credentials import Credentials
from bulkpost.core.mapping import check_columns
from bulkpost.core.options import LoadOptions
from bulkpost.delivery.calls import ApiCalls, DeliverySettings, Stopped
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.lookups import Lookups
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.readback import field_infos
from bulkpost.delivery.stop import StopSignal, signals_handled
from bulkpost.errors import AbortRun, MappingError
from bulkpost.onboarding.account_zone import AccountClock, ask_zone, given_zone, share_fraction
from bulkpost.reading.source import describe, input_columns
from bulkpost.runner.limits import make_limit, recalled
from bulkpost.runner.preflight import event_codes, run_preflight
from bulkpost.runner.progress import Progress
from bulkpost.runner.verify_reading import calibrate, pages_unused, read_all, read_by_page
from bulkpost.runner.verify_report import VerifySummary
from bulkpost.runner.verify_rows import choose_posted, map_chosen
from bulkpost.storage.kept import load_reading

log = structlog.get_logger("bulkpost")


@dataclass(slots=True, kw_only=True)
class VerifyOptions(LoadOptions):
    """A load's options (its input, mapping, results file, account, rate, reading), and which
    of its posted rows to read back and how."""

    sample: int | None  # None: every posted row
    seed: int
    by_page: bool = True  # False: one call per activity, never by lead page

    @property
    def keys(self) -> Credentials:
        assert self.credentials is not None, "verify reads back with the account's keys"
        return self.credentials

    def worker_count(self) -> int:
        """Enough read-backs in flight to keep the limit busy at 4 s of latency."""
        return max(1, min(64, round(self.rate.per_second * 4)))

    def limit(self, fraction: Callable[[float], float] | None = None) -> RateLimit:
        """The rate limit as given, else as the run learnt it (or learnt here); ``fraction``:
        the part of it taken (``--share``)."""
        earlier = None if self.forget_learnt else recalled(
            self.results, self.host, self.keys).get("single")
        return make_limit(self.rate, self.learn_rate, earlier, DOCUMENTED_MAXIMUM, None,
                          fraction)


async def verify(options: VerifyOptions) -> VerifySummary:
    """``bulkpost verify``: read the chosen posted rows' activities back and compare.

    Raises :class:`UsageError` (and its kinds) before any read-back; a stop once started
    (401, a signal, a spent quota) is the summary's ``aborted``.
    """
    started = time.monotonic()
    chosen = await asyncio.to_thread(choose_posted, options.results, options.sample,
                                     options.seed)
    summary = VerifySummary(str(options.results), str(options.input),
                            None if options.sample is None else options.seed, options.sample,
                            chosen.posted, chosen.without_id, len(chosen.rows))
    mapping = options.mapping
    if mapping.display_names and not options.preflight:
        raise MappingError(f"{mapping.source}: fields given by display name need the "
                           "activity type's schema: drop --no-preflight, or use SchemaNames")
    if not chosen.rows:
        # Nothing to read back; the input must still be the one the mapping reads.
        check_columns(mapping, input_columns(options.input, encoding=options.encoding,
                                             delimiter=options.delimiter),
                      describe(options.input))
        summary.elapsed_s = time.monotonic() - started
        return summary
    stopping = StopSignal()
    stopping.listen(lambda: log.error("verify.stopping", reason=str(stopping.reason)),
                    once=True)
    # --share: a read-back spends the account's limit as a run does, and takes the same part.
    clock = AccountClock(given_zone(options.timezone) if options.timezone else None)
    limit = options.limit(share_fraction(options.share, clock) if options.share else None)
    progress = Progress(enabled=options.progress, calls_per_second=limit.sustained_per_second)
    try:
        with signals_handled(lambda name: stopping.stop(AbortRun(f"interrupted by {name}"))):
            async with LeadSquaredClient(options.host, options.keys,
                                         timeout=options.timeout,
                                         connections=options.worker_count()) as client:
                calls = ApiCalls(DeliverySettings(5, 1.0, options.timeout, 900.0),
                                 limit, stopping)
                try:
                    if options.share is not None and options.share.timed and clock.zone is None:
                        clock.zone = await ask_zone(calls, client, "--share's hours")
                    rules = await _preflight(options, calls, client)
                    items = await asyncio.to_thread(
                        map_chosen, mapping, options.input, chosen.rows, rules,
                        encoding=options.encoding, delimiter=options.delimiter)
                    progress.set_total(len(chosen.rows))
                    fields = field_infos(mapping, rules)
                    work = [(p, items[p.row]) for p in chosen.rows]
                    before = calls.counts.calls
                    lookups = Lookups(calls, client, None, reading=load_reading(
                        options.results, options.host, None))
                    if options.by_page:
                        await calibrate(lookups.calibration, work, rules, options.timeout)
                        summary.page_calls = calls.counts.calls - before
                        summary.pages_unused = pages_unused(lookups.calibration.reading,
                                                            lookups.calibration.distrust)
                    else:
                        summary.pages_unused = "--one-per-activity"
                    if not summary.pages_unused:
                        summary.checks, work = await read_by_page(
                            lookups, work, fields, mapping.note_column or "", progress,
                            options.worker_count())
                        summary.by_page = len(summary.checks)
                        summary.page_calls = calls.counts.calls - before
                    before = calls.counts.calls
                    summary.checks += await read_all(calls, client, work, fields, progress,
                                                     options.worker_count())
                    summary.by_activity = len(summary.checks) - summary.by_page
                    summary.activity_calls = calls.counts.calls - before
                except Stopped:
                    pass  # the stop signal holds why
                except AbortRun as exc:
                    stopping.stop(exc)
                summary.calls = calls.counts.calls
    finally:
        progress.close()
    summary.checks.sort(key=lambda check: check.posted.row)
    if stopping.reason is not None:
        if not isinstance(stopping.reason, AbortRun):
            raise stopping.reason
        summary.aborted = str(stopping.reason)
    summary.elapsed_s = time.monotonic() - started
    return summary


async def _preflight(options: VerifyOptions, calls: ApiCalls, client: LeadSquaredClient
                     ) -> dict[int, tuple[FieldRule, ...]] | None:
    """The run's field rules (kinds and normalisation), or None with --no-preflight."""
    if not options.preflight:
        return None
    codes = await event_codes(options.mapping, options.input, options.encoding,
                              options.delimiter)
    if not codes:
        return None
    result = await run_preflight(options.mapping, calls, client, codes,
                                 decimal_comma=options.decimal_comma)
    return result.rules
