"""From a row to an activity: lead, event, date-time and fields, or the reason it is invalid."""

from __future__ import annotations

import json
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bulkpost.core.activity import Activity, InvalidRow, RowMapper, content_hash, to_api_datetime
from bulkpost.core.mapping import Mapping, parse_mapping

LEAD = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
# The C library's strftime decides whether %Y pads years below 1000 (glibc does not).
UNPADDED_YEARS = datetime(999, 1, 1).strftime("%Y") != "0999"


def mapping(fields: dict[str, str] | None = None, /, **activity: Any) -> Mapping:
    """Event 201, lead ids in "lead", with keys overridden (None removes one)."""
    merged = {"event": 201, "lead_id_column": "lead", **activity}
    return parse_mapping({"activity": {k: v for k, v in merged.items() if v is not None},
                          "fields": fields or {}})


def mapped(m: Mapping, utc_columns: frozenset[str] = frozenset(), row: int = 1,
           **cells: str) -> Activity | InvalidRow:
    """Map one row; the lead defaults to a valid GUID."""
    return RowMapper(m, utc_columns).map_row(row, {"lead": LEAD, **cells})


def body(result: Activity | InvalidRow) -> dict[str, Any]:
    assert isinstance(result, Activity), result
    document: dict[str, Any] = json.loads(result.body)
    return document


def invalid(result: Activity | InvalidRow) -> InvalidRow:
    assert isinstance(result, InvalidRow), result
    return result


# The lead ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "lead"),
    [
        (LEAD, LEAD),
        (LEAD.upper(), LEAD.upper()),
        ("3F2504E0-4f89-11D3-9a0c-0305e82c3301", "3F2504E0-4f89-11D3-9a0c-0305e82c3301"),
        (f"  {LEAD}\t", LEAD),
        (f"{LEAD}\n", LEAD),
    ],
)
def test_a_guid_lead_is_sent_as_related_prospect_id(cell: str, lead: str) -> None:
    result = mapped(mapping(), lead=cell)
    assert body(result) == {"RelatedProspectId": lead, "ActivityEvent": 201}
    assert isinstance(result, Activity)
    assert result.lead == lead


@pytest.mark.parametrize(
    "cell",
    [
        "",
        "   ",
        "not-a-guid",
        LEAD.replace("-", ""),
        "{" + LEAD + "}",
        LEAD + "0",
        LEAD[1:],
        LEAD.replace("3f", "3g", 1),
        LEAD.replace("-", "_"),
        f"{LEAD} {LEAD}",
        "someone@example.com",
    ],
)
def test_a_lead_that_is_not_a_guid_makes_the_row_invalid(cell: str) -> None:
    result = invalid(mapped(mapping(), lead=cell))
    assert result.column == "lead"
    assert result.reason == (f"lead id {cell.strip()!r} is not a GUID" if cell.strip()
                             else "lead id is empty")


@pytest.mark.parametrize(
    ("cell", "email"),
    [
        ("a@b.co", "a@b.co"),
        (" first.last+tag@example.co.in ", "first.last+tag@example.co.in"),
        ("UPPER@EXAMPLE.COM", "UPPER@EXAMPLE.COM"),
    ],
)
def test_an_email_lead_is_sent_as_email_address(cell: str, email: str) -> None:
    m = mapping(lead_id_column=None, lead_email_column="email")
    result = RowMapper(m).map_row(1, {"email": cell})
    assert body(result) == {"EmailAddress": email, "ActivityEvent": 201}
    assert isinstance(result, Activity)
    assert result.lead == email


@pytest.mark.parametrize(
    "cell", ["", "plainaddress", "a@b", "@b.co", "a@.co", "a b@c.de", "a@@b.co", "a@b.co d", LEAD]
)
def test_a_lead_that_is_not_an_email_makes_the_row_invalid(cell: str) -> None:
    m = mapping(lead_id_column=None, lead_email_column="email")
    result = invalid(RowMapper(m).map_row(1, {"email": cell}))
    assert result.column == "email"
    assert result.reason == (f"lead e-mail {cell.strip()!r} is not an e-mail address"
                             if cell.strip() else "lead e-mail is empty")


