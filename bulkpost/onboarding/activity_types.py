"""The account's activity types as "Get List of Activity Types" lists them. Pure functions.

Owns reading ``GET /v2/ProspectActivity.svc/ActivityTypes.Get`` and rendering what
``bulkpost types`` shows. The answer, as public clients read it: a JSON list of types, each
with ``ActivityEvent`` (the code), ``ActivityEventName``, ``DisplayName``, ``EventType`` and
``ActivityProperties``, a JSON-encoded *string* holding ``{"FormMetaData": [fields]}``, each
field as "Get Activity Type Details" gives it (SchemaName, DisplayName, DataType,
IsMandatory, OptionSet). Read tolerantly: the list may sit under a key, a code may be a digit
string, the properties may be missing, an object or a string. A type whose answer holds no
form metadata has an unknown field count (None), never 0. Fields are read by
:func:`bulkpost.core.schema.parse_activity_type`, the preflight's reading. What ``types CODE
--json`` prints (:func:`type_dict`) is read back by :func:`types_from_dicts`, for the
sandbox to rehearse an account's own types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bulkpost.core.schema import ActivityType, FieldSpec, parse_activity_type

_LISTS = ("ActivityTypes", "Types", "List", "Data", "d")


@dataclass(frozen=True, slots=True)
class ListedType:
    """One activity type of the list: its code, name and, when the answer gives them, its
    custom fields (None: not given)."""

    code: int
    name: str
    fields: tuple[FieldSpec, ...] | None

    @property
    def field_count(self) -> int | None:
        return None if self.fields is None else len(self.fields)

    @property
    def mandatory(self) -> tuple[FieldSpec, ...]:
        return tuple(spec for spec in self.fields or () if spec.mandatory)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "fields": self.field_count,
                "mandatory": [spec.schema_name for spec in self.mandatory]}


def _items(document: Any) -> list[Any]:
    if isinstance(document, dict):
        document = next((document[key] for key in _LISTS
                         if isinstance(document.get(key), list)), None)
    return document if isinstance(document, list) else []


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        return int(value.strip())
    return None


def _form_metadata(properties: Any) -> list[Any] | None:
    """The ``FormMetaData`` list of ``ActivityProperties`` (object or JSON string); None
    when there is none to read."""
    if isinstance(properties, str):
        try:
            properties = json.loads(properties) if properties.strip() else None
        except ValueError:
            return None
    if not isinstance(properties, dict):
        return None
    fields = properties.get("FormMetaData")
    return fields if isinstance(fields, list) else None


def parse_activity_types(document: Any) -> list[ListedType]:
    """The types of an "ActivityTypes.Get" answer, by code; unreadable items left out."""
    listed: dict[int, ListedType] = {}
    for item in _items(document):
        if not isinstance(item, dict):
            continue
        code = _code(item.get("ActivityEvent", item.get("ActivityEventCode")))
        if code is None:
            continue
        name = str(item.get("DisplayName") or item.get("ActivityEventName")
                   or item.get("Name") or "")
        metadata = _form_metadata(item.get("ActivityProperties"))
        fields = (None if metadata is None
                  else tuple(parse_activity_type({"Fields": metadata}, code).fields.values()))
        listed[code] = ListedType(code, name, fields)
    return [listed[code] for code in sorted(listed)]


def table(rows: list[list[str]]) -> list[str]:
    """Rows as aligned columns (the first is the heading); trailing spaces trimmed."""
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() for row in rows]


def render_list(types: list[ListedType]) -> str:
    """The human table of ``bulkpost types``."""
    if not types:
        return "the account lists no activity types"
    rows = [["code", "name", "fields", "mandatory"]]
    for listed in types:
        count = listed.field_count
        rows.append([str(listed.code), listed.name, "?" if count is None else str(count),
                     ", ".join(spec.label() for spec in listed.mandatory) or "-"])
    lines = table(rows)
    if any(listed.fields is None for listed in types):
        lines.append("?: the list gives no fields for this type; bulkpost types CODE reads "
                     "them")
    return "\n".join(lines)


def type_dict(activity: ActivityType) -> dict[str, Any]:
    """One type's fields, for ``bulkpost types CODE --json``."""
    return {"code": activity.code, "name": activity.name, "fields": [
        {"schema_name": spec.schema_name, "display_name": spec.display_name,
         "data_type": spec.data_type, "mandatory": spec.mandatory,
         "options": list(spec.options), "max_length": spec.max_length}
        for spec in activity.fields.values()]}


def types_from_dicts(document: Any) -> list[ActivityType]:
    """Types as :func:`type_dict` wrote them (``bulkpost types CODE --json``): one, or a list
    of them. Raises ValueError saying what is wrong, and where."""
    items = document if isinstance(document, list) else [document]
    if not items:
        raise ValueError("no activity type in it")
    types: dict[int, ActivityType] = {}
    for number, item in enumerate(items, start=1):
        where = f"type {number}" if isinstance(document, list) else "the type"
        if not isinstance(item, dict) or not isinstance(item.get("fields"), list):
            raise ValueError(f"{where}: expected an object with \"code\" and \"fields\", as "
                             "bulkpost types CODE --json prints")
        code = _code(item.get("code"))
        if code is None:
            raise ValueError(f"{where}: \"code\" is not an event code: {item.get('code')!r}")
        if code in types:
            raise ValueError(f"{where}: activity type {code} is given twice")
        fields: dict[str, FieldSpec] = {}
        for field in item["fields"]:
            name = field.get("schema_name") if isinstance(field, dict) else None
            if not isinstance(name, str) or not name:
                raise ValueError(f"activity type {code}: a field without a \"schema_name\": "
                                 f"{field!r:.80}")
            options = field.get("options") or []
            max_length = field.get("max_length")
            fields[name] = FieldSpec(
                schema_name=name, display_name=str(field.get("display_name") or name),
                data_type=str(field.get("data_type") or "String"),
                mandatory=bool(field.get("mandatory")),
                options=tuple(str(o) for o in options) if isinstance(options, list) else (),
                max_length=max_length if isinstance(max_length, int) and max_length > 0
                else None)
        types[code] = ActivityType(code, str(item.get("name") or ""), fields)
    return list(types.values())


def render_type(activity: ActivityType) -> str:
    """The human table of ``bulkpost types CODE``."""
    head = f"activity type {activity.code}"
    if activity.name:
        head += f" ({activity.name})"
    count = len(activity.fields)
    lines = [f"{head}: {count} custom field{'' if count == 1 else 's'}"]
    if activity.fields:
        rows = [["schema name", "display name", "data type", "mandatory", "options"]]
        for spec in activity.fields.values():
            shown = ", ".join(spec.options[:8])
            if len(spec.options) > 8:
                shown += f" … ({len(spec.options)} in all)"
            rows.append([spec.schema_name, spec.display_name, spec.data_type,
                         "yes" if spec.mandatory else "no", shown])
        lines += table(rows)
    return "\n".join(lines)
