"""From an input row to an activity request: the pure heart of bulkpost.

Owns the per-row rules: the lead must be a GUID (or an e-mail address), the event an
integer, the date-time filled and parseable, from one column or from a date column and a
time-of-day column (naive values read in the mapping's time zone, sent in UTC; an empty
cell is invalid unless the mapping chose ``empty_datetime = "now"`` or
``empty_time = "midnight"``); custom fields are sent as the cells' exact strings. A row
either becomes an :class:`Activity` (the JSON body, ready to send) or an
:class:`InvalidRow` naming the column and the reason. No I/O; the same code serves
``--dry-run`` and real runs.

Identifiers (lead, event, date-time) are stripped of surrounding blanks; notes and field
values are sent exactly as written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo

from bulkpost.core.mapping import Mapping

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# The API's date-time: UTC, to the second ("2026-07-31 05:33:50"), as sent in
# ActivityDateTime and shown in CreatedOn. Written with this format wherever a date-time is
# formatted or read in it (:func:`in_utc` writes the same text with isoformat, which pads
# years before 1000).
API_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class Activity:
    """One row ready to send: its number, key, JSON body and the body's hash."""

    row: int
    key: str
    lead: str
    body: bytes
    content_hash: str
    event: int = 0  # the activity type's event code, as sent


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One custom field to send: where its value comes from and how it is checked."""

    schema_name: str
    column: str
    label: str  # "mx_Custom_4 (Amount)", for messages
    check: Callable[[str], str] | None = None  # value to send, or ValueError(reason)
    kind: str = "string"  # number, date, datetime, dropdown or string: how it compares


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """One row that must not be sent, and why."""

    row: int
    key: str
    column: str
    reason: str
    content_hash: str


def content_hash(data: bytes) -> str:
    """A short, stable fingerprint of what a row would send (16 hex digits)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@functools.lru_cache(maxsize=16384)
def to_api_datetime(text: str, fmt: str | None, zone: tzinfo) -> str:
    """Parse ``text`` (ISO 8601 by default, else ``fmt``) and format it in UTC.

    Naive values are read in ``zone``; aware ones are converted. Raises ``ValueError``,
    also for a value that falls outside years 1..9999 once in UTC. Fractions of a second
    are dropped: the API's format has whole seconds. Around a DST change ``zoneinfo``'s
    rules apply: a repeated local time is its first occurrence, a skipped one takes the
    offset from before the change. Cached: exports repeat date-times (minutes, days) a lot.
    """
    return in_utc(datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text), zone)


