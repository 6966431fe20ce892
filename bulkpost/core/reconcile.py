"""Reconciliation: was this row's activity already created? Pure reading and matching, no I/O.

The API has no idempotency key, so when the outcome of a sent request is uncertain (a crash
in flight, a timeout after the body was sent, a 5xx without an MX type, a reset) bulkpost
looks the row up with "Get Activities of a Lead" before sending it again. This module owns
the rules of that look-up, and it is built for an API whose answers are only partly
documented:

- :func:`parse_activities` reads every shape we know of: custom fields in an
  ``ActivityFields`` object (as a real account answered) or in ``Data`` (an object, or a
  list of ``{Key, Value}``); the note in ``ActivityFields.ActivityEvent_Note``, ``Data``'s
  ``NotableEventDescription`` or ``ActivityEvent_Note``, or ``ActivityNote``. An answer of
  any other shape is *not understood* (None): never read as "nothing found";
- :func:`matches` compares by meaning (:mod:`bulkpost.core.values`): HTML entities decoded on the
  answer's side, typed fields by the activity type's kinds, strings exactly. A row with a
  date-time matches an activity whose ``CreatedOn`` is that date-time, or, on an account
  that stamps ``CreatedOn`` on arrival, one created while the row may have been on the wire:
  which of the two, the run's :class:`~bulkpost.core.calibration.Reading` says (until it is
  learned, either). What is learned of the account's answers, and when "not found" is
  trusted, is :mod:`bulkpost.core.calibration`'s;
- an answer may list an ``Id`` twice: updating an activity adds an *update-log* row with
  the same ``Id``, another ``EventCode`` (3011 in the captured answer) and ``Data`` holding
  ``Event: Update``, ``OldData`` and ``NewData``. Items are told apart by (``Id``,
  ``EventCode``) (:attr:`FoundActivity.key`); an update-log row (:attr:`FoundActivity.log`)
  is never a copy of an activity nor a match for a row;
- times are read in every form answers show them (:func:`bulkpost.core.values.parse_shown_datetime`:
  ``2026-07-31 05:33:50``, ``7/31/2026 5:33:50 AM``, ``2026-08-08 07:38:00.000``, UTC);
  ``ActivityFields`` may be absent;
- :class:`Scan` pages through a lead's activities whichever way ``Offset`` counts,
  de-duplicates by (``Id``, ``EventCode``) and says "incomplete" rather than "not found"
  when pages repeat, the count does not add up, or the rule is not known when a second page
  is needed;
- an activity that another row holds (its Id is recorded for a posted row) is never a
  match: identical rows for the same lead are counted, not merged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bulkpost.core.activity import content_hash
from bulkpost.core.values import parse_shown_datetime, same_value

PAGE_SIZE = 25  # the API's largest page of "Get Activities of a Lead"
MAX_PAGES = 400  # 10,000 activities of one type on one lead: beyond, say "incomplete"
_NOTE_KEYS = ("ActivityEvent_Note", "NotableEventDescription", "ActivityNote", "Note")
_CUSTOM = re.compile(r"mx_Custom_\d+")
_CHANGE_KEYS = ("OldData", "NewData")  # what an update-log row's Data holds
_DATETIME_MEMBER = re.compile(rb',"ActivityDateTime":"[^"]*"')


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the API stores of one activity, as bulkpost sent it."""

    lead_id: str | None  # None when sent by e-mail address
    email: str | None
    event: int
    when: str | None  # "YYYY-MM-DD HH:MM:SS" UTC, or None: the API used the time of the call
    note: str
    fields: tuple[tuple[str, str], ...]


def fingerprint(body: bytes) -> Fingerprint:
    """The fingerprint of a request body built by :mod:`bulkpost.core.activity`."""
    data = json.loads(body)
    return Fingerprint(
        lead_id=data.get("RelatedProspectId"),
        email=data.get("EmailAddress"),
        event=int(data["ActivityEvent"]),
        when=data.get("ActivityDateTime"),
        note=data.get("ActivityNote", ""),
        fields=tuple((f["SchemaName"], f["Value"]) for f in data.get("Fields", [])),
    )


def timeless_hash(body: bytes) -> str:
    """The content hash of a body without its date-time: rows that only this tells apart
    look alike to an account that stamps ``CreatedOn`` on arrival, so they are delivered
    one at a time."""
    return content_hash(_DATETIME_MEMBER.sub(b"", body, count=1))