# The event --------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "event"), [("201", 201), (" 7 ", 7), ("007", 7), ("0", 0)])
def test_an_event_column_is_sent_as_an_integer(cell: str, event: int) -> None:
    result = mapped(mapping(event=None, event_column="code"), code=cell)
    assert body(result)["ActivityEvent"] == event


@pytest.mark.parametrize("cell", ["", " ", "2.0", "-1", "+1", "1e3", "abc", "20 1", "٣", "²", "１"])
def test_an_event_that_is_not_an_integer_makes_the_row_invalid(cell: str) -> None:
    result = invalid(mapped(mapping(event=None, event_column="code"), code=cell))
    assert result.column == "code"
    assert result.reason == (f"event code {cell.strip()!r} is not an integer of at most "
                             "9 digits")


def test_an_event_code_of_thousands_of_digits_is_invalid_not_a_crash() -> None:
    result = invalid(mapped(mapping(event=None, event_column="code"), code="9" * 5000))
    assert result.column == "code" and "at most 9 digits" in result.reason


# The date-time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "cell", "sent"),
    [
        ("UTC", "2024-03-05T16:24:00", "2024-03-05 16:24:00"),
        ("UTC", "2024-03-05 16:24:00", "2024-03-05 16:24:00"),
        ("UTC", "2024-03-05", "2024-03-05 00:00:00"),
        ("UTC", "2024-03-05T16:24:07.999999", "2024-03-05 16:24:07"),
        ("UTC", "  2024-03-05T16:24:00 ", "2024-03-05 16:24:00"),
        ("Asia/Kolkata", "2024-03-05 16:24", "2024-03-05 10:54:00"),
        ("Asia/Kolkata", "2024-03-01T03:00:00", "2024-02-29 21:30:00"),
        ("America/New_York", "2024-07-01 12:00:00", "2024-07-01 16:00:00"),  # EDT, -4
        ("America/New_York", "2024-01-15 12:00:00", "2024-01-15 17:00:00"),  # EST, -5
        ("America/New_York", "2024-12-31 22:30:00", "2025-01-01 03:30:00"),
        # Aware values are converted whatever the mapping's zone.
        ("America/New_York", "2024-03-05T16:24:00+05:30", "2024-03-05 10:54:00"),
        ("Asia/Kolkata", "2024-03-05T10:54:00Z", "2024-03-05 10:54:00"),
        ("UTC", "2024-07-01T12:00:00-04:00", "2024-07-01 16:00:00"),
    ],
)
def test_iso_date_times_are_read_in_the_mapping_zone_and_sent_in_utc(
    zone: str, cell: str, sent: str
) -> None:
    m = mapping(datetime_column="occurred", timezone=zone)
    assert body(mapped(m, occurred=cell))["ActivityDateTime"] == sent


@pytest.mark.parametrize(
    ("fmt", "zone", "cell", "sent"),
    [
        ("%d/%m/%Y %H:%M", "Asia/Kolkata", "05/03/2024 16:24", "2024-03-05 10:54:00"),
        ("%m/%d/%Y %I:%M %p", "America/New_York", "07/01/2024 12:00 PM", "2024-07-01 16:00:00"),
        ("%Y%m%d", "UTC", "20240305", "2024-03-05 00:00:00"),
        ("%d/%m/%Y %H:%M %z", "America/New_York", "05/03/2024 16:24 +0530",
         "2024-03-05 10:54:00"),
    ],
)
def test_a_custom_datetime_format_is_honoured(fmt: str, zone: str, cell: str, sent: str) -> None:
    m = mapping(datetime_column="occurred", datetime_format=fmt, timezone=zone)
    assert body(mapped(m, occurred=cell))["ActivityDateTime"] == sent


