"""The mapping file: what parse_mapping accepts, what it refuses, and how it names the fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.mapping import Mapping, check_columns, parse_mapping
from bulkpost.errors import MappingError, UsageError
from bulkpost.reading.mapping_file import load_mapping

BASE = {"event": 201, "lead_id_column": "lead_id"}


def data(fields: dict[str, Any] | None = None, /, **activity: Any) -> dict[str, Any]:
    """A parsed mapping: BASE's [activity] with keys overridden (None removes one)."""
    merged = {**BASE, **activity}
    table: dict[str, Any] = {"activity": {k: v for k, v in merged.items() if v is not None}}
    if fields is not None:
        table["fields"] = fields
    return table


def refused(document: dict[str, Any], source: str = "map.toml") -> str:
    """The message of the MappingError that parse_mapping raises for ``document``."""
    with pytest.raises(MappingError) as caught:
        parse_mapping(document, source)
    message = str(caught.value)
    assert message.startswith(f"{source}: ")
    return message


def test_minimal_mapping_takes_the_defaults() -> None:
    mapping = parse_mapping(data())
    assert mapping.source == "<mapping>"
    assert mapping.event == 201
    assert mapping.event_column is None
    assert mapping.lead_id_column == "lead_id"
    assert mapping.lead_email_column is None
    assert mapping.note_column is None
    assert mapping.datetime_column is None
    assert mapping.datetime_format is None
    assert mapping.key_column is None
    assert mapping.timezone.key == "UTC"
    assert mapping.fields == ()


def test_full_mapping_keeps_every_key_and_the_field_order() -> None:
    mapping = parse_mapping(
        data(
            {"mx_Custom_7": "amount", "mx_Custom_2": "order_no", "mx_Custom_50": "channel"},
            event=None,
            event_column="code",
            lead_id_column=None,
            lead_email_column="email",
            note_column="note",
            datetime_column="occurred",
            datetime_format="%d/%m/%Y %H:%M",
            timezone="Asia/Kolkata",
            key_column="source_id",
        ),
        "jobs/map.toml",
    )
    assert mapping.source == "jobs/map.toml"
    assert mapping.event is None
    assert mapping.event_column == "code"
    assert mapping.lead_email_column == "email"
    assert mapping.lead_column == "email"
    assert mapping.note_column == "note"
    assert mapping.datetime_column == "occurred"
    assert mapping.datetime_format == "%d/%m/%Y %H:%M"
    assert mapping.timezone.key == "Asia/Kolkata"
    assert mapping.key_column == "source_id"
    assert mapping.fields == (
        ("mx_Custom_7", "amount"), ("mx_Custom_2", "order_no"), ("mx_Custom_50", "channel"))


@pytest.mark.parametrize(
    ("lead_keys", "expected"),
    [
        ({"lead_id_column": "lead_id"}, "lead_id"),
        ({"lead_id_column": None, "lead_email_column": "email"}, "email"),
    ],
)
def test_lead_column_is_whichever_lead_key_is_given(
    lead_keys: dict[str, str | None], expected: str
) -> None:
    assert parse_mapping(data(**lead_keys)).lead_column == expected


@pytest.mark.parametrize(
    "schema_name",
    ["mx_Custom_1", "mx_Custom_9", "mx_Custom_10", "mx_Custom_19", "mx_Custom_40",
     "mx_Custom_49", "mx_Custom_50"],
)
def test_custom_fields_1_to_50_are_accepted(schema_name: str) -> None:
    assert parse_mapping(data({schema_name: "col"})).fields == ((schema_name, "col"),)


@pytest.mark.parametrize(
    "schema_name",
    ["mx_Custom_0", "mx_Custom_51", "mx_Custom_100", "mx_Custom_01", "mx_Custom_", "mx_custom_1",
     "MX_CUSTOM_1", "mx_Custom_1a", "mx_Custom_1 ", "mx_Custom_-1"],
)
def test_schema_names_outside_mx_custom_1_to_50_are_refused(schema_name: str) -> None:
    message = refused(data({schema_name: "col"}))
    assert f"fields.{schema_name}:" in message
    assert "mx_Custom_1 … mx_Custom_50" in message


