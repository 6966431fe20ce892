"""Look-ups: was a row's activity created already? Reconciliation and its calibration.

The API has no idempotency key. Whenever an attempt's outcome is uncertain (the request may
have been carried out), delivery asks :meth:`Lookups.reconcile` before it sends the row
again: the row's lead is read with "Get Activities of a Lead" (the lead found first by
e-mail when the row names it so), page by page (:class:`bulkpost.core.reconcile.Scan`). It
answers with the Id found, or None ("not found": safe to send), or raises
:class:`LookupFailed` with the reason, and the row stays ``unknown``. The matching itself
is pure (:mod:`bulkpost.core.reconcile`); this module owns the reading of pages and what the run
has learned, and its rules are:

- "not found" is trusted only once look-ups are calibrated: a row known to be created
  (a sample: this run's first clear create, or a row an earlier run posted) was found by
  content, which teaches the :class:`Reading` (how ``CreatedOn`` and entities are shown,
  how ``Offset`` counts, what ``RecordCount`` means). Until then :class:`NotYetTrusted`;
  a sample that contradicts its row, or :data:`CALIBRATION_TRIES` look-ups that cannot
  find it, make the run *distrust* look-ups: uncertain rows stay ``unknown``;
- an activity a posted row holds (in the results file, or in the history) is never another
  row's: identical rows for the same lead are counted, not merged;
- how ``Offset`` counts is probed by one look-up at a time, on a lead whose first page is
  full and steady; a look-up that waited uses the rule learned meanwhile;
- a reading learned is handed to ``on_learned`` (saved for the next run);
- look-ups are calls like any other: under the run's rate limit, with its retries
  (:meth:`ApiCalls.lookup`); pages read to learn are counted apart from pages read to
  reconcile;
- ``bulkpost verify`` reads a lead's pages too (:meth:`Lookups.read_lead`): the activities it
  looks for, by Id, until each is found, every page is read, or reading on would cost more
  calls than asking for the rest one by one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import structlog

from bulkpost.core.activity import Activity
from bulkpost.core.calibration import calibrate, probe_rule, steady
from bulkpost.core.reconcile import (
    PAGE_SIZE,
    Fingerprint,
    FoundActivity,
    Page,
    Reading,
    Scan,
    SendWindow,
    fingerprint,
    parse_activities,
    pick,
)
from bulkpost.delivery.calls import ApiCalls, LookupFailed
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.storage.history.database import History
from bulkpost.storage.results import ResultsLog

log = structlog.get_logger("bulkpost")

CALIBRATION_TRIES = 3  # look-ups of a known activity that did not find it, before giving up


def _the_activity(page: Page, activity_id: str, event: int) -> FoundActivity | None:
    """The item of ``page`` that is activity ``activity_id`` of ``event`` itself, never an
    update-log row of it (the same Id, another event code)."""
    return next((f for f in page.items if f.activity_id == activity_id and not f.log
                 and f.event in (None, event)), None)


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


class NotYetTrusted(LookupFailed):
    """Look-ups are not calibrated yet: no row of this run is known to be created."""


class Lookups:
    """The run's look-ups of rows, and what they have learned of the account."""

    def __init__(self, calls: ApiCalls, client: LeadSquaredClient, results: ResultsLog | None,
                 history: History | None = None, reading: Reading | None = None) -> None:
        self._calls = calls
        self._counts = calls.counts
        self._client = client
        self._results = results  # None: no rows to reconcile (``bulkpost check``)
        self._history = history
        # How the account answers look-ups: learned from a known activity (calibration).
        self.reading = reading or Reading()
        self.distrust = ""  # why look-ups cannot be trusted on this account ("": they can)
        self.kinds: dict[int, dict[str, str]] = {}  # event → SchemaName → kind (preflight)
        self.on_learned: Callable[[Reading], None] | None = None  # saves what was learned
        self._sample: tuple[Activity, str, SendWindow | None] | None = None
        self._calibrating = asyncio.Lock()
        self._learning = asyncio.Lock()  # one Offset probe at a time
        self._calibration_misses = 0
        self._calibration_failure = ""  # why the last calibration did not succeed

    @property
    def _log(self) -> ResultsLog:
        assert self._results is not None, "these look-ups have no rows to reconcile"
        return self._results

    # -- reconciliation --------------------------------------------------------------------
    async def _lead_of(self, row: Fingerprint) -> str:
        if row.lead_id is not None:
            return row.lead_id
        assert row.email is not None
        leads = await self._calls.lookup(lambda: self._client.lead_by_email(row.email or ""))
        if not isinstance(leads, list) or not leads or not isinstance(leads[0], dict):
            raise LookupFailed(f"no lead has the e-mail address {row.email!r} (yet)")
        lead_id = str(leads[0].get("ProspectID") or leads[0].get("ProspectId") or "")
        if not lead_id:
            raise LookupFailed("the lead found by e-mail has no ProspectID")
        return lead_id

    async def _page(self, lead_id: str, event: int, offset: int, count: int = PAGE_SIZE, *,
                    learning: bool = False) -> Page:
        """One page of "Get Activities of a Lead"; LookupFailed when not understood.
        ``learning``: read to learn how the account answers (counted apart)."""
        if learning:
            self._counts.calibration_calls += 1
        else:
            self._counts.lookup_calls += 1
        document = await self._calls.lookup(functools.partial(
            self._client.retrieve_activities, lead_id, event, offset, count))
        page = parse_activities(document)
        if page is None:
            shape = (f"an object with {', '.join(sorted(map(str, document))[:8])}"
                     if isinstance(document, dict) else type(document).__name__)
            raise LookupFailed(f"the look-up's answer is not understood ({shape})")
        return page

    async def reconcile(self, item: Activity, window: SendWindow | None) -> str | None:
        """The Id of this row's activity if it exists already, else None.

        "Not found" is concluded only from a complete scan by a calibrated reading; else
        LookupFailed, and the row stays ``unknown``.
        """
        self._counts.reconciled += 1
        row = fingerprint(item.body)
        lead_id = await self._lead_of(row)
        await self._trust_lookups()
        held: set[str] = set()  # activities the history's keys with this content hold
        if self._history is not None:  # read off the event loop: SQLite may wait on a commit
            held = await asyncio.to_thread(self._history.claimed_ids, item.content_hash)

        def claimed(activity_id: str) -> bool:  # held by a posted row: never another's
            return activity_id in held or self._log.holds(activity_id)

        kinds = self.kinds.get(row.event, {})
        scan = Scan(self.reading.offset)
        first: list[str] = []
        while True:
            if scan.needs_rule:
                rule = await self._offset_rule(lead_id, row.event, first)
                if rule is None:
                    raise LookupFailed("the lead has more than one page of these activities "
                                       "and how the look-up's Offset counts is not known yet")
                scan.rule, scan.needs_rule = rule, False
            page = await self._page(lead_id, row.event, scan.next_offset())
            if scan.pages == 0:
                first = [f.key for f in page.items]
            found = pick(row, page.items, claimed, window, kinds, self.reading)
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
        lead_id = await self._lead_of(row)
        left = {activity_id.lower() for activity_id in wanted}
        read = LeadPages()
        scan = Scan(self.reading.offset)
        first: list[str] = []
        activities: set[str] = set()  # keys read, update-log rows left out
        while left:
            if scan.needs_rule:
                rule = await self._offset_rule(lead_id, row.event, first)
                if rule is None:
                    read.why_stopped = ("the lead has more than one page of these activities "
                                        "and how the look-up's Offset counts is not known")
                    return read
                scan.rule, scan.needs_rule = rule, False
            if scan.pages and not worth_reading_on(scan, len(left), len(wanted)):
                read.why_stopped = "one call per activity left is cheaper than its pages"
                return read
            page = await self._page(lead_id, row.event, scan.next_offset())
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

    # -- calibration -----------------------------------------------------------------------
    def offer_sample(self, item: Activity, activity_id: str,
                     window: SendWindow | None = None) -> None:
        """A row known to be created as ``activity_id``: what calibration looks up."""
        if not self.reading.calibrated and self._sample is None and activity_id:
            self._sample = (item, activity_id, window)

    async def _trust_lookups(self) -> None:
        """Return once look-ups may be trusted; else LookupFailed with the reason."""
        if not self.reading.calibrated:
            await self.calibrate()
        if self.distrust:
            raise LookupFailed(f"look-ups cannot be trusted on this account: {self.distrust}")
        if not self.reading.calibrated:
            raise NotYetTrusted("look-ups are not calibrated yet (" + (
                self._calibration_failure or "no activity of this run is known to be created")
                + "), so \"not found\" cannot be trusted")

    async def calibrate(self) -> None:
        """Look up a row known to be created and learn how the account answers; set
        ``distrust`` when the answer contradicts the row. A look-up that fails, or does not
        find the activity yet, is tried again by the next caller (a few times)."""
        async with self._calibrating:
            if self.reading.calibrated or self.distrust or self._sample is None:
                return
            item, activity_id, window = self._sample
            try:
                await self._calibrate(item, activity_id, window)
            except LookupFailed as exc:
                self._calibration_misses += 1
                self._calibration_failure = str(exc)
                log.warning("lookup.not_calibrated", row=item.row, reason=str(exc))
                if self._calibration_misses >= CALIBRATION_TRIES:
                    self.distrust = f"{CALIBRATION_TRIES} look-ups of row {item.row} failed: {exc}"
            if self.distrust:
                log.error("lookup.distrusted", reason=self.distrust)

    async def learn_offset(self, created: Sequence[tuple[Activity, str]]) -> None:
        """Learn how Offset counts, if still unknown, on the lead of this run's first
        ``created`` row when its first page is full: called while the first rows are checked,
        when nothing else is being sent (pages of a busy lead keep shifting). For a reading
        an earlier run saved: one calibrated in this run read its lead's first page already."""
        if (self.reading.offset is not None or self.distrust or not created
                or self._sample is not None):
            return
        item = created[0][0]
        row = fingerprint(item.body)
        try:
            lead_id = await self._lead_of(row)
            first = await self._page(lead_id, row.event, 0, learning=True)
            if len(first.items) >= PAGE_SIZE:
                await self._offset_rule(lead_id, row.event,
                                        [f.key for f in first.items])
        except LookupFailed as exc:
            log.warning("lookup.offset_not_learned", reason=str(exc))

    async def _calibrate(self, item: Activity, activity_id: str,
                         window: SendWindow | None) -> None:
        row = fingerprint(item.body)
        lead_id = await self._lead_of(row)
        reading = self.reading
        first = await self._page(lead_id, row.event, 0, learning=True)
        ids = [f.key for f in first.items]
        rule = reading.offset
        if not first.items:
            rule = "pages1"  # the lead holds the row's activity: Offset 0 names no page
        elif rule is None and len(first.items) >= PAGE_SIZE:
            # A full first page: learn how Offset counts now, while the first rows are
            # checked and nothing else is sent (a busy lead keeps shifting its pages).
            rule = await self._offset_rule(lead_id, row.event, ids)
        found = _the_activity(first, activity_id, row.event)
        if found is None and rule is not None:
            scan = Scan(rule)
            if first.items:
                scan.add(first)
            while found is None and not (scan.complete or scan.incomplete):
                page = await self._page(lead_id, row.event, scan.next_offset(), learning=True)
                found = _the_activity(page, activity_id, row.event)
                scan.add(page)
        if found is None:
            raise LookupFailed(f"activity {activity_id}, created from row {item.row}, is not "
                               "in the look-up's answer (yet)")
        learned = calibrate(row, activity_id, found, window, self.kinds.get(row.event, {}),
                            reading)
        if learned.reading is None:
            self.distrust = (f"row {item.row} was created as activity {activity_id}, but "
                             f"{learned.problem}")
            return
        count = first.record_count
        counted = reading.record_count or (
            "total" if count is not None and count > len(first.items) else None)
        self._learned(dataclasses.replace(learned.reading, offset=rule, record_count=counted))

    async def _offset_rule(self, lead_id: str, event: int, first: list[str]) -> str | None:
        """The Offset rule: learned by one look-up at a time, and once learned, known to
        every look-up that was waiting for it."""
        async with self._learning:
            if self.reading.offset is not None:
                return self.reading.offset
            return await self._learn_offset(lead_id, event, first)

    async def _learn_offset(self, lead_id: str, event: int, first: list[str]) -> str | None:
        """How ``Offset`` counts, from a lead whose first page is full: the pages at
        ``Offset 1`` and, if need be, ``Offset 2`` next to the first (see probe_rule), then
        the first page read again: the probe counts only if few activities arrived
        meanwhile (see steady); else it is tried again after a backoff, five times in all."""
        for attempt in range(5):
            if attempt:
                await self._calls.backoff(self._calls.settings.backoff * attempt)
            one = [f.key for f in
                   (await self._page(lead_id, event, 1, learning=True)).items]
            rule = probe_rule(first, one, None)
            if rule is None and len(first) >= PAGE_SIZE // 2:
                two = [f.key for f in
                       (await self._page(lead_id, event, 2, learning=True)).items]
                rule = probe_rule(first, one, two)
            again = [f.key for f in
                     (await self._page(lead_id, event, 0, learning=True)).items]
            if steady(first, again):
                break
            first, rule = again, None
        if rule is not None and rule != self.reading.offset:
            self._learned(dataclasses.replace(self.reading, offset=rule))
        return rule

    def _learned(self, reading: Reading) -> None:
        if reading == self.reading:
            return
        self.reading = reading
        # The reading is the look-ups' own vocabulary: for whoever debugs, not for a person.
        log.debug("lookup.calibrated" if reading.calibrated else "lookup.rule_learned",
                  reading=reading.describe())
        if self.on_learned is not None:
            self.on_learned(reading)