@pytest.mark.parametrize("cell", ["", "   ", "\t"])
def test_an_empty_date_time_cell_makes_the_row_invalid(cell: str) -> None:
    # Sent without ActivityDateTime, the row would be stamped with the time of its arrival.
    result = invalid(mapped(mapping(datetime_column="occurred"), occurred=cell))
    assert result.column == "occurred"
    assert result.reason.startswith("date-time is empty in column 'occurred': the activity "
                                    "would be stamped with the time of its arrival")
    assert 'empty_datetime = "now"' in result.reason


@pytest.mark.parametrize("cell", ["", "   ", "\t"])
def test_an_empty_date_time_cell_posts_at_arrival_when_the_mapping_says_now(cell: str) -> None:
    m = mapping(datetime_column="occurred", empty_datetime="now")
    assert body(mapped(m, occurred=cell)) == {"RelatedProspectId": LEAD, "ActivityEvent": 201}
    assert body(mapped(m, occurred="2024-03-05 10:00"))["ActivityDateTime"] == \
        "2024-03-05 10:00:00"


# A date column and a time-of-day column ---------------------------------------------------

def split(**activity: Any) -> Mapping:
    """A mapping whose date-time is built from "day" and "clock"."""
    return mapping(**{"date_column": "day", "time_column": "clock", **activity})


@pytest.mark.parametrize(
    ("date_format", "time_format", "zone", "day", "clock", "sent"),
    [
        ("%d/%m/%Y", "%I:%M %p", "Asia/Kolkata", "13/03/2024", "2:05 PM", "2024-03-13 08:35:00"),
        ("%d/%m/%Y", "%I:%M:%S %p", "Asia/Kolkata", "13/03/2024", "02:05:33 pm",
         "2024-03-13 08:35:33"),
        ("%d/%m/%Y", "%I:%M %p", "Asia/Kolkata", "01/01/2024", "12:10 AM", "2023-12-31 18:40:00"),
        ("%m/%d/%Y", "%H:%M", "America/New_York", "07/01/2024", "14:05", "2024-07-01 18:05:00"),
        (None, None, "UTC", "2024-03-05", "14:05:33", "2024-03-05 14:05:33"),
        (None, None, "Asia/Kolkata", "2024-03-05", "09:00", "2024-03-05 03:30:00"),
        # An offset written with the time wins over the mapping's zone.
        ("%d.%m.%Y", "%H:%M %z", "America/New_York", "05.03.2024", "16:24 +0530",
         "2024-03-05 10:54:00"),
    ],
)
def test_a_date_and_a_time_of_day_make_one_date_time_sent_in_utc(
        date_format: str | None, time_format: str | None, zone: str, day: str, clock: str,
        sent: str) -> None:
    m = split(date_format=date_format, time_format=time_format, timezone=zone)
    assert body(mapped(m, day=f" {day} ", clock=clock))["ActivityDateTime"] == sent


def test_an_empty_time_of_day_makes_the_row_invalid_unless_midnight_is_chosen() -> None:
    m = split(date_format="%d/%m/%Y", time_format="%H:%M", timezone="Asia/Kolkata")
    refused = invalid(mapped(m, day="13/03/2024", clock=" "))
    assert refused.column == "clock"
    assert refused.reason == ("time of day is empty in column 'clock': the activity would land "
                              'at midnight; set empty_time = "midnight" in the mapping to post '
                              "it so")
    midnight = split(date_format="%d/%m/%Y", time_format="%H:%M", timezone="Asia/Kolkata",
                     empty_time="midnight")
    assert body(mapped(midnight, day="13/03/2024", clock=""))["ActivityDateTime"] == \
        "2024-03-12 18:30:00"


def test_an_empty_date_makes_the_row_invalid_unless_now_is_chosen() -> None:
    m = split(date_format="%d/%m/%Y", time_format="%H:%M")
    both = invalid(mapped(m, day="", clock=""))
    assert both.column == "day" and both.reason.startswith(
        "date is empty in column 'day': the activity would be stamped with the time of its "
        "arrival")
    now = split(date_format="%d/%m/%Y", time_format="%H:%M", empty_datetime="now")
    assert "ActivityDateTime" not in body(mapped(now, day="", clock=""))
    # A time with no date is refused whatever the mapping says: it cannot be placed.
    for chosen in (m, now):
        lone = invalid(mapped(chosen, day="", clock="10:00"))
        assert lone.column == "day" and "its time of day is '10:00'" in lone.reason


