"""An activity type's schema, and checking rows against it before any call is spent.

Owns what "Get Activity Type Details" (``GetActivitySetting?code=…``) tells us: each custom
field's SchemaName, DisplayName, DataType, whether it is mandatory, its dropdown options and
maximum length. Pure functions only:

- :func:`parse_activity_type` reads the answer tolerantly (``OptionSet`` may be a JSON
  string, a list or an object; field lists may sit under ``Fields`` or be the answer);
- :func:`resolve_fields` maps the mapping's ``[fields]`` keys, SchemaName or DisplayName,
  to SchemaNames, with a clear error when a name is unknown or ambiguous;
- :func:`preflight` lists mapped fields the type lacks, mandatory fields left unmapped and
  the type's other fields;
- :meth:`FieldSpec.check` validates and normalises one value: numbers must parse (one that
  does not, written with a decimal comma or thousands separators, is told how), dates are
  sent as ``YYYY-MM-DD`` and date-times as ``YYYY-MM-DD HH:MM:SS`` UTC, dropdown values are
  matched case-insensitively and sent in the canonical spelling, lengths and mandatory fields
  are enforced.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from bulkpost.core.activity import FieldRule, to_api_datetime
from bulkpost.core.mapping import CUSTOM_FIELD

NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
_NUMERIC = {"number", "decimal", "integer", "currency", "float", "double"}
_DATE = {"date"}
_DATETIME = {"datetime", "date time", "datetimeoffset"}
_DROPDOWN = {"dropdown", "searchabledropdown", "select", "radio", "dropdownwithothers"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One custom field of an activity type."""

    schema_name: str
    display_name: str
    data_type: str
    mandatory: bool = False
    options: tuple[str, ...] = ()
    max_length: int | None = None

    @property
    def kind(self) -> str:
        lowered = self.data_type.strip().lower()
        for kind, names in (("number", _NUMERIC), ("date", _DATE), ("datetime", _DATETIME),
                            ("dropdown", _DROPDOWN)):
            if lowered in names:
                return kind
        return "string"

    def label(self) -> str:
        if self.display_name and self.display_name != self.schema_name:
            return f"{self.schema_name} ({self.display_name})"
        return self.schema_name

    def check(self, value: str, zone: tzinfo, *, decimal_comma: bool = False) -> str:
        """The value to send; raise ``ValueError`` with the reason when it is not valid."""
        if value.strip() == "":
            if self.mandatory:
                raise ValueError("is mandatory but empty")
            return value
        kind = self.kind
        if kind == "number":
            text = value.strip()
            if decimal_comma and DECIMAL_COMMA.fullmatch(text):
                text = text.replace(",", ".")
            if not NUMBER.fullmatch(text):
                raise ValueError(f"is not a number{_number_hint(text, decimal_comma)}")
            value = text
        elif kind == "date":
            value = _date_text(value.strip())
        elif kind == "datetime":
            value = to_api_datetime(value.strip(), None, zone)
        elif kind == "dropdown" and self.options:
            wanted = value.strip().casefold()
            canonical = next((o for o in self.options if o.casefold() == wanted), None)
            if canonical is None:
                shown = ", ".join(self.options[:8]) + (" …" if len(self.options) > 8 else "")
                raise ValueError(f"is not one of the options ({shown})")
            value = canonical
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"is longer than {self.max_length} characters")
        return value


# Thousands separators: dots before a decimal comma (1.234,00, 1.234.567) or commas before
# a decimal point (1,234.00, 1,234,567). A lone 1,234 reads as a decimal comma.
_DOT_THOUSANDS = re.compile(r"[+-]?\d{1,3}(\.\d{3})+(,\d+)?")
_COMMA_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def _number_hint(text: str, decimal_comma: bool) -> str:
    """What to do about a Number value that is not a number, when its form tells; "" else."""
    if _DOT_THOUSANDS.fullmatch(text):
        plain = text.replace(".", "")
        if decimal_comma or "," not in plain:
            return f" (thousands separators? write {plain})"
        return (f" (thousands separators and a decimal comma? write "
                f"{plain.replace(',', '.')}, or {plain} with --decimal-comma)")
    if DECIMAL_COMMA.fullmatch(text):
        return " (a decimal comma? see --decimal-comma)"
    if _COMMA_THOUSANDS.fullmatch(text):
        return f" (thousands separators? write {text.replace(',', '')})"
    return ""


def _date_text(text: str) -> str:
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        raise ValueError("is not a date (expected YYYY-MM-DD)") from None


@dataclass(frozen=True, slots=True)
class ActivityType:
    """An activity type: its event code, name and custom fields by SchemaName."""

    code: int
    name: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)