@pytest.mark.parametrize("name", ["Purpose", "Custom_1", "ActivityNote", "Order Amount"])
def test_other_keys_are_display_names_resolved_at_preflight(name: str) -> None:
    mapping = parse_mapping(data({name: "col", "mx_Custom_2": "other"}))
    assert mapping.display_names == [name]


@pytest.mark.parametrize("column", [5, True, ["a"], {"column": "a"}])
def test_a_field_must_name_a_column(column: object) -> None:
    message = refused(data({"mx_Custom_3": column}))
    assert "fields.mx_Custom_3 must name an input column" in message


@pytest.mark.parametrize("fields", ["mx_Custom_1", 3, ["mx_Custom_1"]])
def test_fields_must_be_a_table(fields: object) -> None:
    assert "[fields] must be a table" in refused({"activity": BASE, "fields": fields})


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/New_York", "Etc/GMT+5"])
def test_iana_time_zones_are_accepted(zone: str) -> None:
    assert parse_mapping(data(timezone=zone)).timezone.key == zone


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "Asia/Kolkatta", "", "../etc", "/etc/passwd", "America/"]
)
def test_unknown_time_zone_is_refused(zone: str) -> None:
    message = refused(data(timezone=zone))
    assert f"activity.timezone: unknown time zone {zone!r}" in message


def test_time_zone_naming_a_region_directory_is_refused() -> None:
    assert "unknown time zone 'America'" in refused(data(timezone="America"))


@pytest.mark.parametrize(
    "activity",
    [
        {"event": 201, "event_column": "code"},  # both
        {"event": None},  # neither
    ],
)
def test_exactly_one_of_event_and_event_column(activity: dict[str, Any]) -> None:
    message = refused(data(**activity))
    assert "exactly one of activity.event or activity.event_column" in message


def test_a_lead_column_is_required() -> None:
    message = refused(data(lead_id_column=None))
    assert "give activity.lead_id_column or activity.lead_email_column" in message


def test_both_lead_columns_may_be_given() -> None:
    mapping = parse_mapping(data(lead_email_column="email"))
    assert mapping.lead_id_column and mapping.lead_email_column == "email"
    assert "email" in mapping.used_columns()


@pytest.mark.parametrize(
    "key", ["evnt", "Event", "lead_column", "time_zone", "fields", "mx_Custom_1"]
)
def test_unknown_activity_key_is_refused_and_the_known_keys_listed(key: str) -> None:
    message = refused(data(**{key: "x"}))
    assert f"unknown key activity.{key};" in message
    assert "known keys: event, event_column, lead_id_column" in message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({**data(), "field": {}}, "unknown table(s) ['field']"),
        ({**data(), "options": {}, "Fields": {}}, "unknown table(s) ['Fields', 'options']"),
        ({}, "missing [activity] table"),
        ({"fields": {"mx_Custom_1": "a"}}, "missing [activity] table"),
        ({"activity": "event = 201"}, "missing [activity] table"),
    ],
)
def test_tables_other_than_activity_and_fields_are_refused(
    document: dict[str, Any], expected: str
) -> None:
    assert expected in refused(document)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("event", "201", "activity.event must be an integer"),
        ("event", True, "activity.event must be an integer"),
        ("event", False, "activity.event must be an integer"),
        ("event", 201.0, "activity.event must be an integer"),
        ("event", [201], "activity.event must be an integer"),
        ("lead_id_column", 3, "activity.lead_id_column must be a string"),
        ("lead_id_column", True, "activity.lead_id_column must be a string"),
        ("timezone", 5.5, "activity.timezone must be a string"),
        ("datetime_format", ["%d/%m/%Y"], "activity.datetime_format must be a string"),
        ("key_column", False, "activity.key_column must be a string"),
        ("note_column", {"name": "note"}, "activity.note_column must be a string"),
    ],
)
def test_values_of_the_wrong_type_are_refused(key: str, value: object, expected: str) -> None:
    assert expected in refused(data(**{key: value}))