@dataclass(frozen=True, slots=True)
class FoundActivity:
    """One activity as "Get Activities of a Lead" showed it (texts as shown)."""

    activity_id: str
    event: int | None
    created_on: str
    note: str | None  # None: the answer shows no note for it
    fields: Mapping[str, str]
    where: str = ""  # where its fields were: "ActivityFields", "Data", "Data list"
    log: bool = False  # an update-log row: a record of a change, not an activity

    @property
    def key(self) -> str:
        """What tells items apart: an update-log row shares its activity's ``Id``."""
        return f"{self.activity_id}:{'' if self.event is None else self.event}"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a Retrieve answer."""

    record_count: int | None
    items: tuple[FoundActivity, ...]


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def _pairs(raw: Any) -> dict[str, str] | None:
    """``Data`` or ``ActivityFields`` as a dict: an object, or a list of {Key, Value}."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(k): _as_text(v) for k, v in raw.items()}
    if isinstance(raw, list):
        pairs: dict[str, str] = {}
        for entry in raw:
            if not isinstance(entry, dict) or "Key" not in entry:
                return None
            pairs[str(entry["Key"])] = _as_text(entry.get("Value"))
        return pairs
    return None


def _activity(item: Any) -> FoundActivity | None:
    if not isinstance(item, dict) or not item.get("Id"):
        return None
    data = _pairs(item.get("Data"))
    extra = _pairs(item.get("ActivityFields"))
    if data is None or extra is None:
        return None
    fields: dict[str, str] = {}
    where = ""
    for source, name in ((data, "Data list" if isinstance(item.get("Data"), list) else "Data"),
                         (extra, "ActivityFields")):
        custom = {k: v for k, v in source.items() if _CUSTOM.fullmatch(k)}
        if custom:
            fields.update(custom)
            where = name
    note = next((source[k] for source in (extra, data, {k: _as_text(v) for k, v in item.items()
                                                        if k in _NOTE_KEYS})
                 for k in _NOTE_KEYS if k in source), None)
    try:
        event = int(item["EventCode"]) if item.get("EventCode") is not None else None
    except (TypeError, ValueError):
        return None
    created = _as_text(item.get("CreatedOn")) or extra.get("CreatedOn", "")
    log = (any(k in data for k in _CHANGE_KEYS)
           or data.get("Event", "").strip().casefold() == "update")
    return FoundActivity(str(item["Id"]), event, created, note, fields, where, log)


def parse_activities(document: Any) -> Page | None:
    """A Retrieve answer's page; None when its shape is not understood (never "empty")."""
    count: Any = None
    if isinstance(document, dict):
        if "ProspectActivities" not in document:
            return None
        items, count = document["ProspectActivities"], document.get("RecordCount")
        if items is None:
            items = []
    else:
        items = document  # a bare list of activities
    if not isinstance(items, list):
        return None
    found = [_activity(item) for item in items]
    if any(f is None for f in found):
        return None
    record_count = None
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        record_count = count
    elif isinstance(count, str) and count.strip().isdigit():
        record_count = int(count)
    elif count is not None:
        return None
    return Page(record_count, tuple(f for f in found if f is not None))


@dataclass(frozen=True, slots=True)
class SendWindow:
    """When a row may have reached the API (UTC)."""

    earliest: datetime
    latest: datetime

    @classmethod
    def around(cls, first_sent: datetime, last_sent: datetime, timeout: float,
               slack: float = 120.0) -> SendWindow:
        """From the first send to the last answer's deadline, with clock slack either side."""
        return cls(first_sent - timedelta(seconds=slack),
                   last_sent + timedelta(seconds=timeout + slack))

    def joined(self, other: SendWindow | None) -> SendWindow:
        """The window covering both (this one alone when ``other`` is None)."""
        if other is None:
            return self
        return SendWindow(min(self.earliest, other.earliest), max(self.latest, other.latest))

    def holds(self, moment: datetime | None) -> bool:
        return moment is not None and self.earliest <= moment <= self.latest


def matches(row: Fingerprint, found: FoundActivity, window: SendWindow | None,
            kinds: Mapping[str, str] | None = None, reading: Reading | None = None) -> bool:
    """True when ``found`` is an activity with exactly this row's content (by meaning);
    ``reading`` None: nothing learned yet."""
    created_on = None if reading is None else reading.created_on
    kinds = kinds or {}
    if found.log or (found.event is not None and found.event != row.event):
        return False
    if found.note is None:
        if row.note:
            return False
    # Every entity reading is tried, whatever the calibration learned: a match that is too
    # strict would conclude "not found" and send a created row again.
    elif not same_value("string", row.note, found.note):
        return False
    for name, value in row.fields:
        if not same_value(kinds.get(name, "string"), value, found.fields.get(name, "")):
            return False
    created = parse_shown_datetime(found.created_on)
    in_window = window is not None and window.holds(created)
    if row.when is None:
        return in_window
    posted = created is not None and created == parse_shown_datetime(row.when)
    if created_on == "posted":
        return posted
    if created_on == "arrival":
        return in_window
    return posted or in_window  # not learned yet: either rule (sound for "not found")