@pytest.mark.parametrize(
    ("day", "clock", "column", "reason"),
    [
        ("32/03/2024", "10:00", "day", "date '32/03/2024' does not parse as %d/%m/%Y"),
        ("2024-03-13", "10:00", "day", "date '2024-03-13' does not parse as %d/%m/%Y"),
        ("13/03/2024 10:00", "10:00", "day",
         "date '13/03/2024 10:00' does not parse as %d/%m/%Y"),
        ("13/03/2024", "2:05 PM", "clock", "time of day '2:05 PM' does not parse as %H:%M"),
        ("13/03/2024", "25:00", "clock", "time of day '25:00' does not parse as %H:%M"),
    ],
)
def test_an_unparseable_date_or_time_names_its_column(day: str, clock: str, column: str,
                                                       reason: str) -> None:
    m = split(date_format="%d/%m/%Y", time_format="%H:%M")
    refused = invalid(mapped(m, day=day, clock=clock))
    assert (refused.column, refused.reason) == (column, reason)


def test_typed_date_and_time_columns_are_read_as_iso_whatever_the_formats() -> None:
    m = split(date_format="%d/%m/%Y", time_format="%I:%M %p", timezone="Asia/Kolkata")
    typed = RowMapper(m, typed_columns=frozenset({"day", "clock"}))
    result = typed.map_row(1, {"lead": LEAD, "day": "2024-03-13", "clock": "14:05:33"})
    assert body(result)["ActivityDateTime"] == "2024-03-13 08:35:33"


def test_a_typed_timestamp_column_of_midnights_is_a_date_column() -> None:
    # pandas has no date-only type: a DataFrame's dates arrive as midnight timestamps.
    m = split(time_format="%H:%M", timezone="Asia/Kolkata")
    typed = RowMapper(m, typed_columns=frozenset({"day"}))
    result = typed.map_row(1, {"lead": LEAD, "day": "2024-03-13 00:00:00", "clock": "14:05"})
    assert body(result)["ActivityDateTime"] == "2024-03-13 08:35:00"
    timed = invalid(typed.map_row(2, {"lead": LEAD, "day": "2024-03-13 09:30:00",
                                      "clock": "14:05"}))
    assert timed.column == "day" and "holds a time of day" in timed.reason
    zoned = RowMapper(m, utc_columns=frozenset({"day"}))
    assert "datetime_column" in invalid(zoned.map_row(
        3, {"lead": LEAD, "day": "2024-03-13 00:00:00", "clock": "14:05"})).reason


@pytest.mark.parametrize(
    ("fmt", "cell", "expected"),
    [
        (None, "yesterday", "ISO 8601"),
        (None, "2024-13-01", "ISO 8601"),
        (None, "2024-02-30 10:00", "ISO 8601"),
        (None, "05/03/2024 16:24", "ISO 8601"),
        ("%d/%m/%Y %H:%M", "2024-03-05 16:24", "%d/%m/%Y %H:%M"),
        ("%d/%m/%Y %H:%M", "05/03/2024", "%d/%m/%Y %H:%M"),
        ("%d/%m/%Y %H:%M", "31/02/2024 10:00", "%d/%m/%Y %H:%M"),
    ],
)
def test_an_unparseable_date_time_makes_the_row_invalid(
    fmt: str | None, cell: str, expected: str
) -> None:
    m = mapping(datetime_column="occurred", datetime_format=fmt, timezone="Asia/Kolkata")
    result = invalid(mapped(m, occurred=f" {cell} "))
    assert result.column == "occurred"
    assert result.reason == f"date-time {cell!r} does not parse as {expected}"


@pytest.mark.parametrize(
    ("zone", "cell"),
    [("Asia/Kolkata", "0001-01-01T00:00:00"), ("America/New_York", "9999-12-31T23:00:00")],
)
def test_a_date_time_outside_the_utc_range_makes_the_row_invalid(zone: str, cell: str) -> None:
    result = invalid(mapped(mapping(datetime_column="occurred", timezone=zone), occurred=cell))
    assert result.column == "occurred"


