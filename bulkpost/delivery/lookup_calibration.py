"""What the look-ups have learnt of the account, and how they learn it (calibration).

The matching is pure (:func:`bulkpost.core.calibration.calibrate`,
:func:`~bulkpost.core.calibration.probe_rule`); this module owns the reading of pages to
learn and what the run has learnt. Its rules:

- "not found" is trusted only once look-ups are calibrated: a row known to be created
  (a sample: this run's first clear create, or a row an earlier run posted) was found by
  content, which teaches the :class:`Reading` (how ``CreatedOn`` and entities are shown,
  how ``Offset`` counts, what ``RecordCount`` means). Until then :class:`NotYetTrusted`;
  a sample that contradicts its row, or :data:`CALIBRATION_TRIES` look-ups that cannot
  find it, make the run *distrust* look-ups: uncertain rows stay ``unknown``;
- how ``Offset`` counts is probed by one look-up at a time, on a lead whose first page is
  full and steady; a look-up that waited uses the rule learned meanwhile;
- a reading learned is handed to ``on_learned`` (saved for the next run);
- pages read to learn are counted apart from pages read to reconcile.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

import structlog

from bulkpost.core.activity import Activity
from bulkpost.core.calibration import calibrate, probe_rule, steady
from bulkpost.core.reconcile import (
    PAGE_SIZE,
    FoundActivity,
    Page,
    Reading,
    Scan,
    SendWindow,
    fingerprint,
)
from bulkpost.delivery.calls import ApiCalls, LookupFailed
from bulkpost.delivery.lead_pages import LeadPageReader

log = structlog.get_logger("bulkpost")

CALIBRATION_TRIES = 3  # look-ups of a known activity that did not find it, before giving up


def _the_activity(page: Page, activity_id: str, event: int) -> FoundActivity | None:
    """The item of ``page`` that is activity ``activity_id`` of ``event`` itself, never an
    update-log row of it (the same Id, another event code)."""
    return next((f for f in page.items if f.activity_id == activity_id and not f.log
                 and f.event in (None, event)), None)


class NotYetTrusted(LookupFailed):
    """Look-ups are not calibrated yet: no row of this run is known to be created."""


class LookupCalibration:
    """What the run's look-ups have learned of the account, and the learning."""

    def __init__(self, calls: ApiCalls, pages: LeadPageReader,
                 reading: Reading | None = None) -> None:
        self._calls = calls
        self._pages = pages
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

    def offer_sample(self, item: Activity, activity_id: str,
                     window: SendWindow | None = None) -> None:
        """A row known to be created as ``activity_id``: what calibration looks up."""
        if not self.reading.calibrated and self._sample is None and activity_id:
            self._sample = (item, activity_id, window)

    async def trust(self) -> None:
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
            lead_id = await self._pages.lead_of(row)
            first = await self._pages.page(lead_id, row.event, 0, learning=True)
            if len(first.items) >= PAGE_SIZE:
                await self.offset_rule(lead_id, row.event,
                                       [f.key for f in first.items])
        except LookupFailed as exc:
            log.warning("lookup.offset_not_learned", reason=str(exc))

    async def _calibrate(self, item: Activity, activity_id: str,
                         window: SendWindow | None) -> None:
        row = fingerprint(item.body)
        lead_id = await self._pages.lead_of(row)
        reading = self.reading
        first = await self._pages.page(lead_id, row.event, 0, learning=True)
        ids = [f.key for f in first.items]
        rule = reading.offset
        if not first.items:
            rule = "pages1"  # the lead holds the row's activity: Offset 0 names no page
        elif rule is None and len(first.items) >= PAGE_SIZE:
            # A full first page: learn how Offset counts now, while the first rows are
            # checked and nothing else is sent (a busy lead keeps shifting its pages).
            rule = await self.offset_rule(lead_id, row.event, ids)
        found = _the_activity(first, activity_id, row.event)
        if found is None and rule is not None:
            scan = Scan(rule)
            if first.items:
                scan.add(first)
            while found is None and not (scan.complete or scan.incomplete):
                page = await self._pages.page(lead_id, row.event, scan.next_offset(),
                                              learning=True)
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

    async def offset_rule(self, lead_id: str, event: int, first: list[str]) -> str | None:
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
                   (await self._pages.page(lead_id, event, 1, learning=True)).items]
            rule = probe_rule(first, one, None)
            if rule is None and len(first) >= PAGE_SIZE // 2:
                two = [f.key for f in
                       (await self._pages.page(lead_id, event, 2, learning=True)).items]
                rule = probe_rule(first, one, two)
            again = [f.key for f in
                     (await self._pages.page(lead_id, event, 0, learning=True)).items]
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
