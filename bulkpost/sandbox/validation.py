"""What the sandbox's API accepts: its activity types, and the checks of a create. No I/O.

Owns the catalog of activity types ("Get Activity Type Details": a typed type 301 with a
mandatory, a Number, a Dropdown, a Date and a DateTime field, and duplicate display names;
310, a purchase with a shop's field names, for ``bulkpost init``; every other code in
100..999 with 50 String fields) and the validation a single create and each item of a bulk
call go through, with the API's messages (typed fields included).
"Get List of Activity Types" lists the catalog's types and a few untyped ones. A
:class:`Catalog` adds an account's own types to them (``bulkpost sandbox --types``: what
``bulkpost types CODE --json`` printed), so a load is rehearsed against its real fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from bulkpost.core.activity import GUID
from bulkpost.core.mapping import CUSTOM_FIELD
from bulkpost.core.schema import ActivityType
from bulkpost.sandbox.dialect import canonical_option

MAX_BULK_ITEMS = 25
API_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

# Typed activity types the sandbox knows; every other event code in 100..999 exists with
# fifty untyped String fields.
CATALOG: dict[int, dict[str, Any]] = {
    301: {"DisplayName": "Order", "Fields": [
        {"SchemaName": "mx_Custom_1", "DisplayName": "Order No", "DataType": "String",
         "IsMandatory": True, "MaxFieldLength": 12},
        {"SchemaName": "mx_Custom_2", "DisplayName": "Amount", "DataType": "Number"},
        {"SchemaName": "mx_Custom_3", "DisplayName": "Channel", "DataType": "Dropdown",
         "OptionSet": json.dumps([{"Value": v, "Text": v} for v in ("Web", "Phone", "Store")])},
        {"SchemaName": "mx_Custom_4", "DisplayName": "Delivery Date", "DataType": "Date"},
        {"SchemaName": "mx_Custom_5", "DisplayName": "Shipped At", "DataType": "DateTime"},
        {"SchemaName": "mx_Custom_6", "DisplayName": "Purpose", "DataType": "String"},
        {"SchemaName": "mx_Custom_7", "DisplayName": "Purpose", "DataType": "String"},
        {"SchemaName": "mx_Custom_8", "DisplayName": "Remarks", "DataType": "String"},
    ]},
    # A purchase as a shop's export names its parts: `bulkpost init` matches headers to these.
    310: {"DisplayName": "Purchase", "Fields": [
        {"SchemaName": "mx_Custom_1", "DisplayName": "Order No", "DataType": "String",
         "IsMandatory": True, "MaxFieldLength": 20},
        {"SchemaName": "mx_Custom_2", "DisplayName": "Amount", "DataType": "Number"},
        {"SchemaName": "mx_Custom_3", "DisplayName": "Quantity", "DataType": "Number"},
        {"SchemaName": "mx_Custom_4", "DisplayName": "Sales Channel", "DataType": "Dropdown",
         "OptionSet": json.dumps([{"Value": v, "Text": v}
                                  for v in ("Web", "Phone", "Store", "Partner")])},
        {"SchemaName": "mx_Custom_5", "DisplayName": "Delivery Date", "DataType": "Date"},
        {"SchemaName": "mx_Custom_6", "DisplayName": "Payment Mode", "DataType": "String"},
        {"SchemaName": "mx_Custom_7", "DisplayName": "Coupon Code", "DataType": "String"},
    ]},
}


def activity_setting(code: int) -> dict[str, Any] | None:
    """What "Get Activity Type Details" answers for ``code`` (None: no such type)."""
    if code in CATALOG:
        return {"ActivityEventCode": code, **CATALOG[code]}
    if 100 <= code <= 999:
        return {"ActivityEventCode": code, "DisplayName": f"Event {code}", "Fields": [
            {"SchemaName": f"mx_Custom_{n}", "DisplayName": f"Custom {n}", "DataType": "String"}
            for n in range(1, 51)]}
    return None


# The untyped codes "Get List of Activity Types" lists beside the catalog's (those the
# samples and tests post): all of 100..999 exist, but an account lists only its own.
LISTED_UNTYPED = (201, 202)


def activity_types() -> list[dict[str, Any]]:
    """What "Get List of Activity Types" answers: the catalog's types and the listed untyped
    ones, in the shape public clients read (``ActivityProperties`` a JSON string holding
    ``FormMetaData``, the type's fields). ``EventType``'s values are not known: a stand-in."""
    return BUILT_IN.listed()


def setting_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The activity type of a stored entry or a valid body (validated, so it exists)."""
    return BUILT_IN.setting_of(entry)


def api_setting(activity: ActivityType) -> dict[str, Any]:
    """An activity type as "Get Activity Type Details" answers it (its options as an
    ``OptionSet`` JSON string, as the catalog's)."""
    fields: list[dict[str, Any]] = []
    for spec in activity.fields.values():
        field: dict[str, Any] = {"SchemaName": spec.schema_name,
                                 "DisplayName": spec.display_name, "DataType": spec.data_type}
        if spec.mandatory:
            field["IsMandatory"] = True
        if spec.options:
            field["OptionSet"] = json.dumps([{"Value": v, "Text": v} for v in spec.options])
        if spec.max_length:
            field["MaxFieldLength"] = spec.max_length
        fields.append(field)
    return {"DisplayName": activity.name or f"Event {activity.code}", "Fields": fields}


class Catalog:
    """The activity types one sandbox serves: the built-in catalog, and an account's own
    types given to rehearse a load (``bulkpost sandbox --types``), which are listed too and
    win over a built-in type of the same code."""

    def __init__(self, own: Sequence[ActivityType] = ()) -> None:
        self.own: dict[int, dict[str, Any]] = {a.code: api_setting(a) for a in own}

    def setting(self, code: int) -> dict[str, Any] | None:
        """What "Get Activity Type Details" answers for ``code`` (None: no such type)."""
        if code in self.own:
            return {"ActivityEventCode": code, **self.own[code]}
        return activity_setting(code)

    def setting_of(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The activity type of a stored entry or a valid body (validated, so it exists)."""
        return self.setting(int(entry["ActivityEvent"])) or {"DisplayName": "", "Fields": []}

    def listed(self) -> list[dict[str, Any]]:
        """What "Get List of Activity Types" answers (see :func:`activity_types`)."""
        listed = []
        for code in sorted({*CATALOG, *LISTED_UNTYPED, *self.own}):
            setting = self.setting(code)
            assert setting is not None
            listed.append({
                "ActivityEvent": code, "ActivityEventName": setting["DisplayName"],
                "DisplayName": setting["DisplayName"], "EventType": "Custom",
                "ActivityProperties": json.dumps({"FormMetaData": setting["Fields"]})})
        return listed


BUILT_IN = Catalog()


def typed_problem(setting: dict[str, Any], name: str, value: str,
                  any_case: bool = False) -> str | None:
    """What the API would say of ``value`` for field ``name``, or None when it is fine
    (``any_case``: a dropdown value may name its option in any case)."""
    spec = next((f for f in setting["Fields"] if f["SchemaName"] == name), None)
    if spec is None:
        return f"Field {name} does not exist in activity type {setting['ActivityEventCode']}"
    label, kind = spec["DisplayName"], spec["DataType"]
    if value == "":
        return f"{label} is mandatory" if spec.get("IsMandatory") else None
    if kind == "Number" and not _NUMBER.fullmatch(value):
        return f"{label}: '{value}' is not a number"
    if kind == "Date" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return f"{label}: '{value}' is not a date (yyyy-mm-dd)"
    if kind == "DateTime" and not API_DATETIME.fullmatch(value):
        return f"{label}: '{value}' is not a date-time (yyyy-mm-dd hh:mm:ss)"
    if kind == "Dropdown":
        option = canonical_option(spec, value)
        if option is None or (option != value and not any_case):
            return f"{label}: '{value}' is not one of the options"
    if spec.get("MaxFieldLength") and len(value) > spec["MaxFieldLength"]:
        return f"{label} is longer than {spec['MaxFieldLength']} characters"
    return None


def _lead_problem(body: dict[str, Any]) -> str | None:
    lead_id = body.get("RelatedProspectId")
    if lead_id is not None:
        if not isinstance(lead_id, str) or not GUID.fullmatch(lead_id):
            return f"Invalid RelatedProspectId: {lead_id}"
        if lead_id.startswith("00000000-"):
            return f"Lead with Id {lead_id} does not exist"
        return None
    email = body.get("EmailAddress")
    if not isinstance(email, str) or "@" not in email:
        return "RelatedProspectId or EmailAddress is required"
    return None


def _fields_problem(setting: dict[str, Any], fields: list[Any],
                    any_case: bool) -> str | None:
    seen: set[str] = set()
    for item in fields:
        if not isinstance(item, dict) or not isinstance(item.get("SchemaName"), str):
            return "Each field needs a SchemaName and a Value"
        name = item["SchemaName"]
        if not CUSTOM_FIELD.fullmatch(name):
            return f"Invalid field SchemaName: {name}"
        if name in seen:
            return f"Field {name} given twice"
        seen.add(name)
        if not isinstance(item.get("Value"), str):
            return f"Field {name}: Value must be a string"
        problem = typed_problem(setting, name, item["Value"], any_case)
        if problem is not None:
            return problem
    for spec in setting["Fields"]:
        if spec.get("IsMandatory") and spec["SchemaName"] not in seen:
            return f"Mandatory field {spec['DisplayName']} is missing"
    return None


def create_problem(body: Any, any_case: bool = False,
                   catalog: Catalog = BUILT_IN) -> str | None:
    """What the API would say of a create's ``body``, or None when it would create it
    (``any_case``: a dropdown value may name its option in any case)."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    problem = _lead_problem(body)
    if problem is not None:
        return problem
    event = body.get("ActivityEvent")
    if not isinstance(event, int) or isinstance(event, bool):
        return "ActivityEvent is required and must be an integer"
    setting = catalog.setting(event)
    if setting is None:
        return f"Activity event {event} does not exist"
    if not isinstance(body.get("ActivityNote", ""), str):
        return "ActivityNote must be a string"
    when = body.get("ActivityDateTime")
    if when is not None and (not isinstance(when, str) or not API_DATETIME.fullmatch(when)):
        return f"Invalid ActivityDateTime: {when} (expected yyyy-mm-dd hh:mm:ss, UTC)"
    fields = body.get("Fields", [])
    if not isinstance(fields, list):
        return "Fields must be a list"
    return _fields_problem(setting, fields, any_case)


def bulk_item(item: Any, by_email: bool) -> Any:
    """A bulk item as the single create it stands for: by e-mail, ``SearchByValue`` is the
    lead's ``EmailAddress``; by Id, the Id alone names the lead."""
    if not isinstance(item, dict):
        return item
    body = dict(item)
    if by_email:
        body.pop("RelatedProspectId", None)
        body["EmailAddress"] = body.pop("SearchByValue", None)
    else:
        body.pop("EmailAddress", None)
    return body


def bulk_problem(items: Any) -> str | None:
    """What the API would say of a bulk call's whole body, or None (items are checked one by
    one with :func:`create_problem`)."""
    if not isinstance(items, list) or not items:
        return "Expected a JSON array of activities"
    if len(items) > MAX_BULK_ITEMS:
        return f"At most {MAX_BULK_ITEMS} activities are allowed per call"
    return None


def update_problem(body: Any, entry: dict[str, Any] | None, any_case: bool = False,
                   catalog: Catalog = BUILT_IN) -> str | None:
    """What the API would say of "Update an Activity" (or one item of the bulk call) with
    ``body``, given the activity it names (None: none of the key's), or None when it would
    update it. An update changes the note and the custom fields only: a body that names the
    lead or the date-time is refused (bulkpost never sends one), as is another event code."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    activity_id = body.get("ProspectActivityId")
    if not isinstance(activity_id, str) or not activity_id.strip():
        return "ProspectActivityId is required"
    if entry is None:
        return f"Activity {activity_id} does not exist"
    event = body.get("ActivityEvent")
    if event is not None and event != entry["ActivityEvent"]:
        return f"ActivityEvent {event} is not the activity's ({entry['ActivityEvent']})"
    for name in ("RelatedProspectId", "EmailAddress", "SearchByValue", "ActivityDateTime"):
        if name in body:
            return f"{name} cannot be updated"
    if not isinstance(body.get("ActivityNote", ""), str):
        return "ActivityNote must be a string"
    fields = body.get("Fields", [])
    if not isinstance(fields, list):
        return "Fields must be a list"
    return _fields_problem(catalog.setting_of(entry), fields, any_case)
