"""Look-ups: was a row's activity created already? Reconciliation, and reading a lead for verify.

The API has no idempotency key. Whenever an attempt's outcome is uncertain (the request may
have been carried out), delivery asks :meth:`Lookups.reconcile` before it sends the row
again: the row's lead is read with "Get Activities of a Lead" (the lead found first by
e-mail when the row names it so: :mod:`bulkpost.delivery.lead_pages`), page by page
(:class:`bulkpost.core.reconcile.Scan`). It answers with the Id found, or None ("not
found": safe to send), or raises :class:`~bulkpost.delivery.calls.LookupFailed` with the
reason, and the row stays ``unknown``. The matching itself is pure
(:mod:`bulkpost.core.reconcile`); what the run has learnt of the account, and when "not
found" may be trusted, is :mod:`bulkpost.delivery.lookup_calibration`'s. This module's rules:

- "not found" is trusted only once look-ups are calibrated
  (:meth:`~bulkpost.delivery.lookup_calibration.LookupCalibration.trust`);
- an activity a posted row holds (in the results file, or in the history) is never another
  row's: identical rows for the same lead are counted, not merged;
- a look-up that needs to know how ``Offset`` counts waits for the one probe learning it;
- look-ups are calls like any other: under the run's rate limit, with its retries
  (:meth:`ApiCalls.lookup`);
- ``bulkpost verify`` reads a lead's pages too (:meth:`Lookups.read_lead`): the activities it
  looks for, by Id, until each is found, every page is read, or reading on would cost more
  calls than asking for the rest one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field

import structlog

from bulkpost.core.activity import Activity
from bulkpost.core.reconcile import FoundActivity, Reading, Scan, SendWindow, fingerprint, pick
from bulkpost.delivery.calls import ApiCalls, LookupFailed
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.lead_pages import LeadPageReader
from bulkpost.delivery.lookup_calibration import LookupCalibration
from bulkpost.storage.history.database import History
from bulkpost.storage.results import ResultsLog

log = structlog.get_logger("bulkpost")


@dataclass(slots=True)
class LeadPages:
    """What reading one lead's pages found of the activities looked for (by Id)."""

    found: dict[str, FoundActivity] = field(default_factory=dict)  # lower-case Id → item
    complete: bool = False  # every page was read: an Id not found is not on the lead
    seen: int = 0  # activities read (update-log rows not counted)
    why_stopped: str = ""  # why pages were left unread ("": all found, or complete)


def worth_reading_on(scan: Scan, left: int, wanted: int) -> bool:
    """Whether reading the lead's next pages costs no more calls than asking for the ``left``
    activities not found yet one by one: by the pages a total ``RecordCount`` says are left,
    else at most as many pages in all as activities were ``wanted`` on the lead."""
    if scan.total is not None:
        rest = max(scan.total - scan.pages * scan.size, 1)
        return -(-rest // scan.size) <= left
    return scan.pages < wanted


class Lookups:
    """The run's look-ups of rows; what they have learned of the account is their
    :attr:`calibration`."""

    def __init__(self, calls: ApiCalls, client: LeadSquaredClient, results: ResultsLog | None,
                 history: History | None = None, reading: Reading | None = None) -> None:
        self._counts = calls.counts
        self._pages = LeadPageReader(calls, client)
        self._results = results  # None: no rows to reconcile (``bulkpost check``)
        self._history = history
        self.calibration = LookupCalibration(calls, self._pages, reading)

    @property
    def _log(self) -> ResultsLog:
        assert self._results is not None, "these look-ups have no rows to reconcile"
        return self._results

    # -- reconciliation --------------------------------------------------------------------
    async def reconcile(self, item: Activity, window: SendWindow | None) -> str | None:
        """The Id of this row's activity if it exists already, else None.

        "Not found" is concluded only from a complete scan by a calibrated reading; else
        LookupFailed, and the row stays ``unknown``.
        """
        self._counts.reconciled += 1
        row = fingerprint(item.body)
        lead_id = await self._pages.lead_of(row)
        await self.calibration.trust()
        held: set[str] = set()  # activities the history's keys with this content hold
        if self._history is not None:  # read off the event loop: SQLite may wait on a commit
            held = await asyncio.to_thread(self._history.claimed_ids, item.content_hash)

        def claimed(activity_id: str) -> bool:  # held by a posted row: never another's
            return activity_id in held or self._log.holds(activity_id)

        kinds = self.calibration.kinds.get(row.event, {})
        scan = Scan(self.calibration.reading.offset)
        first: list[str] = []
        while True:
            if scan.needs_rule:
                rule = await self.calibration.offset_rule(lead_id, row.event, first)
                if rule is None:
                    raise LookupFailed("the lead has more than one page of these activities "
                                       "and how the look-up's Offset counts is not known yet")
                scan.rule, scan.needs_rule = rule, False
            page = await self._pages.page(lead_id, row.event, scan.next_offset())
            if scan.pages == 0:
                first = [f.key for f in page.items]
            found = pick(row, page.items, claimed, window, kinds, self.calibration.reading)
            if found is not None:
                self._counts.found_posted += 1
                log.info("row.reconciled", row=item.row, activity_id=found)
                return found
            scan.add(page)
            if scan.incomplete:
                raise LookupFailed(scan.incomplete)
            if scan.complete:
                return None

    # -- reading a lead's pages for verify -------------------------------------------------
    async def read_lead(self, item: Activity, wanted: Collection[str]) -> LeadPages:
        """The activities ``wanted`` (Ids, of ``item``'s lead and event code) as the lead's
        pages show them, newest first: pages are read until every one is found, the scan is
        complete (then an Id not found is not on the lead), or :func:`worth_reading_on` says
        stop. Never an update-log row (the same Id, another event code). Meant for a
        calibrated reading; raises LookupFailed when an answer is not understood.
        """
        row = fingerprint(item.body)
        lead_id = await self._pages.lead_of(row)
        left = {activity_id.lower() for activity_id in wanted}
        read = LeadPages()
        scan = Scan(self.calibration.reading.offset)
        first: list[str] = []
        activities: set[str] = set()  # keys read, update-log rows left out
        while left:
            if scan.needs_rule:
                rule = await self.calibration.offset_rule(lead_id, row.event, first)
                if rule is None:
                    read.why_stopped = ("the lead has more than one page of these activities "
                                        "and how the look-up's Offset counts is not known")
                    return read
                scan.rule, scan.needs_rule = rule, False
            if scan.pages and not worth_reading_on(scan, len(left), len(wanted)):
                read.why_stopped = "one call per activity left is cheaper than its pages"
                return read
            page = await self._pages.page(lead_id, row.event, scan.next_offset())
            if scan.pages == 0:
                first = [f.key for f in page.items]
            activities.update(found.key for found in page.items if not found.log)
            read.seen = len(activities)
            for found in page.items:
                key = found.activity_id.lower()
                if key in left and not found.log and found.event in (None, row.event):
                    read.found[key] = found
                    left.discard(key)
            scan.add(page)
            if scan.incomplete:
                read.why_stopped = scan.incomplete
                return read
            if scan.complete and scan.rule is None and not scan.seen:
                # Offset 0 may name no page at all (pages counted from 1): an empty first
                # page proves nothing missing until the rule is known.
                read.why_stopped = "the first page is empty and how Offset counts is not known"
                return read
            if scan.complete:
                read.complete = True
                return read
        return read
