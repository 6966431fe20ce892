"""The mapping file: which input columns make up an activity.

Owns parsing and checking the TOML mapping (``[activity]`` and ``[fields]``) and nothing
else. Everything here is pure: a mapping is checked against the input's column names
before any request, and every problem is a :class:`MappingError` naming the file, the key
and, for columns, the columns that do exist (and a header cell that is a missing column but
for spaces around it).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
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
            self.key_column,
            *(column for _, column in self.fields),
        ]
        return list(dict.fromkeys(c for c in named if c is not None))


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file; raise :class:`MappingError` on any problem."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise MappingError(f"{source}: mapping file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"{source}: cannot read the mapping: {exc}") from None
    return parse_mapping(data, source)


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
    )


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