def test_utc_columns_are_sent_as_written_without_zone_or_format() -> None:
    m = mapping(datetime_column="occurred", datetime_format="%d/%m/%Y %H:%M",
                timezone="Asia/Kolkata")
    as_utc = mapped(m, frozenset({"occurred"}), occurred="2024-03-05 10:54:07")
    assert body(as_utc)["ActivityDateTime"] == "2024-03-05 10:54:07"
    # The same mapping without the column marked UTC reads the format in Kolkata time.
    local = mapped(m, occurred="05/03/2024 16:24")
    assert body(local)["ActivityDateTime"] == "2024-03-05 10:54:00"
    # A UTC mark on another column changes nothing for this one.
    other = mapped(m, frozenset({"note"}), occurred="05/03/2024 16:24")
    assert body(other)["ActivityDateTime"] == "2024-03-05 10:54:00"


# Notes and custom fields ------------------------------------------------------------------


VERBATIM = [
    "00123",
    "NA",
    "null",
    "None",
    "",
    " ",
    "12345678901234567890",
    "1.10",
    "1e5",
    "  padded  ",
    "tab\there",
    "line one\nline two\r\n",
    'say "hi"',
    "it's",
    "back\\slash",
    "日本語 ✓ émoji 🎉",
    "true",
    "<b>html</b>",
]


@pytest.mark.parametrize("value", VERBATIM)
def test_field_values_are_sent_exactly_as_written(value: str) -> None:
    result = mapped(mapping({"mx_Custom_1": "amount"}), amount=value)
    assert body(result)["Fields"] == [{"SchemaName": "mx_Custom_1", "Value": value}]


@pytest.mark.parametrize("value", VERBATIM)
def test_notes_are_sent_exactly_as_written(value: str) -> None:
    result = mapped(mapping(note_column="note"), note=value)
    assert body(result)["ActivityNote"] == value


def test_fields_keep_the_mapping_order_and_may_share_a_column() -> None:
    m = mapping({"mx_Custom_9": "b", "mx_Custom_1": "a", "mx_Custom_50": "b"})
    assert body(mapped(m, a="first", b="second"))["Fields"] == [
        {"SchemaName": "mx_Custom_9", "Value": "second"},
        {"SchemaName": "mx_Custom_1", "Value": "first"},
        {"SchemaName": "mx_Custom_50", "Value": "second"},
    ]


def test_the_body_is_compact_utf8_json_in_a_fixed_key_order() -> None:
    m = mapping({"mx_Custom_1": "order_no", "mx_Custom_2": "city"}, note_column="note",
                datetime_column="occurred", timezone="Asia/Kolkata", key_column="id")
    result = mapped(m, row=42, note="bought", occurred="2024-03-05 16:24", id="S-1",
                    order_no="00123", city="Zürich")
    assert isinstance(result, Activity)
    assert result.row == 42
    assert result.key == "S-1"
    assert result.body == (
        '{"RelatedProspectId":"3f2504e0-4f89-11d3-9a0c-0305e82c3301","ActivityEvent":201,'
        '"ActivityNote":"bought","ActivityDateTime":"2024-03-05 10:54:00",'
        '"Fields":[{"SchemaName":"mx_Custom_1","Value":"00123"},'
        '{"SchemaName":"mx_Custom_2","Value":"Zürich"}]}'
    ).encode()


@pytest.mark.parametrize(("key_column", "key"), [(None, ""), ("id", "S-1"), ("id", " S 1 ")])
def test_the_row_key_comes_from_the_key_column(key_column: str | None, key: str) -> None:
    m = mapping(key_column=key_column)
    good = mapped(m, id=key)
    bad = mapped(m, id=key, lead="nope")
    assert isinstance(good, Activity)
    assert isinstance(bad, InvalidRow)
    assert good.key == bad.key == key


# The content hash -------------------------------------------------------------------------


