"""Reconciliation: was this row's activity already created? Pure matching, no I/O.

The API has no idempotency key, so when the outcome of a sent request is uncertain (a crash
in flight, a timeout after the body was sent, a 5xx without an MX type, a reset) bulkpost
looks the row up with "Get Activities of a Lead" before sending it again. This module owns
the rules of that look-up:

- a row's :class:`Fingerprint` is what the API stores of it: event, date-time, note and the
  mapped custom fields, taken from the very request body that was (or will be) sent;
- an activity matches when its event, note and fields are equal and its ``CreatedOn`` is the
  row's date-time, or, for a row sent without one (the API fills in "now"), falls inside the
  window in which the row was sent;
- an activity already claimed by another row (the Id recorded for a posted row with the same
  content) is not a match: identical rows for the same lead are counted, not merged.

Responses are parsed tolerantly: ``Data`` may be an object or a list of ``{Key, Value}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

_NOTE_KEYS = ("ActivityNote", "ActivityEvent_Note", "Note", "NotableEventDescription")


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
    """The fingerprint of a request body built by :mod:`bulkpost.activity`."""
    data = json.loads(body)
    return Fingerprint(
        lead_id=data.get("RelatedProspectId"),
        email=data.get("EmailAddress"),
        event=int(data["ActivityEvent"]),
        when=data.get("ActivityDateTime"),
        note=data.get("ActivityNote", ""),
        fields=tuple((f["SchemaName"], f["Value"]) for f in data.get("Fields", [])),
    )


@dataclass(frozen=True, slots=True)
class FoundActivity:
    """One activity as "Get Activities of a Lead" returned it."""

    activity_id: str
    event: int | None
    created_on: str
    note: str
    data: Mapping[str, str]


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_activities(document: Any) -> tuple[int | None, list[FoundActivity]]:
    """``(RecordCount, activities)`` from a Retrieve answer; unknown shapes give ``[]``."""
    if not isinstance(document, dict):
        return None, []
    count = document.get("RecordCount")
    found: list[FoundActivity] = []
    for item in document.get("ProspectActivities") or []:
        if not isinstance(item, dict) or not item.get("Id"):
            continue
        raw = item.get("Data") or {}
        data: dict[str, str] = {}
        if isinstance(raw, dict):
            data = {str(k): _as_text(v) for k, v in raw.items()}
        elif isinstance(raw, list):
            data = {str(e.get("Key")): _as_text(e.get("Value"))
                    for e in raw if isinstance(e, dict) and "Key" in e}
        note = next((_as_text(source[k]) for source in (item, data) for k in _NOTE_KEYS
                     if k in source), "")
        try:
            event = int(item["EventCode"]) if item.get("EventCode") is not None else None
        except (TypeError, ValueError):
            event = None
        found.append(FoundActivity(str(item["Id"]), event, _as_text(item.get("CreatedOn")),
                                   note, data))
    return (int(count) if isinstance(count, int | str) and str(count).isdigit() else None), found


@dataclass(frozen=True, slots=True)
class SendWindow:
    """When a row without a date-time may have reached the API (UTC)."""

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


def _parse_created(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("T", " ").rstrip("Z"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def matches(row: Fingerprint, found: FoundActivity, window: SendWindow | None) -> bool:
    """True when ``found`` is an activity with exactly this row's content."""
    if found.event is not None and found.event != row.event:
        return False
    if found.note != row.note:
        return False
    if any(found.data.get(name, "") != value for name, value in row.fields):
        return False
    created = _parse_created(found.created_on)
    if row.when is not None:
        expected = _parse_created(row.when)
        return created is not None and created == expected
    if window is None or created is None:
        return False
    return window.earliest <= created <= window.latest


def pick(row: Fingerprint, candidates: Iterable[FoundActivity],
         is_claimed: Callable[[str], bool], window: SendWindow | None) -> str | None:
    """The Id of an activity matching ``row`` that no other row has claimed, or None."""
    for found in candidates:
        if not is_claimed(found.activity_id) and matches(row, found, window):
            return found.activity_id
    return None