def pick(row: Fingerprint, candidates: Iterable[FoundActivity],
         is_claimed: Callable[[str], bool], window: SendWindow | None,
         kinds: Mapping[str, str] | None = None, reading: Reading | None = None) -> str | None:
    """The Id of an activity matching ``row`` that no other row holds, or None."""
    for found in candidates:
        if matches(row, found, window, kinds, reading) and not is_claimed(found.activity_id):
            return found.activity_id
    return None


def offset_of(page: int, rule: str | None, size: int = PAGE_SIZE) -> int:
    """The ``Offset`` that asks for page ``page`` (0-based) under ``rule``."""
    if rule == "pages0":
        return page
    if rule == "pages1":
        return page + 1
    return page * size  # "rows", and the first page of a rule not yet known


@dataclass(slots=True)
class Scan:
    """Paging through one lead's activities of one type: which page next, and when the
    scan is complete, or cannot be (then nothing may be concluded from it)."""

    rule: str | None
    size: int = PAGE_SIZE
    pages: int = 0
    seen: set[str] = field(default_factory=set)
    total: int | None = None  # RecordCount of the first page, once it proved to be a total
    repeats: int = 0
    complete: bool = False
    incomplete: str = ""  # why nothing may be concluded
    needs_rule: bool = False  # a second page is needed and the Offset rule is not known
    read: list[str] = field(default_factory=list)  # "Offset:items" of each page, for reasons

    def next_offset(self) -> int:
        return offset_of(self.pages, self.rule, self.size)

    def add(self, page: Page) -> None:
        """Take the page just read; then ``complete``, ``incomplete`` or another page."""
        items = page.items
        new = [f for f in items if f.key not in self.seen]
        self.read.append(f"{self.next_offset()}:{len(items)}/{len(new)}")
        self.pages += 1
        self.seen.update(f.key for f in items)
        count = page.record_count
        if count is not None and count > len(items) and self.pages == 1:
            # More than the first page holds: a total, of the activities there were when the
            # scan began. Those that arrive later only push older ones down (repeats, never
            # gaps), and are newer than the row looked for: later counts are not compared.
            self.total = count
        if len(items) > self.size:
            self.incomplete = (f"the look-up answered {len(items)} activities for a page of "
                               f"{self.size}: paging is not understood")
        elif len(items) < self.size:
            self._last_page(items, count)
        else:
            self._full_page(new=bool(new))
        if not (self.complete or self.incomplete):
            if self.pages >= MAX_PAGES:
                self.incomplete = f"more than {MAX_PAGES} pages of activities on this lead"
            elif self.rule is None:
                self.needs_rule = True

    def _full_page(self, *, new: bool) -> None:
        """A full page: another follows, unless pages keep repeating what was seen."""
        if new:
            self.repeats = 0
            return
        self.repeats += 1
        if self.repeats >= 3:
            self.incomplete = ("pages repeat the same activities: the Offset rule may not be "
                               "the account's")

    def _last_page(self, items: tuple[FoundActivity, ...], count: int | None) -> None:
        """A page that is not full ends the scan: complete, unless it proves pages missed."""
        if self.pages == 1 and not items and self.rule is None and count:
            self.incomplete = ("the first page came back empty while RecordCount says "
                               f"{count}: the Offset rule is not known yet")
        elif self.total is not None and len(self.seen) < self.total:
            self.incomplete = (f"the look-up saw {len(self.seen)} of {self.total} "
                               "activities (Offset:activities/new "
                               f"{' '.join(self.read)}): the scan cannot be completed")
        else:
            self.complete = True


# -- how the account answers look-ups, as calibration learns it ------------------------
OFFSET_RULES = ("rows", "pages0", "pages1")


# -- what is learned -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reading:
    """What a run knows of how the account answers look-ups; None: not learned yet.

    ``calibrated``: a look-up found, by content, an activity known to be created from a
    row; only then is "not found" trusted.
    """

    calibrated: bool = False
    created_on: str | None = None  # "posted" (the row's ActivityDateTime) or "arrival"
    entities: str | None = None  # "none", "numeric" or "html"
    offset: str | None = None  # "rows", "pages0" or "pages1"
    record_count: str | None = None  # "total" or "page"
    fields_at: str = ""  # where the custom fields were shown, for people

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Reading | None:
        """A saved reading; None when it is not one this version understands."""
        if not isinstance(data, dict):
            return None
        try:
            reading = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None
        known = {"created_on": (None, "posted", "arrival"),
                 "entities": (None, "none", "numeric", "html"),
                 "offset": (None, *OFFSET_RULES), "record_count": (None, "total", "page")}
        if any(getattr(reading, name) not in values for name, values in known.items()):
            return None
        return reading

    def describe(self) -> str:
        return (f"CreatedOn {self.created_on or 'not yet known'}, entities "
                f"{self.entities or 'not yet known'}, Offset counts "
                f"{self.offset or 'not yet known'}, RecordCount {self.record_count or 'unknown'}, "
                f"fields in {self.fields_at or 'no field seen'}")
