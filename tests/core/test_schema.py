"""Activity-type schemas: parsing the answer, resolving display names, checking values."""

from __future__ import annotations

import json
import re
from datetime import UTC
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bulkpost.core.activity import Activity, InvalidRow, RowMapper
from bulkpost.core.mapping import parse_mapping
from bulkpost.core.schema import (
    FieldSpec,
    SchemaError,
    field_rules,
    parse_activity_type,
    preflight,
    resolve_fields,
)
from bulkpost.sandbox.validation import activity_setting

ORDER = parse_activity_type(activity_setting(301), 301)
KOLKATA = ZoneInfo("Asia/Kolkata")


def test_the_typed_type_parses() -> None:
    assert ORDER.name == "Order" and len(ORDER.fields) == 8
    amount = ORDER.fields["mx_Custom_2"]
    assert (amount.display_name, amount.kind) == ("Amount", "number")
    assert ORDER.fields["mx_Custom_3"].options == ("Web", "Phone", "Store")
    assert ORDER.fields["mx_Custom_1"].mandatory and ORDER.fields["mx_Custom_1"].max_length == 12


@pytest.mark.parametrize("document", [
    {"Fields": [{"SchemaName": "mx_Custom_1", "DataType": "Dropdown",
                 "OptionSet": [{"Value": "A"}, {"Text": "B"}]}]},
    [{"Fields": [{"SchemaName": "mx_Custom_1", "DataType": "Dropdown",
                  "OptionSet": json.dumps({"Options": [{"Value": "A"}, {"Value": "B"}]})}]}],
    {"fields": [{"SchemaName": "mx_Custom_1", "DataType": "Dropdown",
                 "OptionSet": '["A", "B"]'}]},
])
def test_option_sets_in_any_shape(document: Any) -> None:
    spec = parse_activity_type(document, 1).fields["mx_Custom_1"]
    assert spec.options == ("A", "B") and spec.kind == "dropdown"


@pytest.mark.parametrize("document", [None, "x", [], {}, {"Fields": "nope"},
                                      {"Fields": [{"DisplayName": "no schema name"}]}])
def test_unknown_shapes_give_no_fields(document: Any) -> None:
    assert parse_activity_type(document, 5).fields == {}


@pytest.mark.parametrize(("kind", "value", "sent"), [
    ("Number", " 12.50 ", "12.50"), ("Number", "-3", "-3"), ("Number", "1e3", "1e3"),
    ("Number", "", ""), ("Date", "2024-02-29", "2024-02-29"),
    ("Date", "2024-02-29 10:00:00", "2024-02-29"),
    ("DateTime", "2024-03-01 10:00", "2024-03-01 04:30:00"),  # Kolkata → UTC
    ("DateTime", "2024-03-01T10:00:00+00:00", "2024-03-01 10:00:00"),
    ("Dropdown", "web", "Web"), ("Dropdown", " PHONE ", "Phone"),
    ("String", "  kept as written ", "  kept as written "),
])
def test_valid_values_are_normalised(kind: str, value: str, sent: str) -> None:
    spec = FieldSpec("mx_Custom_1", "F", kind, options=("Web", "Phone"))
    assert spec.check(value, KOLKATA) == sent