def _options(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except ValueError:
            return ()
    if isinstance(raw, dict):
        raw = raw.get("Options") or raw.get("options") or raw.get("Values") or []
    values: list[str] = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            value = item.get("Value", item.get("value", item.get("Text")))
            if value is not None:
                values.append(str(value))
        elif item is not None:
            values.append(str(item))
    return tuple(values)


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def parse_activity_type(document: Any, code: int) -> ActivityType:
    """The activity type in a GetActivitySetting answer; unknown shapes give no fields."""
    if isinstance(document, list):
        document = next((d for d in document if isinstance(d, dict)), {})
    if not isinstance(document, dict):
        return ActivityType(code, "")
    raw_fields = document.get("Fields") or document.get("fields") or []
    specs: dict[str, FieldSpec] = {}
    for item in raw_fields if isinstance(raw_fields, list) else []:
        if not isinstance(item, dict) or not item.get("SchemaName"):
            continue
        name = str(item["SchemaName"])
        specs[name] = FieldSpec(
            schema_name=name,
            display_name=str(item.get("DisplayName") or name),
            data_type=str(item.get("DataType") or "String"),
            mandatory=bool(item.get("IsMandatory")),
            options=_options(item.get("OptionSet")),
            max_length=_int_or_none(item.get("MaxFieldLength") or item.get("MaxLength")),
        )
    name = str(document.get("DisplayName") or document.get("ActivityEventName")
               or document.get("Name") or "")
    return ActivityType(code, name, specs)


class SchemaError(ValueError):
    """The mapping does not fit the activity type."""


def resolve_fields(fields: Iterable[tuple[str, str]],
                   activity: ActivityType) -> tuple[tuple[str, str], ...]:
    """``[fields]`` keys (SchemaName or DisplayName) → ``(SchemaName, column)`` pairs."""
    by_display: dict[str, list[str]] = {}
    for spec in activity.fields.values():
        by_display.setdefault(spec.display_name.casefold(), []).append(spec.schema_name)
    resolved: list[tuple[str, str]] = []
    for key, column in fields:
        if key in activity.fields or (CUSTOM_FIELD.fullmatch(key) and not activity.fields):
            resolved.append((key, column))
            continue
        matches = by_display.get(key.casefold(), [])
        if len(matches) > 1:
            raise SchemaError(f"fields.{key!r}: the display name is ambiguous in activity "
                              f"type {activity.code}: {', '.join(matches)}; use the SchemaName")
        if not matches:
            known = ", ".join(s.label() for s in activity.fields.values())
            raise SchemaError(f"fields.{key!r}: activity type {activity.code} has no field "
                              f"of that SchemaName or display name; its fields: {known}")
        resolved.append((matches[0], column))
    seen: set[str] = set()
    for name, _ in resolved:
        if name in seen:
            raise SchemaError(f"{name} is mapped twice (by SchemaName and display name?)")
        seen.add(name)
    return tuple(resolved)


@dataclass(frozen=True, slots=True)
class Preflight:
    """What the mapping and the activity type say of each other."""

    activity: ActivityType
    missing: tuple[str, ...]  # mapped but not in the type
    mandatory_unmapped: tuple[FieldSpec, ...]
    unmapped: tuple[FieldSpec, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mandatory_unmapped

    def lines(self) -> list[str]:
        head = f"activity type {self.activity.code}"
        if self.activity.name:
            head += f" ({self.activity.name})"
        out = [f"{head}: {len(self.activity.fields)} custom fields"]
        out += [f"  error: {name} is mapped but the type has no such field"
                for name in self.missing]
        out += [f"  error: mandatory field {spec.label()} is not mapped"
                for spec in self.mandatory_unmapped]
        if self.unmapped:
            shown = ", ".join(s.label() for s in self.unmapped[:12])
            more = len(self.unmapped) - 12
            out.append(f"  not mapped: {shown}" + (f" and {more} more" if more > 0 else ""))
        return out


def preflight(resolved: Iterable[tuple[str, str]], activity: ActivityType) -> Preflight:
    mapped = {name for name, _ in resolved}
    return Preflight(
        activity=activity,
        missing=tuple(sorted(n for n in mapped if activity.fields and n not in activity.fields)),
        mandatory_unmapped=tuple(s for s in activity.fields.values()
                                 if s.mandatory and s.schema_name not in mapped),
        unmapped=tuple(s for s in activity.fields.values()
                       if not s.mandatory and s.schema_name not in mapped),
    )


def field_rules(resolved: Iterable[tuple[str, str]], activity: ActivityType, zone: tzinfo,
                decimal_comma: bool = False) -> tuple[FieldRule, ...]:
    """The checked fields to send for one activity type."""
    rules: list[FieldRule] = []
    for name, column in resolved:
        spec = activity.fields.get(name)
        if spec is None:
            rules.append(FieldRule(name, column, name))
            continue
        rules.append(FieldRule(name, column, spec.label(), functools.partial(
            spec.check, zone=zone, decimal_comma=decimal_comma), spec.kind))
    return tuple(rules)