FULL = mapping({"mx_Custom_1": "amount"}, event=None, event_column="code", note_column="note",
               datetime_column="occurred", key_column="id")
ROW = {"lead": LEAD, "code": "201", "note": "n", "occurred": "2024-03-05 10:00:00",
       "id": "S-1", "amount": "10"}


def hash_of(**changes: str) -> str:
    result = RowMapper(FULL).map_row(1, {**ROW, **changes})
    assert isinstance(result, Activity)
    return result.content_hash


def test_the_content_hash_is_a_16_hex_digit_hash_of_the_body() -> None:
    result = RowMapper(FULL).map_row(1, ROW)
    assert isinstance(result, Activity)
    assert len(result.content_hash) == 16
    assert int(result.content_hash, 16) >= 0
    assert result.content_hash == content_hash(result.body)
    assert content_hash(b"") != content_hash(b" ")


@pytest.mark.parametrize(
    "changes",
    [
        {"lead": LEAD.replace("3f", "4f", 1)},
        {"code": "202"},
        {"note": "n "},
        {"occurred": "2024-03-05 10:00:01"},
        {"amount": "010"},
        {"amount": ""},
    ],
)
def test_the_content_hash_changes_when_what_is_sent_changes(changes: dict[str, str]) -> None:
    assert hash_of(**changes) != hash_of()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"id": "S-2"},  # the key is not sent
        {"lead": f" {LEAD} "},  # identifiers are stripped
        {"code": "0201"},
        {"occurred": "2024-03-05T10:00:00"},
        {"occurred": "2024-03-05T15:30:00+05:30"},
        {"unused": "anything"},
    ],
)
def test_the_content_hash_is_stable_when_what_is_sent_is_not(changes: dict[str, str]) -> None:
    assert hash_of(**changes) == hash_of()


def test_the_content_hash_does_not_depend_on_the_row_number() -> None:
    first, second = RowMapper(FULL).map_row(1, ROW), RowMapper(FULL).map_row(99, ROW)
    assert first.content_hash == second.content_hash


def test_an_invalid_rows_hash_follows_its_used_cells() -> None:
    mapper = RowMapper(FULL)
    bad = {**ROW, "lead": "nope"}
    first = invalid(mapper.map_row(1, bad))
    assert invalid(mapper.map_row(2, bad)).content_hash == first.content_hash
    assert invalid(mapper.map_row(1, {**bad, "unused": "x"})).content_hash == first.content_hash
    for column in ["lead", "code", "note", "occurred", "id", "amount"]:
        changed = invalid(mapper.map_row(1, {**bad, column: bad[column] + "x"}))
        assert changed.content_hash != first.content_hash, column


# Batches ----------------------------------------------------------------------------------


def test_map_batch_yields_one_result_per_row_in_order() -> None:
    m = mapping({"mx_Custom_1": "amount"}, key_column="id")
    columns = {
        "lead": [LEAD, "bad", f" {LEAD} "],
        "id": ["a", "b", "c"],
        "amount": ["1", "2", "3"],
    }
    results = list(RowMapper(m).map_batch([10, 11, 12], columns))
    assert [type(r) for r in results] == [Activity, InvalidRow, Activity]
    assert [r.row for r in results] == [10, 11, 12]
    assert [r.key for r in results] == ["a", "b", "c"]
    assert body(results[2])["Fields"] == [{"SchemaName": "mx_Custom_1", "Value": "3"}]
    assert results == [RowMapper(m).map_row(row, {name: values[index]
                                                  for name, values in columns.items()})
                       for index, row in enumerate([10, 11, 12])]


def test_map_batch_of_no_rows_yields_nothing() -> None:
    assert list(RowMapper(mapping()).map_batch([], {"lead": []})) == []