def test_event_column_of_the_wrong_type_is_refused() -> None:
    assert "activity.event_column must be a string" in refused(data(event=None, event_column=7))


# -- the date-time: one column, or a date column and a time-of-day column ----------------

SPLIT = {"date_column": "Call Date", "time_column": "Call Time"}


def test_a_date_column_and_a_time_column_make_the_date_time() -> None:
    mapping = parse_mapping(data(**SPLIT, date_format="%d/%m/%Y", time_format="%I:%M %p",
                                 timezone="Asia/Kolkata", empty_time="midnight",
                                 empty_datetime="now"))
    assert (mapping.date_column, mapping.date_format, mapping.time_column,
            mapping.time_format) == ("Call Date", "%d/%m/%Y", "Call Time", "%I:%M %p")
    assert (mapping.empty_time, mapping.empty_datetime) == ("midnight", "now")
    assert mapping.datetime_column is None
    assert mapping.used_columns() == ["lead_id", "Call Date", "Call Time"]


@pytest.mark.parametrize(("activity", "expected"), [
    ({"datetime_column": "at", **SPLIT}, "activity.datetime_column and activity.date_column "
                                         "exclude each other"),
    ({"datetime_format": "%d/%m/%Y %H:%M", "time_column": "t", "date_column": "d"},
     "activity.datetime_format and activity.date_column exclude each other"),
    ({"date_column": "d"}, "activity.date_column needs activity.time_column"),
    ({"time_column": "t", "time_format": "%H:%M"}, "activity.time_column needs "
                                                   "activity.date_column"),
    ({"date_format": "%d/%m/%Y"}, "activity.date_format needs activity.date_column and "
                                  "activity.time_column"),
    ({"empty_time": "midnight"}, "activity.empty_time needs activity.date_column and "
                                 "activity.time_column"),
    ({"empty_datetime": "now"}, "activity.empty_datetime needs activity.datetime_column or "
                                "activity.date_column"),
    ({**SPLIT, "empty_time": "00:00"}, "activity.empty_time can only be 'midnight' (got "
                                       "'00:00')"),
    ({"datetime_column": "at", "empty_datetime": "arrival"},
     "activity.empty_datetime can only be 'now' (got 'arrival')"),
])
def test_date_time_keys_that_do_not_go_together_are_refused(activity: dict[str, str],
                                                           expected: str) -> None:
    assert expected in refused(data(**activity))


@pytest.mark.parametrize("fmt", ["%H:%M", "%I:%M %p", "%d", "%d/%m", "%m/%Y", "%Y", "%H:%M:%S",
                                 "", "%%Y-%%m-%%d", "%Y %W"])
def test_a_datetime_format_without_a_whole_date_is_refused(fmt: str) -> None:
    # "12:30" read with "%H:%M" would be posted as 1900-01-01 12:30.
    message = refused(data(datetime_column="at", datetime_format=fmt))
    assert f"activity.datetime_format {fmt!r} has no whole date" in message


@pytest.mark.parametrize("fmt", ["%d/%m/%Y %H:%M", "%Y%m%d", "%d.%m.%y", "%Y-%j", "%b %d, %Y",
                                 "%G-W%V-%u %H:%M", "%Y %W %a", "%c", "%x %X",
                                 "%Y-%m-%dT%H:%M:%S%z"])
def test_a_datetime_format_with_a_whole_date_is_accepted(fmt: str) -> None:
    assert parse_mapping(data(datetime_column="at", datetime_format=fmt)).datetime_format == fmt


@pytest.mark.parametrize("fmt", ["%d/%m/%Y %H:%M", "%d/%m/%Y %I%p", "%H:%M", "%d/%m", "%c",
                                 "%Y-%m-%d%z", "%x %X"])