@pytest.mark.parametrize(("spec", "value", "reason"), [
    (FieldSpec("mx_Custom_1", "Amount", "Number"), "12,5", "decimal comma"),
    (FieldSpec("mx_Custom_1", "Amount", "Number"), "1,299.50", "is not a number"),
    (FieldSpec("mx_Custom_1", "Amount", "Number"), "abc", "is not a number"),
    (FieldSpec("mx_Custom_1", "D", "Date"), "31/02/2024", "is not a date"),
    (FieldSpec("mx_Custom_1", "D", "DateTime"), "yesterday", "Invalid isoformat"),
    (FieldSpec("mx_Custom_1", "C", "Dropdown", options=("Web",)), "Fax", "not one of"),
    (FieldSpec("mx_Custom_1", "N", "String", max_length=3), "abcd", "longer than 3"),
    (FieldSpec("mx_Custom_1", "N", "String", mandatory=True), "  ", "mandatory"),
])
def test_invalid_values_say_why(spec: FieldSpec, value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        spec.check(value, UTC)


def test_decimal_comma_is_accepted_when_asked() -> None:
    spec = FieldSpec("mx_Custom_1", "Amount", "Number")
    assert spec.check("12,5", UTC, decimal_comma=True) == "12.5"


def test_display_names_resolve_to_schema_names() -> None:
    resolved = resolve_fields([("Amount", "amt"), ("mx_Custom_1", "no"), ("channel", "ch")],
                              ORDER)
    assert resolved == (("mx_Custom_2", "amt"), ("mx_Custom_1", "no"), ("mx_Custom_3", "ch"))


@pytest.mark.parametrize(("key", "message"), [
    ("Purpose", "ambiguous"), ("Colour", "no field of that SchemaName or display name"),
    ("mx_Custom_40", "no field of that SchemaName"),
])
def test_unknown_or_ambiguous_names_are_errors(key: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        resolve_fields([(key, "col")], ORDER)


def test_preflight_reports_missing_mandatory_and_unmapped() -> None:
    found = preflight([("mx_Custom_2", "amt")], ORDER)
    assert not found.ok
    assert [s.schema_name for s in found.mandatory_unmapped] == ["mx_Custom_1"]
    assert "mx_Custom_3 (Channel)" in "\n".join(found.lines())
    assert preflight([("mx_Custom_1", "no")], ORDER).ok


def test_rows_are_checked_and_normalised_by_the_rules() -> None:
    mapping = parse_mapping({"activity": {"event": 301, "lead_id_column": "lead",
                                          "timezone": "Asia/Kolkata"},
                             "fields": {"Order No": "no", "Amount": "amt", "Channel": "ch"}})
    resolved = resolve_fields(mapping.fields, ORDER)
    mapper = RowMapper(mapping, rules={301: field_rules(resolved, ORDER, KOLKATA)})
    lead = "9e3779b9-7f4a-4c15-b39c-c0605cedc834"
    good = mapper.map_row(1, {"lead": lead, "no": "A-1", "amt": "5", "ch": "store"})
    assert isinstance(good, Activity)
    assert json.loads(good.body)["Fields"] == [
        {"SchemaName": "mx_Custom_1", "Value": "A-1"},
        {"SchemaName": "mx_Custom_2", "Value": "5"},
        {"SchemaName": "mx_Custom_3", "Value": "Store"}]
    bad = mapper.map_row(2, {"lead": lead, "no": "A-2", "amt": "12,5", "ch": "web"})
    assert isinstance(bad, InvalidRow) and bad.column == "amt"
    assert bad.reason == ("mx_Custom_2 (Amount): '12,5' is not a number "
                          "(a decimal comma? see --decimal-comma)")
    other = RowMapper(mapping, rules={}).map_row(3, {"lead": lead, "no": "x", "amt": "1",
                                                     "ch": "Web"})
    assert isinstance(other, InvalidRow)
    assert "activity type 301 does not exist" in other.reason


@pytest.mark.parametrize(("value", "decimal_comma", "hint"), [
    ("1.234,00", False, "(thousands separators and a decimal comma? write 1234.00, or "
                        "1234,00 with --decimal-comma)"),
    ("-1.234.567,5", False, "(thousands separators and a decimal comma? write -1234567.5, "
                            "or -1234567,5 with --decimal-comma)"),
    ("1.234,00", True, "(thousands separators? write 1234,00)"),
    ("1.234.567", False, "(thousands separators? write 1234567)"),
    ("1.234.567", True, "(thousands separators? write 1234567)"),
    ("1,234.00", False, "(thousands separators? write 1234.00)"),
    ("1,234.00", True, "(thousands separators? write 1234.00)"),
    ("1,234,567", False, "(thousands separators? write 1234567)"),
    ("12,5", False, "(a decimal comma? see --decimal-comma)"),
])
def test_a_number_with_thousands_separators_says_what_to_write(
        value: str, decimal_comma: bool, hint: str) -> None:
    spec = FieldSpec("mx_Custom_1", "Amount", "Number")
    with pytest.raises(ValueError) as caught:
        spec.check(value, UTC, decimal_comma=decimal_comma)
    assert str(caught.value) == f"is not a number {hint}"


@pytest.mark.parametrize(("value", "decimal_comma", "meant"), [
    ("1.234,00", True, "1234"), ("1.234,00", False, "1234"),
    ("-1.234.567,5", False, "-1234567.5"), ("1.234.567", True, "1234567"),
    ("1,234.00", False, "1234"), ("1,234.00", True, "1234"), ("1,234,567", False, "1234567")])
def test_what_a_thousands_hint_says_to_write_is_accepted(value: str, decimal_comma: bool,
                                                          meant: str) -> None:
    spec = FieldSpec("mx_Custom_1", "Amount", "Number")
    with pytest.raises(ValueError) as caught:
        spec.check(value, UTC, decimal_comma=decimal_comma)
    hint = str(caught.value)
    # "write X" in the run's own mode; "or Y with --decimal-comma" with the option on.
    suggested = [(written, decimal_comma)
                 for written in re.findall(r"write ([-+\d.,]*\d)", hint)]
    suggested += [(written, True)
                  for written in re.findall(r"or ([-+\d.,]*\d) with --decimal-comma", hint)]
    assert suggested
    for written, comma in suggested:
        assert Decimal(spec.check(written, UTC, decimal_comma=comma)) == Decimal(meant)


@pytest.mark.parametrize("value", ["abc", "1.2.3", "12,,5", "1,23.4"])
def test_a_number_of_no_known_form_gets_no_hint(value: str) -> None:
    spec = FieldSpec("mx_Custom_1", "Amount", "Number")
    with pytest.raises(ValueError) as caught:
        spec.check(value, UTC)
    assert str(caught.value) == "is not a number"
