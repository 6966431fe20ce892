"""``bulkpost verify``: read posted activities back and report what LeadSquared stored otherwise.

Owns choosing the rows (all, or a seeded sample), mapping them again from the input with the
run's preflight rules, reading them back (:mod:`bulkpost.delivery.readback`) under the rate limit,
and the report. Where calibrated look-ups (the run's :class:`Reading`, kept beside the
results file; else calibrated here as a run does, and not kept) found the custom fields on
the lead's pages, the rows are read by lead page ("Get Activities of a Lead", up to 25
activities a call, the note compared too: see :meth:`bulkpost.delivery.lookups.Lookups.read_lead`);
every row the pages cannot settle, and every row with ``--one-per-activity``, is read one
call per activity ("Get Custom Fields of an Activity").
The command reads the results file's posted rows twice (a row's last line is its state)
and keeps only the chosen ones, so a sample of a million-row load stays small; it maps
only the chosen input rows, and refuses a results file whose content hashes the input no
longer reproduces.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import heapq
import time
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bulkpost.core import mapping as mapping_file
from bulkpost.core.activity import Activity, FieldRule, InvalidRow, RowMapper
from bulkpost.core.allowance import DOCUMENTED_MAXIMUM
from bulkpost.core.credentials import Credentials
from bulkpost.core.mapping import check_columns
from bulkpost.core.planner import PlanOptions
from bulkpost.core.reconcile import Reading
from bulkpost.core.response import MISSING
from bulkpost.core.results_line import parse_utc_text
from bulkpost.core.share import ShareSchedule
from bulkpost.core.statuses import Status
from bulkpost.delivery.calls import (
    ActivityMissing,
    ApiCalls,
    DeliverySettings,
    LookupFailed,
    Stopped,
)
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.lookups import Lookups
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.readback import (
    Difference,
    FieldInfo,
    field_infos,
    page_differences,
    read_back,
)
from bulkpost.delivery.stop import StopSignal, signals_handled
from bulkpost.errors import AbortRun, MappingError, UsageError
from bulkpost.onboarding.account_zone import AccountClock, ask_zone, given_zone, share_fraction
from bulkpost.reading.source import describe, input_columns, open_source
from bulkpost.runner.limits import RateSetting, make_limit, recalled
from bulkpost.runner.preflight import event_codes, run_preflight
from bulkpost.runner.progress import Progress
from bulkpost.storage.kept import load_reading
from bulkpost.storage.results_file import read_outcomes

log = structlog.get_logger("bulkpost")

FIRST_ROWS = 5  # rows named per group of differences in the report
SHOWN_VALUES = 3  # of those, how many show sent and stored values
DIFFERENCES_HEADER = ["row", "activity_id", "column", "field", "sent", "stored"]


# -- choosing the rows ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Posted:
    """A row the results file holds as posted, with its activity Id."""

    row: int
    key: str
    activity_id: str
    content_hash: str
    created: bool = False  # posted (created with this content), not updated since
    updated_at: str = ""  # when the results file recorded it (UTC, to the second)
    attempts: int = 0


@dataclass(slots=True)
class Chosen:
    """The rows to read back, and what the results file held."""

    rows: list[Posted]  # in row order
    posted: int  # rows whose state is posted
    without_id: int  # of those, rows with no activity Id (nothing to read back)


def priority(seed: int, row: int) -> int:
    """A row's place in the sample: the rows of the lowest priorities are chosen."""
    digest = hashlib.blake2b(f"{seed}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose_posted(results: Path, sample: int | None, seed: int) -> Chosen:
    """The posted rows of a results file: all of them (``sample`` None), or ``sample``
    chosen uniformly at random.

    The sample is a reservoir of the rows with the lowest seeded hash of their row number
    (a bottom-k sample): uniform, in bounded memory, and the same for the same seed however
    the file's lines are ordered (before or after compaction); a smaller sample with the
    same seed is part of a larger one.
    """
    # First pass: the number of each row's last line, which holds its state.
    last = array("q")
    for number, outcome in enumerate(read_outcomes(results)):
        if outcome.row >= len(last):
            last.extend([-1] * (outcome.row + 1 - len(last)))
        last[outcome.row] = number
    chosen = Chosen([], 0, 0)
    reservoir: list[tuple[int, int, Posted]] = []  # (-priority, row, posted): a max-heap
    for number, outcome in enumerate(read_outcomes(results)):
        if last[outcome.row] != number or outcome.status not in (Status.POSTED,
                                                                  Status.UPDATED):
            continue  # only activities this results file says hold the row's content
        chosen.posted += 1
        if not outcome.activity_id:
            chosen.without_id += 1
            continue
        posted = Posted(outcome.row, outcome.key, outcome.activity_id, outcome.content_hash,
                        outcome.status is Status.POSTED, outcome.updated_at, outcome.attempts)
        if sample is None:
            chosen.rows.append(posted)
            continue
        entry = (-priority(seed, outcome.row), outcome.row, posted)
        if len(reservoir) < sample:
            heapq.heappush(reservoir, entry)
        elif entry > reservoir[0]:
            heapq.heapreplace(reservoir, entry)
    chosen.rows = sorted(chosen.rows + [entry[2] for entry in reservoir], key=lambda p: p.row)
    return chosen


def map_chosen(mapping: mapping_file.Mapping, input_path: Path, chosen: list[Posted],
               rules: dict[int, tuple[FieldRule, ...]] | None, *, encoding: str = "utf-8",
               delimiter: str | None = None) -> dict[int, Activity]:
    """The chosen rows' activities, mapped as the run mapped them (only those rows are
    kept). Raises :class:`UsageError` when a chosen row is missing from the input, no
    longer valid, or maps to other content than the results file recorded: the results
    file is then not this input's (or the mapping, or its options, changed)."""
    check_columns(mapping, input_columns(input_path, encoding=encoding, delimiter=delimiter),
                  describe(input_path))
    wanted = {posted.row: posted for posted in chosen}
    source = open_source(input_path, mapping.used_columns(), encoding=encoding,
                         delimiter=delimiter)
    mapper = RowMapper(mapping, source.utc_columns, source.typed_columns, rules)
    items: dict[int, Activity] = {}
    problems: dict[int, str] = {}  # row -> why it does not fit
    with source:
        while len(items) + len(problems) < len(wanted) and (batch := source.next_batch()):
            problems.update((row, f"row {row} is unreadable in the input ({reason})")
                            for row, reason in batch.broken if row in wanted)
            picks = [index for index, row in enumerate(batch.rows) if row in wanted]
            if not picks:
                continue
            rows = [batch.rows[index] for index in picks]
            columns = {name: [values[index] for index in picks]
                       for name, values in batch.columns.items()}
            for mapped in mapper.map_batch(rows, columns):
                posted = wanted[mapped.row]
                if isinstance(mapped, InvalidRow):
                    where = f"column {mapped.column!r}: " if mapped.column else ""
                    problems[mapped.row] = (f"row {mapped.row} was posted but is now invalid "
                                            f"({where}{mapped.reason})")
                elif posted.key and mapped.key != posted.key:
                    problems[mapped.row] = (f"row {mapped.row} has key {mapped.key!r} in the "
                                            f"input, {posted.key!r} in the results file")
                elif posted.content_hash and mapped.content_hash != posted.content_hash:
                    problems[mapped.row] = (f"row {mapped.row} maps to other content than was "
                                            f"posted (content hash {mapped.content_hash}, results "
                                            f"file {posted.content_hash})")
                else:
                    items[mapped.row] = mapped
    for row in sorted(set(wanted) - set(items) - set(problems)):
        problems[row] = f"row {row} is not in the input"
    if problems:
        listed = [problems[row] for row in sorted(problems)]
        raise UsageError(
            f"the results file does not belong to {describe(input_path)} as mapped now "
            "(another input, another mapping, or other --no-preflight/--decimal-comma "
            "than the run):\n  " + "\n  ".join(listed[:5])
            + (f"\n  … and {len(listed) - 5} more" if len(listed) > 5 else ""))
    return items


# -- the command ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VerifyOptions:
    results: Path
    input: Path
    mapping: mapping_file.Mapping
    host: str
    credentials: Credentials
    rate: RateSetting  # as given (limits.rate_setting), or learnt
    sample: int | None  # None: every posted row
    seed: int
    encoding: str = "utf-8"
    delimiter: str | None = None
    preflight: bool = True
    decimal_comma: bool = False
    progress: bool = False
    timeout: float = 30.0
    by_page: bool = True  # False: one call per activity, never by lead page
    share: ShareSchedule | None = None  # --share: the part of the limit verify takes
    timezone: str | None = None  # --timezone: the zone --share's hours are read in

    def worker_count(self) -> int:
        """Enough read-backs in flight to keep the limit busy at 4 s of latency."""
        return max(1, min(64, round(self.rate.start.per_second * 4)))

    def limit(self, fraction: Callable[[float], float] | None = None) -> RateLimit:
        """The rate limit as given, else as the run learnt it (or learnt here); ``fraction``:
        the part of it taken (``--share``)."""
        earlier = None if self.rate.forget_learnt else recalled(
            self.results, self.host, self.credentials).get("single")
        return make_limit(self.rate.start, self.rate.learn, earlier, DOCUMENTED_MAXIMUM, None,
                          fraction)


@dataclass(frozen=True, slots=True)
class Checked:
    """One activity read back: its differences, or why it could not be read, or the API's
    word that it does not exist (missing or deleted)."""

    posted: Posted
    differences: tuple[Difference, ...] = ()
    unreadable: str = ""  # the reason; "" when it was read
    missing: str = ""  # the API's answer that the activity is unknown or deleted


@dataclass(slots=True)
class VerifySummary:
    """What a check found; ``as_dict`` is the command's JSON summary."""

    results: str
    input: str
    seed: int | None
    sample: int | None
    posted: int = 0
    without_id: int = 0
    sampled: int = 0
    checks: list[Checked] = field(default_factory=list)
    calls: int = 0  # API calls made, the preflight's included
    elapsed_s: float = 0.0
    aborted: str = ""
    by_page: int = 0  # activities settled by their lead's pages (found, or missing)
    page_calls: int = 0  # calls that took (pages, e-mail look-ups, retries)
    by_activity: int = 0  # activities read one call per activity
    activity_calls: int = 0  # calls that took (retries included)
    pages_unused: str = ""  # why no activity was read by lead page ("": some were)

    @property
    def checked(self) -> int:
        return sum(1 for check in self.checks if not (check.unreadable or check.missing))

    @property
    def missing(self) -> int:
        return sum(1 for check in self.checks if check.missing)

    @property
    def differ(self) -> int:
        return sum(1 for check in self.checks if check.differences)

    @property
    def unreadable(self) -> int:
        return sum(1 for check in self.checks if check.unreadable)

    @property
    def found(self) -> list[Difference]:
        return [d for check in self.checks for d in check.differences]

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 3
        return 1 if self.differ or self.unreadable or self.missing else 0

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "results": self.results, "input": self.input, "posted": self.posted,
            "posted_without_id": self.without_id,
            "sample": "all" if self.sample is None else self.sample,
            "seed": self.seed, "sampled": self.sampled, "checked": self.checked,
            "equal": self.checked - self.differ, "differ": self.differ,
            "differences": len(self.found), "missing": self.missing,
            "unreadable": self.unreadable,
            "calls": self.calls,
            "read": {"by_page": self.by_page, "page_calls": self.page_calls,
                     "one_per_activity": self.by_activity,
                     "one_per_activity_calls": self.activity_calls},
            "elapsed_s": round(self.elapsed_s, 1), "exit_code": self.exit_code}
        if self.aborted:
            data["aborted"] = self.aborted
        return data


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
            async with LeadSquaredClient(options.host, options.credentials,
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
                        await _calibrate(lookups, work, rules, options.timeout)
                        summary.page_calls = calls.counts.calls - before
                        summary.pages_unused = pages_unused(lookups.reading, lookups.distrust)
                    else:
                        summary.pages_unused = "--one-per-activity"
                    if not summary.pages_unused:
                        summary.checks, work = await _read_by_page(
                            lookups, work, fields, mapping.note_column or "", progress,
                            options.worker_count())
                        summary.by_page = len(summary.checks)
                        summary.page_calls = calls.counts.calls - before
                    before = calls.counts.calls
                    summary.checks += await _read_all(calls, client, work, fields, progress,
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


async def _calibrate(lookups: Lookups, work: list[tuple[Posted, Activity]],
                     rules: Mapping[int, tuple[FieldRule, ...]] | None,
                     answer_timeout: float) -> None:
    """Calibrate the look-ups as a run does, unless the run's calibration was kept: by the
    first chosen row still holding what it was created with, looked up by content, when it
    may have reached the API as the results file says (its ``updated_at`` and attempts).
    What is learnt here is not kept (the run's file of lessons is the run's)."""
    if lookups.reading.calibrated:
        return
    sample = next(((posted, item) for posted, item in work if posted.created), None)
    if sample is None:
        return
    posted, item = sample
    window = None
    if posted.updated_at:
        with contextlib.suppress(ValueError):
            window = PlanOptions(timeout=answer_timeout).sent_until(
                parse_utc_text(posted.updated_at), max(1, posted.attempts))
    lookups.kinds = {code: {rule.schema_name: rule.kind for rule in event_rules}
                     for code, event_rules in (rules or {}).items()}
    lookups.offer_sample(item, posted.activity_id, window)
    await lookups.calibrate()  # once: its calls retry what may pass; a miss stays a miss


def pages_unused(reading: Reading | None, distrust: str = "") -> str:
    """Why activities cannot be read by lead page with ``reading`` ("": they can)."""
    if distrust:
        return f"the look-ups cannot be trusted on this account: {distrust}"
    if reading is None or not reading.calibrated:
        return "the look-ups are not calibrated for this account and host"
    if not reading.fields_at:
        return "the calibrated look-up showed no custom field on the lead's pages"
    return ""


async def _read_by_page(lookups: Lookups, work: list[tuple[Posted, Activity]],
                        fields_for: Callable[[int], Mapping[str, FieldInfo]],
                        note_column: str, progress: Progress, workers: int
                        ) -> tuple[list[Checked], list[tuple[Posted, Activity]]]:
    """Read the activities by their leads' pages (a few leads at a time, under the rate
    limit): the checks the pages settle, and the rows left to read one by one (not found
    before the pages were left, shown without what the pages must show, or on a lead whose
    pages could not be read)."""
    groups: dict[tuple[str, int], list[tuple[Posted, Activity]]] = {}
    for posted, item in work:
        groups.setdefault((item.lead.lower(), item.event), []).append((posted, item))
    checks: list[Checked] = []
    left: list[tuple[Posted, Activity]] = []
    pending = iter(groups.values())  # shared: each lead taken once
    reading = lookups.reading

    async def worker() -> None:
        for group in pending:
            try:
                read = await lookups.read_lead(group[0][1], [p.activity_id for p, _ in group])
            except LookupFailed as exc:
                log.info("verify.pages_unread", row=group[0][0].row, reason=str(exc))
                left.extend(group)
                continue
            except Stopped:
                return
            if read.why_stopped and len(read.found) < len(group):
                log.info("verify.pages_unread", row=group[0][0].row, reason=read.why_stopped)
            for posted, item in group:
                found = read.found.get(posted.activity_id.lower())
                if found is None:
                    if not read.complete:
                        left.append((posted, item))
                        continue
                    checks.append(Checked(posted, missing=(
                        f"{MISSING} (not among the {read.seen:,} activities of event "
                        f"{item.event} on its lead's pages)")))
                else:
                    shown = page_differences(item, posted.activity_id, found,
                                             fields_for(item.event), reading.fields_at,
                                             note_column, reading.entities)
                    if shown is None:
                        left.append((posted, item))
                        continue
                    checks.append(Checked(posted, tuple(shown)))
                progress.done()

    await asyncio.gather(*(worker() for _ in range(min(workers, len(groups)))))
    left.sort(key=lambda pair: pair[0].row)
    return checks, left


async def _read_all(calls: ApiCalls, client: LeadSquaredClient,
                    work: list[tuple[Posted, Activity]],
                    fields_for: Callable[[int], Mapping[str, FieldInfo]],
                    progress: Progress, workers: int) -> list[Checked]:
    """Read every activity back with a few workers under the run's rate limit."""
    checks: list[Checked] = []
    pending: Iterator[tuple[Posted, Activity]] = iter(work)  # shared: each item taken once

    async def worker() -> None:
        for posted, item in pending:
            try:
                found = await read_back(calls, client, item, posted.activity_id,
                                        fields_for(item.event))
            except ActivityMissing as exc:  # the same on every retry: not asked again
                checks.append(Checked(posted, missing=str(exc)))
            except LookupFailed as exc:
                checks.append(Checked(posted, unreadable=str(exc) or "no answer"))
            except Stopped:
                return
            else:
                checks.append(Checked(posted, tuple(found)))
            progress.done()

    await asyncio.gather(*(worker() for _ in range(min(workers, len(work)))))
    return checks


# -- reporting ------------------------------------------------------------------------------
def _value(text: str | None) -> str:
    if text is None:
        return "(not in the answer)"
    return repr(text if len(text) <= 60 else text[:60] + "…")


def render_report(summary: VerifySummary) -> str:
    """The report for people: counts, then the differences grouped by column and field."""
    chosen = (f"all {summary.posted:,} posted rows" if summary.sample is None
              else f"a sample of {summary.sampled:,} of {summary.posted:,} posted rows, "
                   f"seed {summary.seed}")
    lines = [f"verify: {summary.checked:,} activities read back ({chosen}): "
             f"{summary.checked - summary.differ:,} as sent, {summary.differ:,} differ, "
             + (f"{summary.missing:,} missing or deleted, " if summary.missing else "")
             + f"{summary.unreadable:,} unreadable"]
    if summary.without_id:
        lines.append(f"  {summary.without_id:,} posted rows have no activity Id in the "
                     "results file: not read back")
    if summary.checks:
        lines.append("  " + read_how(summary))
    groups: dict[tuple[str, str], list[Difference]] = {}
    for difference in summary.found:
        groups.setdefault((difference.column, difference.label), []).append(difference)
    for (column, label), found in sorted(groups.items(),
                                         key=lambda group: (-len(group[1]), group[1][0].row)):
        rows = ", ".join(str(d.row) for d in found[:FIRST_ROWS])
        more = ", …" if len(found) > FIRST_ROWS else ""
        where = f"column {column!r} → {label}" if column else label
        lines.append(f"  {where}: {len(found):,} rows differ (rows {rows}{more})")
        lines += [f"      row {d.row} (activity {d.activity_id}): sent {_value(d.sent)}, "
                  f"stored {_value(d.stored)}" for d in found[:SHOWN_VALUES]]
    missing = [check for check in summary.checks if check.missing]
    if missing:
        lines.append(f"  missing or deleted in LeadSquared: {len(missing):,} activities the "
                     "results file holds as posted (the API does not know their Ids)")
        lines += [f"      row {c.posted.row} (activity {c.posted.activity_id}): {c.missing}"
                  for c in missing[:SHOWN_VALUES]]
    unreadable = [check for check in summary.checks if check.unreadable]
    if unreadable:
        lines.append(f"  unreadable: {len(unreadable):,} activities (not counted as equal)")
        lines += [f"      row {c.posted.row} (activity {c.posted.activity_id}): {c.unreadable}"
                  for c in unreadable[:SHOWN_VALUES]]
    return "\n".join(lines)


def read_how(summary: VerifySummary) -> str:
    """How the activities were read, and the calls each way took."""
    parts = []
    if summary.by_page:
        parts.append(f"{summary.by_page:,} by lead page in {summary.page_calls:,} calls "
                     "(note compared)")
    if summary.by_activity or not summary.by_page:
        parts.append(f"{summary.by_activity:,} one per activity in "
                     f"{summary.activity_calls:,} calls")
    why = ""
    if summary.pages_unused:
        spent = (f"; {summary.page_calls:,} calls spent calibrating"
                 if summary.page_calls else "")
        why = f" ({summary.pages_unused}{spent})"
    return "read " + ", ".join(parts) + why


def write_differences(path: Path, found: list[Difference]) -> None:
    """One CSV line per difference; ``stored`` is empty for a field the answer left out."""
    try:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(DIFFERENCES_HEADER)
            writer.writerows([d.row, d.activity_id, d.column, d.field, d.sent, d.stored or ""]
                             for d in found)
    except OSError as exc:
        raise UsageError(f"cannot write --differences {path}: {exc.strerror}") from None