def in_utc(value: datetime, zone: tzinfo) -> str:
    """``value`` in the API's UTC form; a naive one is read in ``zone``. Raises
    ``ValueError`` for a value outside years 1..9999 once in UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat(sep=' ')} is outside years 1..9999 in UTC") \
            from None
    # isoformat, not strftime: strftime("%Y") does not pad years before 1000 on Linux.
    return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")


@functools.lru_cache(maxsize=16384)
def parse_date(text: str, fmt: str | None) -> date:
    """A date cell read with ``fmt`` (a format with a date and no time: the mapping checks
    it), else as an ISO 8601 date. Raises ``ValueError``."""
    return datetime.strptime(text, fmt).date() if fmt else date.fromisoformat(text)


@functools.lru_cache(maxsize=16384)
def parse_time(text: str, fmt: str | None) -> time:
    """A time-of-day cell read with ``fmt``, else as an ISO 8601 time (``14:05``,
    ``14:05:33``; a typed time column's cells are ``HH:MM:SS``); an offset it carries is
    kept. Raises ``ValueError``."""
    return datetime.strptime(text, fmt).timetz() if fmt else time.fromisoformat(text)


class RowMapper:
    """Turns batches of rows (columns of strings) into activities or invalid rows."""

    __slots__ = ("_mapping", "_rules", "_typed_columns", "_utc_columns")

    def __init__(self, mapping: Mapping, utc_columns: frozenset[str] = frozenset(),
                 typed_columns: frozenset[str] = frozenset(),
                 rules: dict[int, tuple[FieldRule, ...]] | None = None) -> None:
        self._mapping = mapping
        # With the activity types' schemas: the fields to send, checked, per event code.
        # Without (no preflight): the mapping's fields, sent as written.
        self._rules = rules
        # Columns whose strings the reader already converted to UTC (zone-aware timestamps).
        self._utc_columns = utc_columns
        # Columns of typed dates and timestamps: ISO text, whatever datetime_format says.
        self._typed_columns = typed_columns | utc_columns

    def map_batch(
        self, rows: Sequence[int], columns: dict[str, list[str]]
    ) -> Iterator[Activity | InvalidRow]:
        """Yield one result per row, in order. ``columns`` holds every used column."""
        for index, row in enumerate(rows):
            cells = {name: values[index] for name, values in columns.items()}
            try:
                yield self.map_row(row, cells)
            except Exception as exc:  # a row must never stop the run, even through a bug
                key = cells.get(self._mapping.key_column or "", "")
                yield InvalidRow(row, key, "", f"cannot be mapped: {type(exc).__name__}: {exc}",
                                 "")

    def map_row(self, row: int, cells: dict[str, str]) -> Activity | InvalidRow:
        """Map one row; ``cells`` holds the row's value for every used column."""
        m = self._mapping
        key = cells[m.key_column] if m.key_column else ""
        body: dict[str, object] = {}
        # The body's members in this order (the content hash reads them so): the lead, the
        # event, the note, the date-time, the fields.
        try:
            lead = self._lead(cells, body)
            event = body["ActivityEvent"] = self._event(cells)
            if m.note_column:
                body["ActivityNote"] = cells[m.note_column]
            when = self._activity_datetime(cells)
            if when is not None:
                body["ActivityDateTime"] = when
            fields = self._fields(cells, event)
        except _Refused as refused:
            return self._invalid(row, key, cells, refused)
        if fields:
            body["Fields"] = fields
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return Activity(row, key, lead, data, content_hash(data), event)

    def _invalid(self, row: int, key: str, cells: dict[str, str],
                 refused: _Refused) -> InvalidRow:
        """The row, refused: the column and why, and the hash of every used cell."""
        raw = "\x1f".join(cells[c] for c in self._mapping.used_columns())
        return InvalidRow(row, key, refused.column, refused.reason,
                          content_hash(raw.encode("utf-8", "replace")))

    def _lead(self, cells: dict[str, str], body: dict[str, object]) -> str:
        """The row's lead, put in ``body``: its Id, or (no id column, or an empty id cell
        beside an e-mail column) its e-mail address. Raises :class:`_Refused`."""
        m = self._mapping
        lead_id = cells[m.lead_id_column].strip() if m.lead_id_column else ""
        if m.lead_id_column and (lead_id or not m.lead_email_column):
            if not GUID.fullmatch(lead_id):
                # Empty and malformed are two problems with two fixes: two messages.
                raise _Refused(m.lead_id_column, f"lead id {lead_id!r} is not a GUID"
                               if lead_id else "lead id is empty")
            body["RelatedProspectId"] = lead_id
            return lead_id
        assert m.lead_email_column is not None
        lead = cells[m.lead_email_column].strip()
        if not EMAIL.fullmatch(lead):
            empty = ("lead id and e-mail are both empty" if m.lead_id_column
                     else "lead e-mail is empty")
            raise _Refused(m.lead_email_column,
                           f"lead e-mail {lead!r} is not an e-mail address" if lead else empty)
        body["EmailAddress"] = lead
        return lead

    def _event(self, cells: dict[str, str]) -> int:
        """The row's event code: its cell's, or the mapping's. Raises :class:`_Refused`."""
        m = self._mapping
        if not m.event_column:
            assert m.event is not None  # the mapping has an event column or a constant
            return m.event
        event_text = cells[m.event_column].strip()
        if not event_text.isdigit() or not event_text.isascii() or len(event_text) > 9:
            raise _Refused(m.event_column, f"event code {event_text[:40]!r} is not an "
                                           "integer of at most 9 digits")
        return int(event_text)

    def _fields(self, cells: dict[str, str], event: int) -> list[dict[str, str]]:
        """The custom fields to send: the mapping's as written, or (with the activity types'
        schemas) the event's, each checked. Raises :class:`_Refused`."""
        m = self._mapping
        if self._rules is None:
            return [{"SchemaName": name, "Value": cells[column]} for name, column in m.fields]
        rules = self._rules.get(event)
        if rules is None:
            raise _Refused(m.event_column or "event",
                           f"activity type {event} does not exist in the account")
        fields = []
        for rule in rules:
            value = cells[rule.column]
            if rule.check is not None:
                try:
                    value = rule.check(value)
                except ValueError as exc:
                    raise _Refused(rule.column, f"{rule.label}: {value[:60]!r} {exc}") from None
            fields.append({"SchemaName": rule.schema_name, "Value": value})
        return fields

    def _activity_datetime(self, cells: dict[str, str]) -> str | None:
        """The row's ActivityDateTime in UTC, or None to send none (no date-time column, or
        an empty cell the mapping lets post at arrival). Raises :class:`_Refused`."""
        m = self._mapping
        if m.datetime_column:
            return self._from_datetime(cells[m.datetime_column].strip(), m.datetime_column)
        if m.date_column is None or m.time_column is None:
            return None
        return self._from_date_and_time(cells[m.date_column].strip(), m.date_column,
                                        cells[m.time_column].strip(), m.time_column)

    def _from_datetime(self, text: str, column: str) -> str | None:
        """The date-time of one date-time cell, ``text``, in UTC."""
        m = self._mapping
        if not text:
            if m.empty_datetime == "now":
                return None
            raise _Refused(column, f"date-time is empty in column {column!r}: the activity "
                                   f"would be stamped with the time of its arrival{_NOW_HINT}")
        if column in self._utc_columns:
            # A zone-aware timestamp: the reader already wrote it in the API's UTC form.
            return text
        fmt = None if column in self._typed_columns else m.datetime_format
        try:
            return to_api_datetime(text, fmt, m.timezone)
        except ValueError:
            raise _Refused(column, f"date-time {text!r} does not parse as "
                                   f"{m.datetime_format or 'ISO 8601'}") from None

    def _from_date_and_time(self, day: str, date_column: str, clock: str,
                            time_column: str) -> str | None:
        """The date-time of a date cell (``day``) and a time-of-day cell (``clock``), in
        UTC; each is checked for being empty first, then read."""
        m = self._mapping
        if not day:
            self._no_date(date_column, clock)
            return None
        if not clock:
            if m.empty_time != "midnight":
                raise _Refused(time_column, "time of day is empty in column "
                                            f"{time_column!r}: the activity would land at "
                                            'midnight; set empty_time = "midnight" in the '
                                            "mapping to post it so")
            clock, time_format = "00:00:00", None
        else:
            time_format = None if time_column in self._typed_columns else m.time_format
        if date_column in self._typed_columns:
            day, date_format = self._typed_day(day, date_column), None
        else:
            date_format = m.date_format
        try:
            parsed_day = parse_date(day, date_format)
        except ValueError:
            raise _Refused(date_column, f"date {day!r} does not parse as "
                                        f"{date_format or 'an ISO 8601 date'}") from None
        try:
            parsed_time = parse_time(clock, time_format)
        except ValueError:
            raise _Refused(time_column, f"time of day {clock!r} does not parse as "
                                        f"{time_format or 'an ISO 8601 time'}") from None
        try:
            return in_utc(datetime.combine(parsed_day, parsed_time), m.timezone)
        except ValueError as exc:
            raise _Refused(date_column, f"date {day!r}, time {clock!r}: {exc}") from None

    def _no_date(self, date_column: str, clock: str) -> None:
        """An empty date cell: allowed (the activity posts at arrival) only with no time of
        day beside it and ``empty_datetime = "now"``; else raises :class:`_Refused`."""
        if clock:
            raise _Refused(date_column, f"date is empty in column {date_column!r} but its "
                                        f"time of day is {clock!r}: a time needs a date")
        if self._mapping.empty_datetime != "now":
            raise _Refused(date_column, f"date is empty in column {date_column!r}: the "
                                        "activity would be stamped with the time of its "
                                        f"arrival{_NOW_HINT}")

    def _typed_day(self, day: str, date_column: str) -> str:
        """The date of a typed date column's cell (ISO text). A typed timestamp column
        (pandas has no date-only type): its midnights are dates; any other time of day, or
        a zone, makes it a date-time column."""
        if " " not in day:
            return day
        head, _, rest = day.partition(" ")
        if rest.strip("0:.") or date_column in self._utc_columns:
            raise _Refused(date_column, f"date {day!r} holds a time of day: the column is a "
                                        "date-time: map it as datetime_column")
        return head


_NOW_HINT = '; set empty_datetime = "now" in the mapping to post it so'


class _Refused(Exception):
    """A row cannot be sent: the column and why."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


def by_email(activity: Activity) -> bool:
    """Whether the row names its lead by e-mail address (else by lead Id)."""
    return "@" in activity.lead


def bulk_body(activities: Sequence[Activity]) -> bytes:
    """The body of one bulk call: the rows' own bodies as a JSON array, in order.

    Rows by lead Id go as they are ("…/Bulk/CustomActivity/Add/ByLeadId"); rows by e-mail
    carry the address as ``SearchByValue`` ("…/Add/ByLeadField?searchBy=EmailAddress").
    Every row of one call must name its lead the same way.
    """
    if not activities or not by_email(activities[0]):
        return b"[" + b",".join(item.body for item in activities) + b"]"
    items = []
    for item in activities:
        body = json.loads(item.body)
        body["SearchByValue"] = body.pop("EmailAddress")
        items.append(body)
    return json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode()


# -- updating an activity in place (--on-changed update) -------------------------------------
def identity_hash(activity: Activity) -> str:
    """What an update cannot change, fingerprinted (16 hex digits): the lead and the
    date-time. "Update an Activity" changes the note and the custom fields only; a row whose
    identity differs from the activity's cannot be brought up to date by updating it."""
    body = json.loads(activity.body)
    lead = body.get("RelatedProspectId") or body.get("EmailAddress") or ""
    when = body.get("ActivityDateTime", "")
    return content_hash(f"{lead}\x1f{when}".encode())


def _update_item(activity: Activity, activity_id: str, *, event: bool) -> dict[str, object]:
    body = json.loads(activity.body)
    item: dict[str, object] = {"ProspectActivityId": activity_id}
    if event:  # "Update an Activity" names the type; the bulk call's items do not
        item["ActivityEvent"] = body["ActivityEvent"]
    if "ActivityNote" in body:  # no note column: the activity's note is left as it is
        item["ActivityNote"] = body["ActivityNote"]
    # Every mapped field goes, empty ones included: a value emptied upstream is emptied.
    item["Fields"] = body.get("Fields", [])
    return item


def update_body(activity: Activity, activity_id: str) -> bytes:
    """The body of "Update an Activity" bringing ``activity_id`` to this row's content: its
    note (when the mapping has one) and every mapped custom field."""
    return json.dumps(_update_item(activity, activity_id, event=True), ensure_ascii=False,
                      separators=(",", ":")).encode()


def bulk_update_body(updates: Sequence[tuple[Activity, str]]) -> bytes:
    """The body of one "Update Activities in Bulk" call: each row's update, in order."""
    items = [_update_item(activity, activity_id, event=False)
             for activity, activity_id in updates]
    return json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode()
