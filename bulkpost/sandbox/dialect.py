"""How the sandbox shows stored activities back: the dialects of "Get Activities of a Lead".

Owns the :class:`Dialect` a sandbox speaks and the pure functions that turn one stored
ledger entry into what an answer shows of it. The docs say little ("``Data`` is a key-value
pair of all properties"), a real account answered in another shape than the sandbox first
guessed, and several things are undocumented (the API notes, "Reading activities back"). So
the sandbox speaks each variant we know of, and the client is tested against each. A dialect
has seven traits:

- ``fields``: ``data`` (``Data`` is an object ``{"ActivityEvent_Note": note, "mx_Custom_1":
  …}``), ``activity-fields`` (the captured real shape: an ``ActivityFields`` object with the
  note, the custom fields and a US-style ``CreatedOn``; ``Data`` a list of ``{"Key",
  "Value"}`` pairs holding the note as ``NotableEventDescription`` and no custom field) or
  ``data-list`` (``Data`` a Key/Value list of the note and the custom fields, no
  ``ActivityFields``), or ``note-only`` (as ``activity-fields`` with no ``ActivityFields``
  at all: pages that show no custom field, so look-ups are never calibrated and ``verify``
  reads one activity per call; no preset has it, ``--dialect classic,fields=note-only``);
- ``entities``: non-ASCII characters of the note and of String values shown as
  ``&#x1F447;`` (in Retrieve and in "Get Custom Fields of an Activity");
- ``created_on``: ``posted`` (the posted ``ActivityDateTime``, else the call's arrival) or
  ``arrival`` (always the moment the call arrived);
- ``offset``: ``Paging.Offset`` counts ``rows``, 0-based pages (``pages0``) or 1-based pages
  (``pages1``, where Offset 0 is an empty page);
- ``record_count``: ``total`` (every matching activity) or ``page`` (the page's items);
- ``typed``: typed values shown in another form than sent (a Number normalised, a Date with
  a time, a DateTime US-style) and a dropdown accepted in any case, stored as the option;
- ``update_log``: each update of an activity adds an update-log row, as the captured answer
  showed: the activity's ``Id`` again, ``EventCode`` :data:`UPDATE_LOG_EVENT`, ``Type``
  "Logs", ``Data`` holding ``Event: Update``, ``OldData`` and ``NewData``, no
  ``ActivityFields``, ``CreatedOn`` with milliseconds (``2026-08-08 07:38:00.000``), listed
  newest first among the activities whatever event the look-up asks for (whether the API's
  filter keeps them out is not known); the activity keeps its ``CreatedOn`` and its
  ``ModifiedOn`` moves.

The presets in :data:`DIALECTS` together cover every value of every field but
``fields=note-only`` (an override: look-ups cannot be calibrated on it); ``classic`` is
what the sandbox answered before dialects existed. No I/O here: the sandbox passes entries in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from bulkpost.core.activity import API_DATETIME_FORMAT
from bulkpost.errors import UsageError

T = TypeVar("T")

CHOICES: dict[str, tuple[str, ...]] = {
    "fields": ("data", "activity-fields", "data-list", "note-only"),
    "entities": ("true", "false"),
    "created_on": ("posted", "arrival"),
    "offset": ("rows", "pages0", "pages1"),
    "record_count": ("total", "page"),
    "typed": ("true", "false"),
    "update_log": ("true", "false"),
}
UPDATE_LOG_EVENT = 3011  # the captured update-log rows' EventCode
# Who "created" every sandbox activity: the captured answer names a user by GUID and name.
SANDBOX_USER = "7d4446d7-0000-4000-8000-5a4db0c5e7a1"
SANDBOX_USER_NAME = "Sandbox User"


@dataclass(frozen=True, slots=True)
class Dialect:
    """One way of answering look-ups; each field's values are in :data:`CHOICES`."""

    name: str
    fields: str
    entities: bool
    created_on: str
    offset: str
    record_count: str
    typed: bool
    update_log: bool = False

    def __post_init__(self) -> None:
        for key in ("fields", "created_on", "offset", "record_count"):
            if getattr(self, key) not in CHOICES[key]:
                raise ValueError(f"Dialect.{key}: {getattr(self, key)!r} not in {CHOICES[key]}")


DIALECTS: dict[str, Dialect] = {d.name: d for d in (
    Dialect("classic", "data", entities=False, created_on="posted", offset="rows",
            record_count="total", typed=False),
    Dialect("captured", "activity-fields", entities=True, created_on="posted", offset="rows",
            record_count="total", typed=False, update_log=True),
    Dialect("arrival", "activity-fields", entities=True, created_on="arrival",
            offset="pages1", record_count="page", typed=True, update_log=True),
    Dialect("pages", "data-list", entities=False, created_on="arrival", offset="pages0",
            record_count="total", typed=True),
)}