def test_a_date_format_with_a_time_or_without_a_whole_date_is_refused(fmt: str) -> None:
    message = refused(data(**SPLIT, date_format=fmt))
    assert f"activity.date_format {fmt!r} must read a whole date" in message
    assert "and no time of day" in message


@pytest.mark.parametrize("fmt", ["%d/%m/%Y %H:%M", "%Y %H:%M", "%M:%S", "%d", "", "%x",
                                 "%c", "%H:%M %b"])
def test_a_time_format_with_a_date_or_without_an_hour_is_refused(fmt: str) -> None:
    message = refused(data(**SPLIT, time_format=fmt))
    assert f"activity.time_format {fmt!r} must read a time of day" in message


@pytest.mark.parametrize(("fmt", "expected"), [
    ("%I:%M", "reads a 12-hour %I without %p: every time would be read as AM"),
    ("%H:%M %p", "has %p without %I: strptime ignores AM/PM with a 24-hour %H"),
])
def test_a_time_format_that_would_misread_the_half_of_the_day_is_refused(
        fmt: str, expected: str) -> None:
    assert expected in refused(data(**SPLIT, time_format=fmt))


@pytest.mark.parametrize(("date_format", "time_format"), [
    ("%d/%m/%Y", "%I:%M %p"), ("%m/%d/%y", "%H:%M:%S"), ("%Y%m%d", "%H%M"),
    ("%d %B %Y", "%I:%M:%S%p"), ("%x", "%X"), ("%Y-%m-%d", "%H:%M %z"),
])
def test_date_and_time_formats_that_read_their_part_are_accepted(date_format: str,
                                                                 time_format: str) -> None:
    mapping = parse_mapping(data(**SPLIT, date_format=date_format, time_format=time_format))
    assert (mapping.date_format, mapping.time_format) == (date_format, time_format)


def test_a_date_time_column_missing_from_the_input_is_named() -> None:
    mapping = parse_mapping(data(**SPLIT))
    with pytest.raises(MappingError, match="column\\(s\\) 'Call Time' not found"):
        check_columns(mapping, ["lead_id", "Call Date"], "calls.csv")


def test_mapping_errors_are_usage_errors_with_exit_code_2() -> None:
    with pytest.raises(UsageError) as caught:
        parse_mapping({})
    assert isinstance(caught.value, MappingError)
    assert caught.value.exit_code == 2


MAPPING_TOML = """\
# a comment
[activity]
event = 201
lead_id_column = "lead_id"
datetime_column = "occurred"
datetime_format = "%d/%m/%Y %H:%M"
timezone = "Asia/Kolkata"
key_column = "source_id"

[fields]
mx_Custom_1 = "order_no"
mx_Custom_2 = "amount"
"""


