"""Reading the chosen activities back for ``bulkpost verify``, and what each read found.

Owns the two ways of reading: by lead page ("Get Activities of a Lead", up to 25 activities
a call, the note compared too: :meth:`bulkpost.delivery.lookups.Lookups.read_lead`) where
calibrated look-ups (the run's :class:`Reading`, kept beside the results file; else
calibrated here as a run does, and not kept) found the custom fields on the lead's pages;
and one call per activity ("Get Custom Fields of an Activity") for every row the pages
cannot settle, and every row with ``--one-per-activity``. Both read with a few workers
under the rate limit; each activity read becomes a :class:`Checked`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import structlog

from bulkpost.core.activity import Activity, FieldRule
from bulkpost.core.planner import sent_until
from bulkpost.core.reconcile import Reading
from bulkpost.core.response import MISSING
from bulkpost.core.results_line import parse_utc_text
from bulkpost.delivery.calls import ActivityMissing, ApiCalls, LookupFailed, Stopped
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.lookup_calibration import LookupCalibration
from bulkpost.delivery.lookups import Lookups
from bulkpost.delivery.readback import Difference, FieldInfo, page_differences, read_back
from bulkpost.runner.progress import Progress
from bulkpost.runner.verify_rows import Posted

log = structlog.get_logger("bulkpost")


@dataclass(frozen=True, slots=True)
class Checked:
    """One activity read back: its differences, or why it could not be read, or the API's
    word that it does not exist (missing or deleted)."""

    posted: Posted
    differences: tuple[Difference, ...] = ()
    unreadable: str = ""  # the reason; "" when it was read
    missing: str = ""  # the API's answer that the activity is unknown or deleted


async def calibrate(calibration: LookupCalibration, work: list[tuple[Posted, Activity]],
                    rules: Mapping[int, tuple[FieldRule, ...]] | None,
                    answer_timeout: float) -> None:
    """Calibrate the look-ups as a run does, unless the run's calibration was kept: by the
    first chosen row still holding what it was created with, looked up by content, when it
    may have reached the API as the results file says (its ``updated_at`` and attempts).
    What is learnt here is not kept (the run's file of lessons is the run's)."""
    if calibration.reading.calibrated:
        return
    sample = next(((posted, item) for posted, item in work if posted.created), None)
    if sample is None:
        return
    posted, item = sample
    window = None
    if posted.updated_at:
        with contextlib.suppress(ValueError):
            # The run's --backoff is not known here: the default's (1 s) is assumed.
            window = sent_until(parse_utc_text(posted.updated_at), max(1, posted.attempts),
                                timeout=answer_timeout, backoff=1.0)
    calibration.kinds = {code: {rule.schema_name: rule.kind for rule in event_rules}
                         for code, event_rules in (rules or {}).items()}
    calibration.offer_sample(item, posted.activity_id, window)
    await calibration.calibrate()  # once: its calls retry what may pass; a miss stays a miss


def pages_unused(reading: Reading | None, distrust: str = "") -> str:
    """Why activities cannot be read by lead page with ``reading`` ("": they can)."""
    if distrust:
        return f"the look-ups cannot be trusted on this account: {distrust}"
    if reading is None or not reading.calibrated:
        return "the look-ups are not calibrated for this account and host"
    if not reading.fields_at:
        return "the calibrated look-up showed no custom field on the lead's pages"
    return ""


async def read_by_page(lookups: Lookups, work: list[tuple[Posted, Activity]],
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
    reading = lookups.calibration.reading

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


async def read_all(calls: ApiCalls, client: LeadSquaredClient,
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