def parse_dialect(spec: str) -> Dialect:
    """``"captured"``, ``"captured,offset=pages0,entities=false"`` or ``"typed=true"``.

    Overrides without a preset apply to ``classic``. The result is named by the spec in its
    canonical form (``classic,typed=true``). Raises :class:`UsageError` naming what is known.
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    base = DIALECTS["classic"]
    if parts and "=" not in parts[0]:
        name = parts.pop(0)
        if name not in DIALECTS:
            raise UsageError(f"--dialect: unknown preset {name!r}; known: {', '.join(DIALECTS)}")
        base = DIALECTS[name]
    changes: dict[str, Any] = {}
    for part in parts:
        key, equals, value = part.partition("=")
        key = key.strip().replace("-", "_")
        value = value.strip().lower()
        if not equals or key not in CHOICES:
            raise UsageError(f"--dialect: {part!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(CHOICES)} (after an optional preset: "
                             f"{', '.join(DIALECTS)})")
        if value not in CHOICES[key]:
            raise UsageError(f"--dialect: {key}={value!r}; known: {', '.join(CHOICES[key])}")
        changes[key] = value == "true" if CHOICES[key] == ("true", "false") else value
    if not changes:
        return base
    shown = ",".join(f"{k}={str(v).lower()}" for k, v in changes.items())
    return replace(base, name=f"{base.name},{shown}", **changes)


# -- values ------------------------------------------------------------------------------
def entities(text: str) -> str:
    """Every non-ASCII character as a numeric entity, uppercase hex, like the captured
    answer; ``&``, ``<`` and newlines stay as they are (that answer left them alone)."""
    if text.isascii():
        return text
    return "".join(c if c.isascii() else f"&#x{ord(c):X};" for c in text)


def us_datetime(when: datetime) -> str:
    """``4/4/2025 12:10:26 PM``: the form ``ActivityFields`` and typed DateTimes use."""
    hour = when.hour % 12 or 12
    return (f"{when.month}/{when.day}/{when.year} {hour}:{when:%M:%S} "
            f"{'AM' if when.hour < 12 else 'PM'}")


def canonical_option(spec: Mapping[str, Any], value: str) -> str | None:
    """The dropdown option ``value`` names, in any case, spelled as the type has it."""
    options = [str(o["Value"]) for o in json.loads(spec.get("OptionSet") or "[]")]
    if value in options:
        return value
    return next((o for o in options if o.casefold() == value.casefold()), None)


def _typed_form(value: str, kind: str) -> str:
    """A stored typed value in the form a typed account shows it; unreadable values (an
    altered one, say) are shown as stored, as a real account would show whatever it has."""
    try:
        if kind == "Number":
            return format(Decimal(value).normalize(), "f")
        if kind == "Date":
            return datetime.strptime(value, "%Y-%m-%d").strftime(API_DATETIME_FORMAT)
        if kind == "DateTime":
            return us_datetime(datetime.strptime(value, API_DATETIME_FORMAT))
    except (InvalidOperation, ValueError):
        return value
    return value


def shown_value(value: str, spec: Mapping[str, Any] | None, dialect: Dialect) -> str:
    """One stored custom field value as ``dialect`` shows it (``spec``: the field's schema)."""
    kind = spec.get("DataType", "String") if spec is not None else "String"
    if dialect.typed and kind in ("Number", "Date", "DateTime") and value:
        return _typed_form(value, kind)
    if dialect.entities and kind == "String":
        return entities(value)
    return value


def _specs(setting: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(f["SchemaName"]): f for f in setting.get("Fields", [])}


def created_on(entry: Mapping[str, Any], dialect: Dialect) -> str:
    """``CreatedOn`` (``YYYY-MM-DD HH:MM:SS`` UTC) of a stored entry under ``dialect``."""
    if dialect.created_on == "arrival":
        return datetime.fromtimestamp(float(entry["ReceivedAt"]), UTC).strftime(API_DATETIME_FORMAT)
    return str(entry["CreatedOn"])


# -- answers -----------------------------------------------------------------------------
def render_activity(entry: Mapping[str, Any], dialect: Dialect,
                    setting: Mapping[str, Any]) -> dict[str, Any]:
    """One item of ``ProspectActivities`` for a stored ledger entry."""
    specs = _specs(setting)
    note = str(entry.get("ActivityNote") or "")
    note = entities(note) if dialect.entities else note
    values = {name: shown_value(str(value), specs.get(name), dialect)
              for name, value in entry["Fields"].items()}
    when = created_on(entry, dialect)
    item: dict[str, Any] = {
        "Id": entry["Id"], "EventCode": entry["ActivityEvent"],
        "EventName": setting["DisplayName"], "CreatedOn": when, "Type": "Activity",
        "RelatedProspectId": entry["LeadId"],
    }
    if dialect.fields == "data":
        item["Data"] = {"ActivityEvent_Note": note, **values}
    elif dialect.fields == "data-list":
        item["Data"] = [{"Key": "NotableEventDescription", "Value": note},
                        *({"Key": k, "Value": v} for k, v in values.items())]
    else:
        shown_when = us_datetime(datetime.strptime(when, API_DATETIME_FORMAT))
        item["Data"] = [{"Key": "CreatedByName", "Value": SANDBOX_USER_NAME},
                        {"Key": "EventName", "Value": setting["DisplayName"]},
                        {"Key": "NotableEventDescription", "Value": note},
                        {"Key": "HasAttachments", "Value": "False"}]
    if dialect.fields == "activity-fields":
        item["ActivityFields"] = {
            # Derived from the Id so that rendering stays a pure function of the entry.
            "ProspectActivityAutoId": str(int(str(entry["Id"]).replace("-", ""), 16)
                                          % 10_000_000),
            "ActivityEvent_Note": note, "CreatedOn": shown_when, "ModifiedOn": shown_when,
            "CreatedBy": SANDBOX_USER, **values, "Status": "", "Owner": SANDBOX_USER,
            "ModifiedBy": SANDBOX_USER}
    updates = entry.get("Updates") or []
    item["ModifiedOn"] = (_api_time(float(updates[-1]["ReceivedAt"])) if updates
                          and dialect.update_log else when)
    return item


def _api_time(at: float, milliseconds: bool = False) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    shown = moment.strftime(API_DATETIME_FORMAT)
    return f"{shown}.{moment.microsecond // 1000:03d}" if milliseconds else shown


def render_update_log(entry: Mapping[str, Any], change: Mapping[str, Any],
                      dialect: Dialect) -> dict[str, Any]:
    """The update-log row an update (``change``, one of the entry's ``Updates``) adds."""
    def values(side: Mapping[str, Any]) -> str:
        shown = dict(side.get("Fields") or {})
        if "ActivityNote" in side:
            shown["ActivityEvent_Note"] = side["ActivityNote"]
        return json.dumps(shown, ensure_ascii=False, sort_keys=True)

    when = _api_time(float(change["ReceivedAt"]), milliseconds=True)
    pairs = {"Event": "Update", "OldData": values(change.get("Before") or {}),
             "NewData": values(change), "CreatedByName": SANDBOX_USER_NAME}
    return {"Id": entry["Id"], "EventCode": UPDATE_LOG_EVENT, "EventName": "Activity Update",
            "CreatedOn": when, "Type": "Logs", "RelatedProspectId": entry["LeadId"],
            "Data": pairs if dialect.fields == "data" else [
                {"Key": k, "Value": v} for k, v in pairs.items()],
            "ModifiedOn": when}


def render_details(entry: Mapping[str, Any], dialect: Dialect,
                   setting: Mapping[str, Any]) -> dict[str, Any]:
    """"Get Custom Fields of an Activity" for a stored entry: every field of its type."""
    stored: Mapping[str, str] = entry["Fields"]
    return {"ID": entry["Id"], "Name": setting["DisplayName"],
            "DisplayName": setting["DisplayName"], "Fields": [{
                "SchemaName": spec["SchemaName"], "DisplayName": spec["DisplayName"],
                "Value": shown_value(stored.get(spec["SchemaName"], ""), spec, dialect),
                "DataType": spec["DataType"], "IsMandatory": bool(spec.get("IsMandatory")),
                "ShowInForm": True, "Sequence": number, "OptionSet": spec.get("OptionSet"),
            } for number, spec in enumerate(setting["Fields"], start=1)]}


def page(entries: Sequence[T], offset: int, count: int,
         dialect: Dialect) -> tuple[list[T], int]:
    """The page ``Paging`` asks for, and ``RecordCount``, as ``dialect`` counts them."""
    if dialect.offset == "rows":
        start = offset
    elif dialect.offset == "pages0":
        start = offset * count
    else:  # pages1: Offset 0 names no page at all
        start = (offset - 1) * count if offset > 0 else len(entries)
    items = list(entries[start:start + count])
    return items, len(items) if dialect.record_count == "page" else len(entries)