def test_load_mapping_reads_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_text(MAPPING_TOML, encoding="utf-8")
    mapping = load_mapping(path)
    assert mapping.source == str(path)
    assert mapping.event == 201
    assert mapping.timezone.key == "Asia/Kolkata"
    assert mapping.datetime_format == "%d/%m/%Y %H:%M"
    assert mapping.fields == (("mx_Custom_1", "order_no"), ("mx_Custom_2", "amount"))
    assert load_mapping(str(path)) == mapping


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[activity]\nevent = \n", "cannot read the mapping"),
        ("[activity]\nevent = 1\nevent = 2\n", "cannot read the mapping"),
        ("[activity\n", "cannot read the mapping"),
        ('[activity]\nevent = "201"\nlead_id_column = "l"\n', "activity.event must be an integer"),
        ('[activity]\nevent = 201\nlead_id_column = "l"\n[fields]\nmx_Custom_51 = "a"\n',
         "fields.mx_Custom_51"),
        ("", "missing [activity] table"),
    ],
)
def test_load_mapping_names_the_file_in_every_error(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_load_mapping_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(MappingError, match="mapping file not found") as caught:
        load_mapping(path)
    assert str(caught.value) == f"{path}: mapping file not found"


def test_load_mapping_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read the mapping"):
        load_mapping(tmp_path)


def test_load_mapping_of_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[activity]\nevent = 201\nlead_id_column = "café"\n'.encode("latin-1"))
    with pytest.raises(MappingError, match="cannot read the mapping"):
        load_mapping(path)


def full(**activity: Any) -> Mapping:
    return parse_mapping(data({"mx_Custom_1": "amount", "mx_Custom_2": "channel"}, **activity))


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (parse_mapping(data()), ["lead_id"]),
        (full(), ["lead_id", "amount", "channel"]),
        (
            full(event=None, event_column="code", note_column="note", datetime_column="when",
                 key_column="id"),
            ["lead_id", "code", "note", "when", "id", "amount", "channel"],
        ),
        (
            full(lead_id_column=None, lead_email_column="email", key_column="id"),
            ["email", "id", "amount", "channel"],
        ),
        # A column read twice is listed once, where it is first read.
        (full(key_column="amount"), ["lead_id", "amount", "channel"]),
        (full(note_column="lead_id", datetime_column="lead_id"), ["lead_id", "amount", "channel"]),
        (
            parse_mapping(data({"mx_Custom_9": "b", "mx_Custom_1": "a", "mx_Custom_5": "b"})),
            ["lead_id", "b", "a"],
        ),
    ],
)
def test_used_columns_lists_each_column_once_in_a_stable_order(
    mapping: Mapping, expected: list[str]
) -> None:
    assert mapping.used_columns() == expected


def test_check_columns_accepts_an_input_with_every_column_and_more() -> None:
    mapping = full(note_column="note", key_column="id")
    check_columns(mapping, ["extra", "id", "channel", "amount", "note", "lead_id"], "in.csv")


@pytest.mark.parametrize(
    ("available", "missing"),
    [
        (["lead_id", "amount"], "'channel'"),
        (["amount", "channel"], "'lead_id'"),
        (["Lead_Id", "amount", "channel"], "'lead_id'"),
        ([], "'lead_id', 'amount', 'channel'"),
        (["channel"], "'lead_id', 'amount'"),
    ],
)
def test_check_columns_names_the_missing_and_the_available_columns(
    available: list[str], missing: str
) -> None:
    with pytest.raises(MappingError) as caught:
        check_columns(full(), available, "orders.csv")
    assert str(caught.value) == (
        f"<mapping>: column(s) {missing} not found in orders.csv; "
        f"available columns: {', '.join(map(repr, available))}"
    )


@pytest.mark.parametrize(
    ("available", "missing", "hint"),
    [
        (["lead_id ", "amount", "channel"], "'lead_id'",
         "the input has 'lead_id ' (with a trailing space)"),
        (["lead_id", " amount", "channel"], "'amount'",
         "the input has ' amount' (with a leading space)"),
        (["lead_id", "amount", " channel  "], "'channel'",
         "the input has ' channel  ' (with a leading space and 2 trailing spaces)"),
        (["lead_id ", " amount", "channel"], "'lead_id', 'amount'",
         "the input has 'lead_id ' (with a trailing space); "
         "the input has ' amount' (with a leading space)"),
    ],
)
def test_check_columns_points_out_a_header_cell_with_spaces_around_it(
    available: list[str], missing: str, hint: str
) -> None:
    with pytest.raises(MappingError) as caught:
        check_columns(full(), available, "orders.csv")
    assert str(caught.value) == (
        f"<mapping>: column(s) {missing} not found in orders.csv; {hint}; "
        f"available columns: {', '.join(map(repr, available))}"
    )


def test_check_columns_points_out_spaces_in_the_mapping_s_column_name() -> None:
    mapping = parse_mapping(data({"mx_Custom_1": "Notes "}))
    with pytest.raises(MappingError) as caught:
        check_columns(mapping, ["lead_id", "Notes"], "orders.csv")
    assert str(caught.value) == (
        "<mapping>: column(s) 'Notes ' not found in orders.csv; the input has 'Notes', "
        "the mapping 'Notes ' (with a trailing space); available columns: 'lead_id', 'Notes'"
    )
