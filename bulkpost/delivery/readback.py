"""Reading one activity back: does LeadSquared store what bulkpost sent?

Owns the read-back that ``bulkpost verify`` and a run's first rows (``--verify-first``)
share: an activity's custom fields are read with "Get Custom Fields of an Activity" (one
call per activity, under the run's rate limit) and every field the request body sent is
compared with the value the answer shows, by the field's kind
(:func:`bulkpost.core.values.same_value`: ``12.50`` = ``12.5``, dates in any form, dropdowns in
any case, HTML entities decoded on the answer's side). The note and the date-time are not
compared there: that answer does not show them. ``verify`` may instead read the activity as
its lead's page shows it (:func:`page_differences`): the same fields by the same rules, and
the note too. Everything but :func:`read_back` is pure. An answer it does not understand is
never taken for equal (None: unreadable, or not comparable).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from bulkpost.core import mapping as mapping_file
from bulkpost.core.activity import Activity, FieldRule
from bulkpost.core.mapping import CUSTOM_FIELD
from bulkpost.core.reconcile import FoundActivity
from bulkpost.core.values import same_value
from bulkpost.delivery.calls import LookupFailed, Reads
from bulkpost.delivery.client import LeadSquaredClient

log = structlog.get_logger("bulkpost")


# -- comparing ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FieldInfo:
    """What the report says of one custom field, and how its values compare."""

    label: str  # "mx_Custom_2 (Amount)"
    column: str  # the input column it was sent from
    kind: str = "string"  # number, date, datetime, dropdown or string


@dataclass(frozen=True, slots=True)
class Difference:
    """One field of one activity whose stored value is not what was sent."""

    row: int
    activity_id: str
    field: str  # SchemaName
    label: str
    column: str
    sent: str
    stored: str | None  # None: the answer does not show the field at all


def _shown(value: Any) -> str | None:
    """A field value from an answer as text; None when it is not a plain value."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def parse_details(document: Any) -> dict[str, str] | None:
    """SchemaName → shown value from a "Get Custom Fields of an Activity" answer.

    The documented shape is ``{"Fields": [{"SchemaName", "Value", …}, …]}``; the custom
    fields of a "Get Activities of a Lead" item (an ``ActivityFields`` object keyed by
    SchemaName) are read too, ``Fields`` winning where both are present. Null values are
    ``""``. None when the shape is anything else: an answer we cannot read must not pass
    for one that shows the values sent.
    """
    if not isinstance(document, dict):
        return None
    listed, keyed = document.get("Fields"), document.get("ActivityFields")
    if listed is None and keyed is None:
        return None
    shown: dict[str, str] = {}
    if keyed is not None:
        if not isinstance(keyed, dict):
            return None
        for name, value in keyed.items():
            # Beside the custom fields sit Owner, Status, CreatedOn…: only ours are read.
            if isinstance(name, str) and CUSTOM_FIELD.fullmatch(name):
                text = _shown(value)
                if text is None:
                    return None
                shown[name] = text
    if listed is not None:
        if not isinstance(listed, list):
            return None
        for entry in listed:
            if not isinstance(entry, dict) or not isinstance(entry.get("SchemaName"), str):
                return None
            text = _shown(entry.get("Value"))
            if text is None:
                return None
            shown[entry["SchemaName"]] = text
    return shown


def field_infos(mapping: mapping_file.Mapping,
                rules: Mapping[int, tuple[FieldRule, ...]] | None
                ) -> Callable[[int], Mapping[str, FieldInfo]]:
    """The fields of each event code, by SchemaName: from the preflight's rules, or (without
    them, or for a code they lack) from the mapping's ``[fields]``, compared as strings."""
    plain = {name: FieldInfo(name, column) for name, column in mapping.fields}
    by_event = {code: {rule.schema_name: FieldInfo(rule.label, rule.column, rule.kind)
                       for rule in event_rules}
                for code, event_rules in (rules or {}).items()}

    def fields_for(event: int) -> Mapping[str, FieldInfo]:
        return by_event.get(event, plain)

    return fields_for


def differences(item: Activity, activity_id: str, shown: Mapping[str, str],
                fields: Mapping[str, FieldInfo], entities: str | None = None
                ) -> list[Difference]:
    """Every field of ``item``'s request body whose shown value is not the one sent.

    A field sent as ``""`` that the answer leaves out is equal (nothing was stored, nothing
    is shown); one sent with a value and left out is a difference.
    """
    sent_fields = json.loads(item.body).get("Fields") or []
    found: list[Difference] = []
    for sent_field in sent_fields:
        name, sent = str(sent_field["SchemaName"]), str(sent_field["Value"])
        info = fields.get(name) or FieldInfo(name, "")
        stored = shown.get(name)
        if stored is None:
            if sent == "":
                continue
        elif same_value(info.kind, sent, stored, entities):
            continue
        found.append(Difference(item.row, activity_id, name, info.label, info.column, sent,
                                stored))
    return found


NOTE_FIELD = "ActivityNote"  # how a difference in the note names its field
NOTE_LABEL = "note"


def page_differences(item: Activity, activity_id: str, found: FoundActivity,
                     fields: Mapping[str, FieldInfo], fields_at: str, note_column: str,
                     entities: str | None = None) -> list[Difference] | None:
    """Every field and the note of ``item``'s request body that ``found`` (its item on its
    lead's page) does not show as sent, by the rules of :func:`differences`.

    None when the page cannot tell: the item shows its custom fields elsewhere than the
    calibrated look-ups found them (``fields_at``: an item without ``ActivityFields``, say)
    while fields were sent, or shows no note while a note was sent. The activity must then
    be read another way, never counted as equal.
    """
    body = json.loads(item.body)
    if body.get("Fields") and found.where != fields_at:
        return None
    found_differences = differences(item, activity_id, found.fields, fields, entities)
    if NOTE_FIELD in body:
        sent = str(body[NOTE_FIELD])
        if found.note is None:
            if sent:
                return None
        elif not same_value("string", sent, found.note, entities):
            found_differences.append(Difference(item.row, activity_id, NOTE_FIELD, NOTE_LABEL,
                                                note_column, sent, found.note))
    return found_differences


async def read_back(calls: Reads, client: LeadSquaredClient, item: Activity,
                    activity_id: str, fields: Mapping[str, FieldInfo],
                    entities: str | None = None) -> list[Difference]:
    """Read one activity's custom fields (one look-up through ``calls``, under the run's
    rate limit) and compare them with what ``item`` sent.

    Raises :class:`LookupFailed` when the call gets no usable answer or an answer whose
    shape is not understood, and :class:`Stopped` when the run is stopping (a fatal answer
    such as 401 stops it through ``calls``).
    """
    document = await calls.lookup(functools.partial(client.activity_details, activity_id))
    shown = parse_details(document)
    if shown is None:
        kind = type(document).__name__
        keys = ", ".join(map(str, list(document)[:8])) if isinstance(document, dict) else ""
        raise LookupFailed(f"the answer for activity {activity_id} is not understood (a {kind}"
                           + (f" with {keys}" if keys else "") + ", no list of Fields)")
    return differences(item, activity_id, shown, fields, entities)
