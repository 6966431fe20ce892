"""The mapping file: which input columns make up an activity.

Owns parsing and checking the TOML mapping (``[activity]`` and ``[fields]``) and nothing
else. Everything here is pure: a mapping is checked against the input's column names
before any request, and every problem is a :class:`MappingError` naming the file, the key
and, for columns, the columns that do exist (and a header cell that is a missing column but
for spaces around it). The date-time comes from one column, or from a date column and a
time-of-day column; each ``strptime`` format is checked to read what its column holds (a
whole date, a time of day, or both), so ``12:30`` is never posted as 1900-01-01 12:30.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bulkpost.errors import MappingError

CUSTOM_FIELD = re.compile(r"mx_Custom_([1-9]|[1-4][0-9]|50)")

_ACTIVITY_KEYS = {
    "event": int,
    "event_column": str,
    "lead_id_column": str,
    "lead_email_column": str,
    "note_column": str,
    "datetime_column": str,
    "datetime_format": str,
    "date_column": str,
    "date_format": str,
    "time_column": str,
    "time_format": str,
    "empty_time": str,
    "empty_datetime": str,
    "timezone": str,
    "key_column": str,
}


@dataclass(frozen=True, slots=True)
class Mapping:
    """How one input row becomes one activity. Column names refer to the input file."""

    source: str
    event: int | None
    event_column: str | None
    lead_id_column: str | None
    lead_email_column: str | None
    note_column: str | None
    datetime_column: str | None
    datetime_format: str | None
    timezone: ZoneInfo
    key_column: str | None
    fields: tuple[tuple[str, str], ...]  # (SchemaName, column), in file order
    # Or the date-time from two columns: a date and a time of day, each with its format.
    date_column: str | None = None
    date_format: str | None = None
    time_column: str | None = None
    time_format: str | None = None
    empty_time: str | None = None  # "midnight": an empty time cell posts at 00:00
    empty_datetime: str | None = None  # "now": an empty date-time posts at arrival

    @property
    def lead_column(self) -> str:
        """The lead id column, or the e-mail column when there is no id column."""
        column = self.lead_id_column or self.lead_email_column
        assert column is not None  # parse_mapping guarantees at least one
        return column

    @property
    def display_names(self) -> list[str]:
        """``[fields]`` keys that are display names, not SchemaNames."""
        return [key for key, _ in self.fields if not CUSTOM_FIELD.fullmatch(key)]

    def used_columns(self) -> list[str]:
        """Every input column the mapping reads, each once, in a stable order."""
        named = [
            self.lead_id_column,
            self.lead_email_column,
            self.event_column,
            self.note_column,
            self.datetime_column,
            self.date_column,
            self.time_column,
            self.key_column,
            *(column for _, column in self.fields),
        ]
        return list(dict.fromkeys(c for c in named if c is not None))


def parse_mapping(data: dict[str, Any], source: str = "<mapping>") -> Mapping:
    """Check the parsed TOML and build a :class:`Mapping`."""
    unknown_tables = set(data) - {"activity", "fields"}
    if unknown_tables:
        raise MappingError(f"{source}: unknown table(s) {sorted(unknown_tables)}; "
                           "expected [activity] and [fields]")
    activity = data.get("activity")
    if not isinstance(activity, dict):
        raise MappingError(f"{source}: missing [activity] table")
    for key, value in activity.items():
        expected = _ACTIVITY_KEYS.get(key)
        if expected is None:
            raise MappingError(f"{source}: unknown key activity.{key}; "
                               f"known keys: {', '.join(_ACTIVITY_KEYS)}")
        if not isinstance(value, expected) or isinstance(value, bool):
            raise MappingError(f"{source}: activity.{key} must be "
                               f"{'an integer' if expected is int else 'a string'}")
    if ("event" in activity) == ("event_column" in activity):
        raise MappingError(f"{source}: give exactly one of activity.event or activity.event_column")
    if "lead_id_column" not in activity and "lead_email_column" not in activity:
        raise MappingError(
            f"{source}: give activity.lead_id_column or activity.lead_email_column (or both: "
            "the id where a row has one, else the e-mail)")
    _check_datetime_keys(activity, source)
    tz_name = activity.get("timezone", "UTC")
    try:
        timezone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a folder: OSError
        raise MappingError(f"{source}: activity.timezone: unknown time zone {tz_name!r} "
                           "(use an IANA name such as 'Asia/Kolkata' or 'UTC')") from None
    fields_table = data.get("fields", {})
    if not isinstance(fields_table, dict):
        raise MappingError(f"{source}: [fields] must be a table of SchemaName = column")
    fields: list[tuple[str, str]] = []
    for schema_name, column in fields_table.items():
        # Keys that look like SchemaNames must be valid ones; any other key is a field's
        # display name, resolved against the activity type's schema at preflight.
        if schema_name.lower().startswith("mx_") and not CUSTOM_FIELD.fullmatch(schema_name):
            raise MappingError(f"{source}: fields.{schema_name}: SchemaName must be one of "
                               "mx_Custom_1 … mx_Custom_50 (or give the field's display name)")
        if not schema_name.strip():
            raise MappingError(f"{source}: [fields] has an empty key")
        if not isinstance(column, str):
            raise MappingError(f"{source}: fields.{schema_name} must name an input column")
        fields.append((schema_name, column))
    return Mapping(
        source=source,
        event=activity.get("event"),
        event_column=activity.get("event_column"),
        lead_id_column=activity.get("lead_id_column"),
        lead_email_column=activity.get("lead_email_column"),
        note_column=activity.get("note_column"),
        datetime_column=activity.get("datetime_column"),
        datetime_format=activity.get("datetime_format"),
        timezone=timezone,
        key_column=activity.get("key_column"),
        fields=tuple(fields),
        date_column=activity.get("date_column"),
        date_format=activity.get("date_format"),
        time_column=activity.get("time_column"),
        time_format=activity.get("time_format"),
        empty_time=activity.get("empty_time"),
        empty_datetime=activity.get("empty_datetime"),
    )


# strptime's codes by what they read. A date needs a year and a day in it: a day and
# month (%d %m), a day of the year (%j), or a week and a weekday (%U %W %V with %a %A %w %u).
_YEAR, _MONTH, _DAY, _YEAR_DAY = set("YyG"), set("mbBh"), set("d"), set("j")
_WEEK, _WEEKDAY = set("UWV"), set("aAwu")
_TIME_CODES = set("HIpMSfX") | {"c"}  # %c is a date and a time
_DATE_CODES = _YEAR | _MONTH | _DAY | _YEAR_DAY | _WEEK | _WEEKDAY | {"x", "c"}
_ZONE_CODES = {"z", ":z", "Z"}
_CODE = re.compile(r"%(:z|.)", re.DOTALL)


def _codes(fmt: str) -> set[str]:
    """The strptime codes of a format (``%%`` is a literal, not a code)."""
    return {code for code in _CODE.findall(fmt) if code != "%"}


def _has_date(codes: set[str]) -> bool:
    if codes & {"x", "c"}:
        return True
    day = (codes & _MONTH and codes & _DAY) or codes & _YEAR_DAY or (
        codes & _WEEK and codes & _WEEKDAY)
    return bool(codes & _YEAR and day)


def _check_datetime_keys(activity: dict[str, Any], source: str) -> None:
    """The date-time keys: one column of date-times, or a date column and a time column,
    each format reading what its column holds, and the opt-ins only where they apply."""
    _check_datetime_columns(activity, source)
    if "datetime_format" in activity:
        _check_datetime_format(activity["datetime_format"], source)
    if "date_format" in activity:
        _check_date_format(activity["date_format"], source)
    if "time_format" in activity:
        _check_time_format(activity["time_format"], source)
    _check_opt_ins(activity, source)


def _check_datetime_columns(activity: dict[str, Any], source: str) -> None:
    """One column of date-times, or a date column with a time column: not both, not half."""
    split = [k for k in ("date_column", "date_format", "time_column", "time_format",
                         "empty_time") if k in activity]
    whole = [k for k in ("datetime_column", "datetime_format") if k in activity]
    if split and whole:
        raise MappingError(f"{source}: activity.{whole[0]} and activity.{split[0]} exclude each "
                           "other: give datetime_column (one column of date-times) or "
                           "date_column with time_column (a date and a time of day)")
    if split and not ("date_column" in activity and "time_column" in activity):
        lacking = " and ".join(f"activity.{k}" for k in ("date_column", "time_column")
                               if k not in activity)
        raise MappingError(f"{source}: activity.{split[0]} needs {lacking}: the date-time is "
                           "built from a date_column and a time_column")


def _check_datetime_format(fmt: str, source: str) -> None:
    if not _has_date(_codes(fmt)):
        raise MappingError(
            f"{source}: activity.datetime_format {fmt!r} has no whole date (a year, and a "
            "day and month or a day of the year): strptime would fill in the rest from "
            "1900-01-01. For a date and a time in two columns use date_column and "
            "time_column")


def _check_date_format(fmt: str, source: str) -> None:
    codes = _codes(fmt)
    if not _has_date(codes) or codes & (_TIME_CODES | _ZONE_CODES):
        raise MappingError(
            f"{source}: activity.date_format {fmt!r} must read a whole date (a year, and a "
            "day and month or a day of the year) and no time of day; the time of day is "
            "time_format's")


def _check_time_format(fmt: str, source: str) -> None:
    codes = _codes(fmt)
    if not codes & {"H", "I", "X"} or codes & _DATE_CODES:
        raise MappingError(
            f"{source}: activity.time_format {fmt!r} must read a time of day (an hour: "
            "%H, or %I with %p) and no date; the date is date_format's")
    if "I" in codes and "p" not in codes:
        raise MappingError(
            f"{source}: activity.time_format {fmt!r} reads a 12-hour %I without %p: "
            "every time would be read as AM. Add %p, or use %H for a 24-hour clock")
    if "p" in codes and "I" not in codes:
        raise MappingError(
            f"{source}: activity.time_format {fmt!r} has %p without %I: strptime ignores "
            "AM/PM with a 24-hour %H, so 2:05 PM would be read as 2:05 AM. Use %I with %p")


def _check_opt_ins(activity: dict[str, Any], source: str) -> None:
    """The opt-ins take one value each: anything else would read as a choice not made."""
    for key, value in (("empty_time", "midnight"), ("empty_datetime", "now")):
        if key in activity and activity[key] != value:
            raise MappingError(f"{source}: activity.{key} can only be {value!r} "
                               f"(got {activity[key]!r}); leave it out to make such rows "
                               "invalid")
    if "empty_datetime" in activity and not ("datetime_column" in activity
                                             or "date_column" in activity):
        raise MappingError(f"{source}: activity.empty_datetime needs activity.datetime_column "
                           "or activity.date_column")


def check_columns(mapping: Mapping, available: list[str], input_name: str) -> None:
    """Raise :class:`MappingError` when the mapping names a column the input lacks.

    A header cell that is the missing column but for spaces around it (``'Notes '``, as
    spreadsheets leave them) is pointed out: its repr alone is easy to misread.
    """
    present = set(available)
    missing = [c for c in mapping.used_columns() if c not in present]
    if missing:
        hints = [_space_hint(column, name) for column in missing for name in available
                 if name.strip() == column.strip()]
        raise MappingError(
            f"{mapping.source}: column(s) {', '.join(map(repr, missing))} not found in "
            f"{input_name}; {''.join(f'{hint}; ' for hint in hints)}"
            f"available columns: {', '.join(map(repr, available))}")


def _spaces(text: str) -> str:
    """The spaces around ``text``: "a trailing space", "2 leading spaces and a trailing
    space"; "" when there are none."""
    counts = (("leading", len(text) - len(text.lstrip())),
              ("trailing", len(text) - len(text.rstrip())))
    return " and ".join(f"a {side} space" if count == 1 else f"{count} {side} spaces"
                        for side, count in counts if count)


def _space_hint(column: str, header: str) -> str:
    """What sets a mapped ``column`` apart from the ``header`` cell equal to it but for
    spaces around them."""
    hint = f"the input has {header!r}"
    if _spaces(header):
        hint += f" (with {_spaces(header)})"
    if _spaces(column):
        hint += f", the mapping {column!r} (with {_spaces(column)})"
    return hint