# to_api_datetime on its own ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "zone", "sent"),
    [
        ("1970-01-01 05:30:00", None, KOLKATA, "1970-01-01 00:00:00"),
        ("1969-12-31 23:59:59", None, UTC, "1969-12-31 23:59:59"),
        ("1969-12-31 19:00:00", None, NEW_YORK, "1970-01-01 00:00:00"),
        ("1900-01-01 00:00:00", None, NEW_YORK, "1900-01-01 05:00:00"),
        ("1600-06-15T12:00:00", None, UTC, "1600-06-15 12:00:00"),
        ("1000-01-01T00:00:00+00:00", None, KOLKATA, "1000-01-01 00:00:00"),
        ("2038-01-19 03:14:08", None, UTC, "2038-01-19 03:14:08"),
        ("2999-12-31T23:59:59", None, UTC, "2999-12-31 23:59:59"),
        ("9999-12-31 23:59:59", None, UTC, "9999-12-31 23:59:59"),
        ("9999-12-31 23:59:59", None, KOLKATA, "9999-12-31 18:29:59"),
        ("2024-02-29 00:15", None, KOLKATA, "2024-02-28 18:45:00"),
        ("31.12.1965 23:00", "%d.%m.%Y %H:%M", NEW_YORK, "1966-01-01 04:00:00"),
        ("2024-03-05 16:24 +0530", "%Y-%m-%d %H:%M %z", UTC, "2024-03-05 10:54:00"),
    ],
)
def test_to_api_datetime(text: str, fmt: str | None, zone: tzinfo, sent: str) -> None:
    assert to_api_datetime(text, fmt, zone) == sent


@pytest.mark.parametrize(
    ("text", "fmt"),
    [("", None), ("not a date", None), ("2024-02-30", None), ("24:00", "%H:%M"),
     ("2024-03-05", "%d/%m/%Y")],
)
def test_to_api_datetime_raises_value_error(text: str, fmt: str | None) -> None:
    with pytest.raises(ValueError):
        to_api_datetime(text, fmt, UTC)


@pytest.mark.parametrize(
    ("text", "zone"),
    [("0001-01-01T00:00:00", KOLKATA), ("9999-12-31T23:00:00", NEW_YORK)],
)
def test_to_api_datetime_raises_value_error_out_of_range(text: str, zone: tzinfo) -> None:
    with pytest.raises(ValueError):
        to_api_datetime(text, None, zone)


def test_to_api_datetime_pads_the_year_to_four_digits() -> None:
    assert to_api_datetime("0999-01-01T00:00:00", None, UTC) == "0999-01-01 00:00:00"


@pytest.mark.parametrize(("local", "utc"), [
    ("2024-03-10 02:30:00", "2024-03-10 07:30:00"),  # in the skipped hour: offset before (EST)
    ("2024-11-03 01:30:00", "2024-11-03 05:30:00"),  # repeated hour: first occurrence (EDT)
    ("2024-11-03 00:30:00", "2024-11-03 04:30:00"),
    ("2024-11-03 02:30:00", "2024-11-03 07:30:00"),
])
def test_dst_gaps_and_overlaps_are_handled_as_documented(local: str, utc: str) -> None:
    assert to_api_datetime(local, None, ZoneInfo("America/New_York")) == utc


def test_with_both_lead_columns_the_id_wins_and_the_email_fills_in() -> None:
    both = parse_mapping({"activity": {"event": 201, "lead_id_column": "id",
                                       "lead_email_column": "email"}})
    mapper = RowMapper(both)
    lead = "9e3779b9-7f4a-4c15-b39c-c0605cedc834"
    by_id = mapper.map_row(1, {"id": lead, "email": "a@example.com"})
    assert isinstance(by_id, Activity) and json.loads(by_id.body)["RelatedProspectId"] == lead
    by_email = mapper.map_row(2, {"id": " ", "email": "a@example.com"})
    assert isinstance(by_email, Activity)
    assert json.loads(by_email.body) == {"EmailAddress": "a@example.com", "ActivityEvent": 201}
    bad = mapper.map_row(3, {"id": "", "email": "nope"})
    assert isinstance(bad, InvalidRow) and bad.column == "email"
    bad_id = mapper.map_row(4, {"id": "xyz", "email": "a@example.com"})
    assert isinstance(bad_id, InvalidRow) and bad_id.column == "id"
