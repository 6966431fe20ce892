"""Reconciliation's pure rules: reading answers in every shape, matching by meaning, paging
whichever way Offset counts, calibrating on a known activity, and the send windows.

The answers are realistic: the captured real one (``ActivityFields``, a ``Data`` list,
entity-encoded notes, US-style times) and the sandbox's dialects, rendered by the same code
the sandbox serves them with.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkpost.core.calibration import calibrate, probe_rule, steady
from bulkpost.core.reconcile import (
    Fingerprint,
    FoundActivity,
    Page,
    Reading,
    Scan,
    SendWindow,
    matches,
    offset_of,
    parse_activities,
    pick,
    timeless_hash,
)
from bulkpost.core.values import decodings, entity_rule, parse_shown_datetime, same_value
from bulkpost.sandbox.dialect import DIALECTS, Dialect, render_activity
from bulkpost.sandbox.dialect import page as dialect_page
from bulkpost.sandbox.validation import activity_setting

LEAD = "eeb6e552-57eb-4d5e-a966-fee613897c8b"
NOTE = "Live Session 👇 & more\nsee learning\xa0portal"
CAPTURED_ITEM: dict[str, Any] = {
    "Id": "ec403d48-6c92-4a90-b6fa-4fe1701cb506", "EventCode": 222,
    "EventName": "WhatsApp Message", "ActivityScore": 0, "CreatedOn": "2025-04-04 12:10:26",
    "ActivityType": 2, "IsEmailType": False, "Type": "Inbound", "SessionId": "",
    "TrackLocation": 0, "Latitude": 0, "Longitude": 0, "RelatedProspectId": LEAD,
    "Data": [{"Key": "CreatedByName", "Value": "System"},
             {"Key": "EventName", "Value": "WhatsApp Message"},
             {"Key": "NotableEventDescription",
              "Value": "Live Session &#x1F447; & more\nsee learning&#xA0;portal"},
             {"Key": "HasAttachments", "Value": "False"}],
    "ActivityFields": {
        "ProspectActivityAutoId": "8328962",
        "ActivityEvent_Note": "Live Session &#x1F447; & more\nsee learning&#xA0;portal",
        "CreatedOn": "4/4/2025 12:10:26 PM", "ModifiedOn": "4/4/2025 4:39:47 PM",
        "CreatedBy": "4ab3ca7c-2767-11ed-8755-02b84f9e23c5",
        "mx_Custom_1": "2025-04-04 12:10:28", "mx_Custom_2": "Outbound", "Status": "FAILED",
        "Owner": "7d4446d7-5044-11ed-8f95-02cee9421788"},
    "ModifiedOn": "2025-04-04 16:39:47",
}


def _row(note: str = NOTE, when: str | None = "2025-04-04 12:10:26",
         fields: tuple[tuple[str, str], ...] = (("mx_Custom_1", "2025-04-04 12:10:28"),
                                                ("mx_Custom_2", "Outbound")),
         event: int = 222) -> Fingerprint:
    return Fingerprint(LEAD, None, event, when, note, fields)


# -- reading answers ---------------------------------------------------------------------
def test_the_captured_real_answer_is_read_fields_from_activity_fields_note_decoded() -> None:
    page = parse_activities({"RecordCount": 1, "ProspectActivities": [CAPTURED_ITEM]})
    assert page is not None and page.record_count == 1
    (found,) = page.items
    assert found.where == "ActivityFields" and found.event == 222
    assert found.fields == {"mx_Custom_1": "2025-04-04 12:10:28", "mx_Custom_2": "Outbound"}
    assert found.note is not None and "&#x1F447;" in found.note  # decoded when compared
    assert matches(_row(), found, None)
    # A bare list of activities, as the captured file holds them, reads the same.
    bare = parse_activities([CAPTURED_ITEM])
    assert bare is not None and bare.items == page.items and bare.record_count is None


@pytest.mark.parametrize("data", [
    {"ActivityEvent_Note": "hi", "mx_Custom_1": "a"},
    [{"Key": "NotableEventDescription", "Value": "hi"}, {"Key": "mx_Custom_1", "Value": "a"}],
])
def test_data_as_an_object_or_a_key_value_list(data: Any) -> None:
    page = parse_activities({"RecordCount": "1", "ProspectActivities": [
        {"Id": "x", "EventCode": "201", "CreatedOn": "2024-01-01 10:00:00", "Data": data}]})
    assert page is not None and page.record_count == 1
    assert page.items[0].note == "hi" and page.items[0].fields == {"mx_Custom_1": "a"}
    assert page.items[0].event == 201


@pytest.mark.parametrize("document", [
    {"Status": "Error", "ExceptionMessage": "x"},  # no ProspectActivities
    {"ProspectActivities": {"Id": "x"}},  # not a list
    {"ProspectActivities": [{"EventCode": 201}]},  # an item without an Id
    {"ProspectActivities": [{"Id": "x", "Data": "text"}]},  # Data neither object nor list
    {"ProspectActivities": [{"Id": "x", "Data": [{"Value": "no key"}]}]},
    {"ProspectActivities": [], "RecordCount": "many"},
    {"ProspectActivities": [{"Id": "x", "EventCode": "two"}]},
    "<html>", None, 42,
])
def test_an_answer_of_another_shape_is_not_understood_never_empty(document: Any) -> None:
    assert parse_activities(document) is None


def test_an_empty_answer_is_an_empty_page() -> None:
    assert parse_activities({"RecordCount": 0, "ProspectActivities": None}) == Page(0, ())
    assert parse_activities({"RecordCount": 0, "ProspectActivities": []}) == Page(0, ())


# -- matching by meaning -------------------------------------------------------------------
def _found(note: str | None = "hi", fields: dict[str, str] | None = None,
           created: str = "2024-03-01 10:00:00", event: int | None = 301) -> FoundActivity:
    return FoundActivity("id-1", event, created, note, fields or {})


KINDS = {"mx_Custom_2": "number", "mx_Custom_3": "dropdown", "mx_Custom_4": "date",
         "mx_Custom_5": "datetime", "mx_Custom_6": "string"}


@pytest.mark.parametrize(("name", "sent", "shown", "same"), [
    ("mx_Custom_2", "12.50", "12.5", True),
    ("mx_Custom_2", "007", "7", True),
    ("mx_Custom_2", "12.50", "12.51", False),
    ("mx_Custom_2", "12", "", False),
    ("mx_Custom_3", "Web", "web", True),
    ("mx_Custom_3", "Web", "Phone", False),
    ("mx_Custom_4", "2024-01-05", "1/5/2024 12:00:00 AM", True),
    ("mx_Custom_4", "2024-01-05", "2024-01-05 00:00:00", True),
    ("mx_Custom_4", "2024-01-05", "5/1/2024", False),  # US order: May 1st
    ("mx_Custom_5", "2024-01-05 13:00:00", "1/5/2024 1:00:00 PM", True),
    ("mx_Custom_5", "2024-01-05 13:00:00", "2024-01-05T13:00:00Z", True),
    ("mx_Custom_5", "2024-01-05 13:00:00", "1/5/2024 1:00:00 AM", False),
    ("mx_Custom_6", "Café & co", "Caf&#xE9; & co", True),
    ("mx_Custom_6", "Café", "Cafe", False),
    ("mx_Custom_6", "12.50", "12.5", False),  # a string is compared exactly
    ("mx_Custom_6", "web", "Web", False),
])
def test_fields_compare_by_the_kind_of_the_field(name: str, sent: str, shown: str,
                                                 same: bool) -> None:
    row = Fingerprint(LEAD, None, 301, "2024-03-01 10:00:00", "hi", ((name, sent),))
    assert matches(row, _found(fields={name: shown}), None, KINDS) is same


def test_entity_rules() -> None:
    assert decodings("a &amp; b &#xE9;") == ("a &amp; b &#xE9;", "a &amp; b é", "a & b é")
    assert decodings("a &amp; b", "numeric") == ("a &amp; b",)
    assert entity_rule("é & co", "&#xE9; & co") is None  # numeric and html both fit
    assert entity_rule("é &amp; co", "&#xE9; &amp; co") == "numeric"
    assert entity_rule("é &amp; co", "&#xE9; &amp;amp; co") == "html"
    assert entity_rule("plain", "plain") is None  # cannot tell
    assert entity_rule("x & y", "x & y") is None  # "none" and "numeric" both fit
    # A note that literally holds entity text is not the same as its decoding, once known.
    assert not same_value("string", "A", "&#x41;", "none")
    assert same_value("string", "A", "&#x41;", "numeric")


def test_times_are_read_in_every_form() -> None:
    expected = datetime(2025, 4, 4, 12, 10, 26, tzinfo=UTC)
    for text in ("2025-04-04 12:10:26", "4/4/2025 12:10:26 PM", "2025-04-04T12:10:26Z",
                 "2025-04-04T17:40:26+05:30"):
        assert parse_shown_datetime(text) == expected
    assert parse_shown_datetime("yesterday") is None


@pytest.mark.parametrize(("top", "fields"), [
    ("2026-07-31 05:33:50", "7/31/2026 5:33:50 AM"),
    ("2026-07-31 05:33:50.000", "7/31/2026 5:33:50 AM"),
    (None, "7/31/2026 5:33:50 AM"),  # no top-level CreatedOn: ActivityFields' is read
])
def test_the_three_real_time_forms_match_and_calibrate_alike(top: str | None,
                                                              fields: str) -> None:
    """``2026-07-31 05:33:50``, ``7/31/2026 5:33:50 AM``, ``2026-08-08 07:38:00.000``: UTC,
    no marker; each is the date-time the row sent."""
    item = {**CAPTURED_ITEM, "ActivityFields": {**CAPTURED_ITEM["ActivityFields"],
                                                "CreatedOn": fields}}
    if top is None:
        del item["CreatedOn"]
    else:
        item["CreatedOn"] = top
    page = parse_activities([item])
    assert page is not None
    found = page.items[0]
    assert parse_shown_datetime(found.created_on) == datetime(2026, 7, 31, 5, 33, 50,
                                                              tzinfo=UTC)
    row = _row(when="2026-07-31 05:33:50")
    assert matches(row, found, None, reading=Reading(True, "posted"))
    learned = calibrate(row, found.activity_id, found, None, {}, Reading())
    assert learned.reading is not None and learned.reading.created_on == "posted"
    assert parse_shown_datetime("2026-08-08 07:38:00.000") == datetime(2026, 8, 8, 7, 38,
                                                                       tzinfo=UTC)


# The captured update-log row: the activity's Id again, another EventCode, what changed.
UPDATE_LOG_ITEM: dict[str, Any] = {
    "Id": CAPTURED_ITEM["Id"], "EventCode": 3011, "EventName": "Activity Update",
    "CreatedOn": "2025-04-04 16:39:47.000", "Type": "Logs", "RelatedProspectId": LEAD,
    "Data": [{"Key": "Event", "Value": "Update"},
             {"Key": "OldData", "Value": '{"mx_Custom_2":"Inbound"}'},
             {"Key": "NewData", "Value": '{"mx_Custom_2":"Outbound"}'},
             {"Key": "CreatedByName", "Value": "System"}],
    "ModifiedOn": "2025-04-04 16:39:47.000",
}


def test_an_update_log_row_is_read_apart_and_never_matches() -> None:
    page = parse_activities({"RecordCount": 2, "ProspectActivities": [UPDATE_LOG_ITEM,
                                                                       CAPTURED_ITEM]})
    assert page is not None
    log, activity = page.items
    assert log.log and not activity.log  # no ActivityFields: read all the same
    assert log.activity_id == activity.activity_id and log.key != activity.key
    row = _row()
    # The log row is newer and listed first: the activity is the match, never the log,
    # even for a row of the log's own event code holding what the log shows.
    assert pick(row, page.items, lambda _: False, None) == activity.activity_id
    assert pick(row, [log], lambda _: False, None) is None
    assert not matches(_row(event=3011, note="", fields=()), log, None)
    for data in ({"Event": "Update"}, {"OldData": "{}", "NewData": "{}"}):
        alone = parse_activities([{**UPDATE_LOG_ITEM, "Data": data}])
        assert alone is not None and alone.items[0].log


def test_update_log_rows_never_make_a_scan_incomplete() -> None:
    """A lead of 20 activities, each updated once: 40 rows, 20 Ids. Told apart by (Id,
    EventCode), the rows RecordCount counts are all seen."""
    activities = [{**CAPTURED_ITEM, "Id": f"{n:08d}-0000-4000-8000-000000000000"}
                  for n in range(20)]
    rows = [item for a in activities for item in ({**UPDATE_LOG_ITEM, "Id": a["Id"]}, a)]
    scan = Scan("rows")
    while not (scan.complete or scan.incomplete):
        chunk = rows[scan.next_offset():scan.next_offset() + 25]
        page = parse_activities({"RecordCount": len(rows), "ProspectActivities": chunk})
        assert page is not None
        scan.add(page)
    assert scan.complete and not scan.incomplete and len(scan.seen) == 40


def test_time_rules() -> None:
    sent = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
    window = SendWindow.around(sent, sent + timedelta(seconds=5), timeout=30)
    arrival = "2026-11-29 10:00:03"
    row = _row(when="2024-01-05 09:00:00")
    on_wire = FoundActivity("a", 222, arrival, NOTE, dict(row.fields))
    stamped = FoundActivity("b", 222, "2024-01-05 09:00:00", NOTE, dict(row.fields))
    posted, arrived = Reading(True, "posted"), Reading(True, "arrival")
    assert matches(row, stamped, window, reading=posted)
    assert not matches(row, on_wire, window, reading=posted)
    assert matches(row, on_wire, window, reading=arrived)
    assert not matches(row, stamped, window, reading=arrived)
    assert matches(row, on_wire, window) and matches(row, stamped, window)  # not learned
    assert not matches(row, on_wire, None, reading=arrived)  # no window: cannot tell
    timeless = _row(when=None)
    assert matches(timeless, on_wire, window) and not matches(timeless, stamped, window)


def test_pick_skips_activities_another_row_holds() -> None:
    row = _row(when=None)
    window = SendWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    twins = [FoundActivity(i, 222, "2026-01-01 12:00:00", NOTE, dict(row.fields))
             for i in ("first", "second")]
    assert pick(row, twins, lambda i: False, window) == "first"
    assert pick(row, twins, lambda i: i == "first", window) == "second"
    assert pick(row, twins, lambda i: True, window) is None


def test_send_windows() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    window = SendWindow.around(start, start + timedelta(seconds=10), timeout=30, slack=60)
    assert window == SendWindow(start - timedelta(seconds=60),
                                start + timedelta(seconds=100))
    later = SendWindow(start + timedelta(hours=1), start + timedelta(hours=2))
    assert window.joined(later) == SendWindow(window.earliest, later.latest)
    assert window.joined(None) is window
    assert window.holds(start) and not window.holds(start + timedelta(seconds=101))
    assert not window.holds(None)


def test_rows_told_apart_only_by_their_time_share_a_timeless_hash() -> None:
    one = b'{"RelatedProspectId":"x","ActivityEvent":201,"ActivityDateTime":"2024-01-01 ' \
          b'10:00:00","Fields":[]}'
    two = one.replace(b"2024-01-01", b"2025-02-02")
    other = one.replace(b'"Fields":[]', b'"ActivityNote":"n","Fields":[]')
    assert timeless_hash(one) == timeless_hash(two) != timeless_hash(other)


# -- paging --------------------------------------------------------------------------------
def _ids(n: int) -> list[dict[str, Any]]:
    return [{"Id": f"a{i}", "EventCode": 201, "CreatedOn": "2024-01-01 00:00:00", "Data": {}}
            for i in range(n)]


def _scan_all(entries: list[dict[str, Any]], dialect: Dialect, rule: str | None,
              size: int = 25) -> tuple[Scan, list[str]]:
    scan, read = Scan(rule, size), []
    while not (scan.complete or scan.incomplete or scan.needs_rule):
        items, count = dialect_page(entries, scan.next_offset(), size, dialect)
        page = parse_activities({"RecordCount": count, "ProspectActivities": items})
        assert page is not None
        read += [f.activity_id for f in page.items]
        scan.add(page)
    return scan, read


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
@pytest.mark.parametrize("count", [0, 1, 24, 25, 26, 60])
def test_a_scan_by_the_right_rule_sees_every_activity_once(dialect: Dialect,
                                                           count: int) -> None:
    entries = _ids(count)
    scan, read = _scan_all(entries, dialect, dialect.offset)
    assert scan.complete and not scan.incomplete
    assert sorted(set(read)) == sorted(e["Id"] for e in entries)


@pytest.mark.parametrize("wrong", ["rows", "pages0", "pages1"])
@pytest.mark.parametrize("right", ["rows", "pages0", "pages1"])
def test_a_scan_by_the_wrong_rule_never_says_complete_when_it_missed_one(
        wrong: str, right: str) -> None:
    dialect = Dialect("t", "data", False, "posted", right, "total", False)
    entries = _ids(80)
    scan, read = _scan_all(entries, dialect, wrong)
    if set(read) != {e["Id"] for e in entries}:
        assert scan.incomplete and not scan.complete
    else:
        assert wrong == right or scan.complete


def test_a_second_page_without_a_known_rule_asks_for_the_rule() -> None:
    scan, _ = _scan_all(_ids(30), DIALECTS["classic"], None)
    assert scan.needs_rule and not scan.complete
    empty_first, _ = _scan_all(_ids(3), DIALECTS["arrival"], None)  # pages1: Offset 0 empty
    assert empty_first.complete  # RecordCount per page says 0: only calibration tells


def test_offsets_per_rule() -> None:
    assert [offset_of(p, "rows") for p in range(3)] == [0, 25, 50]
    assert [offset_of(p, "pages0") for p in range(3)] == [0, 1, 2]
    assert [offset_of(p, "pages1") for p in range(3)] == [1, 2, 3]
    assert offset_of(0, None) == 0


def test_a_page_larger_than_asked_or_repeating_pages_are_incomplete() -> None:
    scan = Scan("rows", 2)
    scan.add(Page(None, tuple(FoundActivity(f"x{i}", 1, "", "", {}) for i in range(3))))
    assert scan.incomplete
    scan = Scan("rows", 2)
    same = Page(None, (FoundActivity("x", 1, "", "", {}), FoundActivity("y", 1, "", "", {})))
    for _ in range(4):
        scan.add(same)
    assert scan.incomplete and "repeat" in scan.incomplete
    short = Scan("rows", 2)
    short.add(Page(10, same.items))
    short.add(Page(10, ()))
    assert short.incomplete and "2 of 10" in short.incomplete
    # Activities arriving during a scan push older ones down: the second page repeats some
    # of the first and counts more, and the scan still completes when it reaches the end.
    first = tuple(FoundActivity(f"a{i}", 1, "", "", {}) for i in range(25))
    busy = Scan("rows", 25)
    busy.add(Page(25, first))
    busy.add(Page(35, first[15:]))  # 10 arrived meanwhile
    assert busy.complete and not busy.incomplete


@pytest.mark.parametrize("rule", ["rows", "pages0", "pages1"])
@pytest.mark.parametrize("count", [25, 30, 80])
@pytest.mark.parametrize("arrived", [0, 1, 8, 10])
def test_the_offset_probe_tells_the_rule_even_when_activities_arrive_meanwhile(
        rule: str, count: int, arrived: int) -> None:
    dialect = Dialect("t", "data", False, "posted", rule, "total", False)
    entries = _ids(count)
    first = [e["Id"] for e in dialect_page(entries, 1 if rule == "pages1" else 0, 25,
                                           dialect)[0]]
    # Newest first: activities created after the first read push every page down.
    later = [{"Id": f"new{i}"} for i in range(arrived)] + entries
    one = [e["Id"] for e in dialect_page(later, 1, 25, dialect)[0]]
    two = [e["Id"] for e in dialect_page(later, 2, 25, dialect)[0]]
    learned = probe_rule(first, one, None)
    if learned is None:
        learned = probe_rule(first, one, two)
    assert learned == rule
    assert probe_rule(first[:3], one, two) is None  # no full first page: cannot tell
    again = [e["Id"] for e in dialect_page(later, 1 if rule == "pages1" else 0, 25,
                                           dialect)[0]]
    assert steady(first, again) is (arrived <= 8)  # a third of a page at most: it counts


def test_a_first_page_read_again_is_steady_only_when_little_arrived_on_top() -> None:
    first = [f"a{i}" for i in range(25)]
    assert steady(first, first)
    assert steady(first, ["n1", "n2", *first[:23]])
    assert steady(first, [f"n{i}" for i in range(8)] + first[:17])
    assert not steady(first, [f"n{i}" for i in range(9)] + first[:16])  # too many
    assert not steady(first, [first[1], first[0], *first[2:]])  # reordered
    assert not steady(first, ["n1", *first[:10], *first[11:], "x"])  # one went away
    assert not steady([], first)


# -- calibration ---------------------------------------------------------------------------
def test_calibration_learns_the_captured_accounts_rules() -> None:
    page = parse_activities([CAPTURED_ITEM])
    assert page is not None
    learned = calibrate(_row(), CAPTURED_ITEM["Id"], page.items[0], None, {}, Reading())
    assert learned.reading is not None and learned.reading.calibrated
    # The note decodes the same under "numeric" and "html" (its & stayed as it was).
    assert learned.reading.created_on == "posted" and learned.reading.entities is None
    assert learned.reading.fields_at == "ActivityFields"


def test_calibration_refuses_an_answer_that_contradicts_the_row() -> None:
    page = parse_activities([CAPTURED_ITEM])
    assert page is not None
    found = page.items[0]
    for row, problem in [
        (_row(note="another note"), "note"),
        (_row(fields=(("mx_Custom_2", "Inbound"),)), "mx_Custom_2"),
        (_row(fields=(("mx_Custom_9", "x"),)), "does not show mx_Custom_9"),
        (_row(when="2020-01-01 00:00:00"), "CreatedOn"),
    ]:
        learned = calibrate(row, "id", found, None, {}, Reading())
        assert learned.reading is None and problem in learned.problem
    hidden = FoundActivity("id", 222, "2025-04-04 12:10:26", None, dict(_row().fields))
    assert calibrate(_row(), "id", hidden, None, {}, Reading()).reading is None


def test_calibration_learns_arrival_stamps_from_the_send_window() -> None:
    sent = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
    window = SendWindow.around(sent, sent, timeout=30)
    found = FoundActivity("id", 222, "2026-11-29 10:00:01", NOTE, dict(_row().fields))
    learned = calibrate(_row(when="2024-01-01 00:00:00"), "id", found, window, {}, Reading())
    assert learned.reading is not None and learned.reading.created_on == "arrival"
    no_time = calibrate(_row(when=None), "id", found, window, {}, Reading())
    assert no_time.reading is not None and no_time.reading.created_on is None


def test_readings_round_trip_and_refuse_what_they_do_not_know() -> None:
    reading = Reading(True, "arrival", "numeric", "pages1", "page", "ActivityFields")
    assert Reading.from_json(json.loads(json.dumps(reading.to_json()))) == reading
    assert Reading.from_json({"calibrated": True, "offset": "pages2"}) is None
    assert Reading.from_json("x") is None
    assert Reading.from_json({"calibrated": True, "unknown_key": 1}) == Reading(True)


# -- property: in every dialect, the activity created from a row matches it and no other ----
_SETTING = activity_setting(301)
assert _SETTING is not None
TYPED: dict[str, Any] = _SETTING
_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
_SENT_AT = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


@st.composite
def _rows(draw: st.DrawFn) -> tuple[Fingerprint, dict[str, str]]:
    when = draw(st.one_of(st.none(), st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%d %H:%M:%S"))))
    amount = draw(st.decimals(min_value=-10**6, max_value=10**6, places=2,
                              allow_nan=False, allow_infinity=False))
    fields = (
        ("mx_Custom_1", draw(st.text("ABC123-", min_size=1, max_size=12))),
        ("mx_Custom_2", f"{amount:f}"),
        ("mx_Custom_3", draw(st.sampled_from(["Web", "Phone", "Store"]))),
        ("mx_Custom_4", draw(st.dates(min_value=datetime(2000, 1, 1).date(),
                                      max_value=datetime(2030, 1, 1).date())).isoformat()),
        ("mx_Custom_8", draw(_TEXT)),
    )
    row = Fingerprint(LEAD, None, 301, when, draw(_TEXT), fields)
    return row, {name: str(spec["DataType"]).lower() for spec in TYPED["Fields"]
                 for name in [spec["SchemaName"]]}


def _created(row: Fingerprint, dialect: Dialect) -> FoundActivity:
    entry = {"Id": "9b0c8a5e-0000-4000-8000-000000000001", "ActivityEvent": row.event,
             "ActivityNote": row.note, "Fields": dict(row.fields), "LeadId": LEAD,
             "CreatedOn": row.when or _SENT_AT.strftime("%Y-%m-%d %H:%M:%S"),
             "ReceivedAt": (_SENT_AT + timedelta(seconds=2)).timestamp()}
    page = parse_activities({"RecordCount": 1, "ProspectActivities": [
        render_activity(entry, dialect, TYPED)]})
    assert page is not None
    return page.items[0]


def _changed(row: Fingerprint, what: int) -> Fingerprint:
    fields = list(row.fields)
    if what == 0:
        return Fingerprint(row.lead_id, None, row.event, row.when, row.note + "x", row.fields)
    name, value = fields[what - 1]
    changed = {"mx_Custom_1": value + "Z", "mx_Custom_2": f"{value}1",
               "mx_Custom_3": {"Web": "Phone"}.get(value, "Web"),
               "mx_Custom_4": "1999-12-31", "mx_Custom_8": value + "ü"}[name]
    fields[what - 1] = (name, changed)
    return Fingerprint(row.lead_id, None, row.event, row.when, row.note, tuple(fields))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=_rows(), dialect=st.sampled_from(list(DIALECTS.values())),
       what=st.integers(0, 5), learned=st.booleans())
def test_any_row_in_any_dialect_matches_its_own_activity_and_no_other(
        drawn: tuple[Fingerprint, dict[str, str]], dialect: Dialect, what: int,
        learned: bool) -> None:
    row, types = drawn
    kinds = {name: {"number": "number", "date": "date", "datetime": "datetime",
                    "dropdown": "dropdown"}.get(kind, "string") for name, kind in types.items()}
    found = _created(row, dialect)
    window = SendWindow.around(_SENT_AT, _SENT_AT, timeout=30)
    reading = Reading(True, dialect.created_on, "numeric" if dialect.entities else "none")
    if learned:  # what calibration on the row itself learns agrees with the dialect
        taught = calibrate(row, found.activity_id, found, window, kinds, Reading())
        assert taught.reading is not None, taught.problem
        reading = taught.reading
    assert matches(row, found, window, kinds, reading)
    other = _changed(row, what)
    assert not matches(other, found, window, kinds, reading)
    if row.when is not None and dialect.created_on == "posted" and reading.created_on:
        moved = Fingerprint(row.lead_id, None, row.event, "1999-01-01 00:00:00", row.note,
                            row.fields)
        assert not matches(moved, found, window, kinds, reading)
