"""Reading activities back: the pure comparison, choosing rows, and `bulkpost verify` end to end."""

from __future__ import annotations

import csv
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bulkpost.core.activity import Activity, FieldRule, content_hash
from bulkpost.core.mapping import parse_mapping
from bulkpost.core.reconcile import FoundActivity, Reading, Scan
from bulkpost.core.results_line import HEADER, RowOutcome, format_line
from bulkpost.core.statuses import Status
from bulkpost.delivery.lookups import worth_reading_on
from bulkpost.delivery.readback import (
    Difference,
    FieldInfo,
    differences,
    field_infos,
    page_differences,
    parse_details,
)
from bulkpost.runner.verify_reading import pages_unused
from bulkpost.runner.verify_rows import choose_posted
from bulkpost.sandbox.dialect import parse_dialect
from bulkpost.storage.kept import kept_path, recall_section
from tests.conftest import read_results, run_cli, write_csv

ID = "5a8f7c2e-1b3d-4e6f-9a0b-1c2d3e4f5a6b"


# -- parse_details ------------------------------------------------------------------------
def test_the_documented_answer_gives_every_field_with_nulls_as_empty() -> None:
    answer = {"ID": ID, "Name": "Order", "DisplayName": "Order", "Fields": [
        {"SchemaName": "mx_Custom_1", "DisplayName": "Order No", "Value": "A1",
         "DataType": "String", "IsMandatory": True, "ShowInForm": True, "Sequence": 1,
         "OptionSet": None},
        {"SchemaName": "mx_Custom_2", "DisplayName": "Amount", "Value": 12.5,
         "DataType": "Number", "IsMandatory": False, "ShowInForm": True, "Sequence": 2,
         "OptionSet": None},
        {"SchemaName": "mx_Custom_3", "DisplayName": "Channel", "Value": None,
         "DataType": "Dropdown", "IsMandatory": False, "ShowInForm": True, "Sequence": 3,
         "OptionSet": "[{\"Value\":\"Web\"}]"},
    ]}
    assert parse_details(answer) == {"mx_Custom_1": "A1", "mx_Custom_2": "12.5",
                                     "mx_Custom_3": ""}
    assert parse_details({"ID": ID, "Fields": []}) == {}


def test_activity_fields_give_the_custom_fields_and_the_list_wins() -> None:
    captured = {"ActivityFields": {"ProspectActivityAutoId": 41, "ActivityEvent_Note": "n",
                                   "CreatedOn": "4/4/2025 12:10:26 PM", "mx_Custom_1": "A1",
                                   "mx_Custom_2": None, "Status": "Active", "Owner": None}}
    assert parse_details(captured) == {"mx_Custom_1": "A1", "mx_Custom_2": ""}
    both = {**captured, "Fields": [{"SchemaName": "mx_Custom_1", "Value": "from the list"}]}
    assert parse_details(both) == {"mx_Custom_1": "from the list", "mx_Custom_2": ""}


@pytest.mark.parametrize("document", [
    None, "text", [], [{"Fields": []}], {}, {"Status": "Success", "Message": {"Id": ID}},
    {"Fields": "mx_Custom_1"}, {"Fields": {"mx_Custom_1": "A1"}}, {"Fields": [1]},
    {"Fields": [{"Value": "A1"}]}, {"Fields": [{"SchemaName": 7, "Value": "A1"}]},
    {"Fields": [{"SchemaName": "mx_Custom_1", "Value": {"Text": "A1"}}]},
    {"Fields": [{"SchemaName": "mx_Custom_1", "Value": True}]},
    {"ActivityFields": [["mx_Custom_1", "A1"]]},
    {"ActivityFields": {"mx_Custom_1": ["A1"]}},
    {"fields": [{"SchemaName": "mx_Custom_1", "Value": "A1"}]},
])
def test_an_answer_of_another_shape_is_not_understood(document: Any) -> None:
    assert parse_details(document) is None


# -- differences --------------------------------------------------------------------------
FIELDS = {
    "mx_Custom_1": FieldInfo("mx_Custom_1 (Order No)", "key"),
    "mx_Custom_2": FieldInfo("mx_Custom_2 (Amount)", "amount", "number"),
    "mx_Custom_3": FieldInfo("mx_Custom_3 (Channel)", "channel", "dropdown"),
    "mx_Custom_4": FieldInfo("mx_Custom_4 (Delivery Date)", "delivery", "date"),
    "mx_Custom_5": FieldInfo("mx_Custom_5 (Shipped At)", "shipped", "datetime"),
    "mx_Custom_8": FieldInfo("mx_Custom_8 (Remarks)", "remarks"),
}


def _item(values: dict[str, str], row: int = 7) -> Activity:
    body = json.dumps({"RelatedProspectId": ID, "ActivityEvent": 301, "Fields": [
        {"SchemaName": name, "Value": value} for name, value in values.items()]},
        ensure_ascii=False, separators=(",", ":")).encode()
    return Activity(row, "A1", ID, body, content_hash(body), 301)


SENT = {"mx_Custom_1": "A1", "mx_Custom_2": "12.50", "mx_Custom_3": "Web",
        "mx_Custom_4": "2024-05-01", "mx_Custom_5": "2024-05-01 04:30:00",
        "mx_Custom_8": "Ünïcødé ✓ & more"}


def test_values_shown_in_another_form_are_the_values_sent() -> None:
    shown = {"mx_Custom_1": "A1", "mx_Custom_2": "12.5", "mx_Custom_3": "WEB",
             "mx_Custom_4": "5/1/2024 12:00:00 AM", "mx_Custom_5": "5/1/2024 4:30:00 AM",
             "mx_Custom_8": "&#xDC;n&#xEF;c&#xF8;d&#xE9; &#x2713; & more",
             "mx_Custom_9": "a field the row did not send"}
    assert differences(_item(SENT), "act-1", shown, FIELDS) == []
    assert differences(_item(SENT), "act-1", SENT, FIELDS) == []


def test_a_value_stored_otherwise_is_a_difference_naming_row_field_and_column() -> None:
    shown = {**SENT, "mx_Custom_2": "12", "mx_Custom_4": "5/2/2024 12:00:00 AM"}
    assert differences(_item(SENT), "act-1", shown, FIELDS) == [
        Difference(7, "act-1", "mx_Custom_2", "mx_Custom_2 (Amount)", "amount", "12.50", "12"),
        Difference(7, "act-1", "mx_Custom_4", "mx_Custom_4 (Delivery Date)", "delivery",
                   "2024-05-01", "5/2/2024 12:00:00 AM"),
    ]


def test_strings_compare_exactly_and_only_dropdowns_ignore_case() -> None:
    item = _item({"mx_Custom_1": "Web", "mx_Custom_3": "Web"})
    shown = {"mx_Custom_1": "WEB", "mx_Custom_3": "WEB"}
    assert [d.field for d in differences(item, "a", shown, FIELDS)] == ["mx_Custom_1"]
    blank = _item({"mx_Custom_1": "  padded  "})
    assert [d.stored for d in differences(blank, "a", {"mx_Custom_1": "padded"}, FIELDS)] == [
        "padded"]


def test_a_field_missing_from_the_answer_differs_unless_it_was_sent_empty() -> None:
    item = _item({"mx_Custom_1": "A1", "mx_Custom_2": "", "mx_Custom_8": "note"})
    found = differences(item, "a", {"mx_Custom_1": "A1"}, FIELDS)
    assert [(d.field, d.sent, d.stored) for d in found] == [("mx_Custom_8", "note", None)]
    emptied = differences(item, "a", {"mx_Custom_1": "A1", "mx_Custom_8": ""}, FIELDS)
    assert [(d.field, d.stored) for d in emptied] == [("mx_Custom_8", "")]


def test_a_field_without_information_is_named_by_its_schema_name() -> None:
    found = differences(_item({"mx_Custom_40": "x"}), "a", {"mx_Custom_40": "y"}, FIELDS)
    assert [(d.label, d.column) for d in found] == [("mx_Custom_40", "")]


def test_field_infos_come_from_the_rules_else_from_the_mapping() -> None:
    mapping = parse_mapping({"activity": {"event_column": "code", "lead_id_column": "lead"},
                             "fields": {"mx_Custom_1": "key", "mx_Custom_2": "amount"}})
    plain = field_infos(mapping, None)(301)
    assert plain == {"mx_Custom_1": FieldInfo("mx_Custom_1", "key"),
                     "mx_Custom_2": FieldInfo("mx_Custom_2", "amount")}
    rules = {301: (FieldRule("mx_Custom_2", "amount", "mx_Custom_2 (Amount)", kind="number"),)}
    infos = field_infos(mapping, rules)
    assert infos(301) == {"mx_Custom_2": FieldInfo("mx_Custom_2 (Amount)", "amount", "number")}
    assert infos(205) == plain  # a code the rules lack: as the mapping says


# -- page_differences, and when pages are read -------------------------------------------------
def _noted(note: str) -> Activity:
    body = json.dumps({"RelatedProspectId": ID, "ActivityEvent": 301, "ActivityNote": note,
                       "Fields": [{"SchemaName": "mx_Custom_2", "Value": "12.50"}]},
                      ensure_ascii=False, separators=(",", ":")).encode()
    return Activity(7, "A1", ID, body, content_hash(body), 301)


def _on_page(note: str | None, where: str = "ActivityFields",
             fields: dict[str, str] | None = None) -> FoundActivity:
    return FoundActivity("act-1", 301, "2024-03-01 04:30:00", note,
                         {"mx_Custom_2": "12.5"} if fields is None else fields, where)


def test_the_page_compares_the_fields_and_the_note_entities_decoded() -> None:
    item = _noted("Ünïcødé ✓ & more")
    assert page_differences(item, "act-1", _on_page("&#xDC;n&#xEF;c&#xF8;d&#xE9; &#x2713; & more"),
                            FIELDS, "ActivityFields", "remarks") == []
    found = page_differences(item, "act-1", _on_page("edited", fields={"mx_Custom_2": "3"}),
                             FIELDS, "ActivityFields", "remarks")
    assert found == [
        Difference(7, "act-1", "mx_Custom_2", "mx_Custom_2 (Amount)", "amount", "12.50", "3"),
        Difference(7, "act-1", "ActivityNote", "note", "remarks", "Ünïcødé ✓ & more", "edited")]


def test_a_page_that_cannot_show_what_was_sent_settles_nothing() -> None:
    item = _noted("a note")
    # Its fields not where the calibrated look-up found them (no ActivityFields, say).
    assert page_differences(item, "act-1", _on_page("a note", where="", fields={}), FIELDS,
                            "ActivityFields", "") is None
    assert page_differences(item, "act-1", _on_page(None), FIELDS, "ActivityFields", "") is None
    # An empty note sent and none shown: nothing to tell apart.
    assert page_differences(_noted(""), "act-1", _on_page(None), FIELDS, "ActivityFields",
                            "") == []


def test_pages_are_read_only_by_a_calibration_that_saw_the_fields() -> None:
    assert "not calibrated" in pages_unused(None)
    assert "not calibrated" in pages_unused(Reading(fields_at="Data"))
    assert "no custom field" in pages_unused(Reading(calibrated=True))
    assert pages_unused(Reading(calibrated=True, fields_at="ActivityFields")) == ""


def test_pages_are_read_on_while_cheaper_than_one_call_per_activity_left() -> None:
    scan = Scan("rows", pages=1, total=260)  # ten pages more to read
    assert worth_reading_on(scan, 10, 12) and not worth_reading_on(scan, 9, 12)
    unknown = Scan("pages0", pages=2)  # no total: at most as many pages as activities wanted
    assert worth_reading_on(unknown, 1, 3) and not worth_reading_on(unknown, 1, 2)


# -- choosing the rows ----------------------------------------------------------------------
def _results(path: Path, outcomes: list[RowOutcome]) -> Path:
    with open(path, "wb") as handle:
        handle.write((",".join(HEADER) + "\n").encode())
        for outcome in outcomes:
            handle.write(format_line(outcome))
    return path


def _posted(row: int) -> RowOutcome:
    return RowOutcome(row, f"K{row}", Status.POSTED, activity_id=f"act-{row}",
                      content_hash=f"{row:016x}")


def test_every_posted_row_by_its_last_line(tmp_path: Path) -> None:
    lines = [RowOutcome(1, "K1", Status.UNKNOWN), _posted(1),          # posted at last
             _posted(2), RowOutcome(2, "K2", Status.UNKNOWN),          # not posted at last
             RowOutcome(3, "K3", Status.INVALID, error="bad lead"),
             RowOutcome(4, "K4", Status.POSTED),                       # no activity Id
             _posted(6), _posted(5)]
    chosen = choose_posted(_results(tmp_path / "r.csv", lines), None, 1)
    assert [p.row for p in chosen.rows] == [1, 5, 6]
    assert (chosen.posted, chosen.without_id) == (4, 1)
    assert chosen.rows[0].activity_id == "act-1" and chosen.rows[0].content_hash == f"{1:016x}"


def test_a_sample_is_repeatable_whatever_the_line_order_and_nested(tmp_path: Path) -> None:
    lines = [_posted(row) for row in range(1, 201)]
    compacted = _results(tmp_path / "a.csv", lines)
    shuffled = lines[:]
    random.Random(5).shuffle(shuffled)
    logged = _results(tmp_path / "b.csv", shuffled)

    def rows(path: Path, size: int, seed: int) -> list[int]:
        return [p.row for p in choose_posted(path, size, seed).rows]

    ten = rows(compacted, 10, 42)
    assert len(ten) == 10 and ten == sorted(ten)
    assert rows(logged, 10, 42) == ten
    assert set(rows(compacted, 3, 42)) <= set(ten)
    assert rows(compacted, 10, 43) != ten
    assert rows(compacted, 500, 42) == list(range(1, 201))
    assert choose_posted(compacted, 10, 42).posted == 200


def test_the_sample_is_uniform(tmp_path: Path) -> None:
    path = _results(tmp_path / "r.csv", [_posted(row) for row in range(1, 11)])
    counts = dict.fromkeys(range(1, 11), 0)
    for seed in range(2000):
        for posted in choose_posted(path, 3, seed).rows:
            counts[posted.row] += 1
    # Each row is chosen with probability 3/10: 600 of 2000 expected, sd about 20.
    assert all(500 < count < 700 for count in counts.values()), counts


# -- end to end ------------------------------------------------------------------------------
TYPED = """
[activity]
event = 301
lead_id_column = "lead"
datetime_column = "when"
timezone = "Asia/Kolkata"
key_column = "key"

[fields]
"Order No" = "key"
Amount = "amount"
Channel = "channel"
"Delivery Date" = "delivery"
"Shipped At" = "shipped"
Remarks = "remarks"
"""
NO_READ_BACK = ("--verify-first", "0")
COLUMNS = ["key", "lead", "when", "amount", "channel", "delivery", "shipped", "remarks"]


def _lead(n: int) -> str:
    return str(uuid.UUID(int=(n + 1) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128, version=4))


def _typed_rows(count: int) -> list[list[str]]:
    channels = ["web", "PHONE", "Store"]
    return [[f"V{n}", _lead(n % 5), "2024-03-01 10:00:00", f"{n}12.50", channels[n % 3],
             f"2024-05-{n % 28 + 1:02d}", "2024-05-01 10:00", f"Ünïcødé ✓ & row {n}"]
            for n in range(1, count + 1)]


def _loaded(tmp_path: Path, server: Any, count: int = 8, *extra: str,
            mapping_text: str = TYPED,
            rows: list[list[str]] | None = None) -> tuple[Path, Path, Path]:
    data = write_csv(tmp_path / "in.csv", COLUMNS, rows or _typed_rows(count))
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(mapping_text)
    results = tmp_path / "results.csv"
    done = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                   server.url, "--rate", "100/1s", "--log-format", "json", *extra)
    assert done.code == 0 and done.summary["posted"] == count, done.stderr
    return data, mapping, results


def _verify(data: Path, mapping: Path, results: Path, url: str, *extra: str | Path) -> Any:
    return run_cli("verify", results, "--input", data, "--mapping", mapping, "--host", url,
                   "--rate", "100/1s", "--log-format", "json", *extra)


@pytest.mark.e2e
@pytest.mark.parametrize("dialect", ["classic", "captured", "arrival"])
def test_activities_stored_as_sent_verify_equal(tmp_path: Path, make_sandbox: Any,
                                                dialect: str) -> None:
    from bulkpost.sandbox.dialect import parse_dialect

    server = make_sandbox(dialect=parse_dialect(dialect))
    data, mapping, results = _loaded(tmp_path, server)
    checked = _verify(data, mapping, results, server.url, "--differences", tmp_path / "d.csv")
    assert checked.code == 0, checked.stderr
    summary = checked.summary
    assert (summary["checked"], summary["differ"], summary["unreadable"]) == (8, 0, 0)
    assert (summary["posted"], summary["sampled"], summary["exit_code"]) == (8, 8, 0)
    assert isinstance(summary["seed"], int) and summary["sample"] == 20
    assert "8 as sent, 0 differ, 0 unreadable" in checked.stderr
    assert (tmp_path / "d.csv").read_text().splitlines() == [
        "row,activity_id,column,field,sent,stored"]


@pytest.mark.e2e
def test_values_stored_otherwise_are_reported_by_column(tmp_path: Path,
                                                        make_sandbox: Any) -> None:
    server = make_sandbox(altered=frozenset({"mx_Custom_2"}))
    # The run's own read-back of its first row would stop it: this load is to be checked after.
    data, mapping, results = _loaded(tmp_path, server, 8, *NO_READ_BACK)
    out = tmp_path / "differences.csv"
    checked = _verify(data, mapping, results, server.url, "--all", "--differences", out)
    assert checked.code == 1, checked.stderr
    summary = checked.summary
    assert (summary["checked"], summary["differ"], summary["differences"]) == (8, 8, 8)
    assert summary["sample"] == "all" and summary["seed"] is None
    assert ("column 'amount' → mx_Custom_2 (Amount): 8 rows differ (rows 1, 2, 3, 4, 5, …)"
            in checked.stderr)
    ids = {row: r["activity_id"] for row, r in read_results(results).items()}
    assert f"row 1 (activity {ids[1]}): sent '112.50', stored '112'" in checked.stderr
    with open(out, newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert [(int(r["row"]), r["activity_id"], r["column"], r["field"], r["sent"], r["stored"])
            for r in lines] == [
        (n, ids[n], "amount", "mx_Custom_2", f"{n}12.50", f"{n}12.50"[:len(f"{n}12.50") // 2])
        for n in range(1, 9)]


@pytest.mark.e2e
def test_a_sample_checks_that_many_and_a_seed_repeats_it(tmp_path: Path,
                                                         make_sandbox: Any) -> None:
    server = make_sandbox(altered=frozenset({"mx_Custom_2"}))
    data, mapping, results = _loaded(tmp_path, server, 12, *NO_READ_BACK)
    first = _verify(data, mapping, results, server.url, "--sample", "3", "--differences",
                    tmp_path / "a.csv")
    assert first.code == 1 and first.summary["checked"] == 3 == first.summary["sampled"]
    assert first.summary["posted"] == 12
    seed = str(first.summary["seed"])
    before = server.stats()["details"]
    again = _verify(data, mapping, results, server.url, "--sample", "3", "--seed", seed,
                    "--differences", tmp_path / "b.csv")
    assert again.summary["seed"] == first.summary["seed"]
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert server.stats()["details"] - before == 3  # one call per activity read back


@pytest.mark.e2e
def test_a_results_file_without_posted_rows_checks_nothing(tmp_path: Path,
                                                           make_sandbox: Any) -> None:
    server = make_sandbox()
    rows = [[f"V{n}", "not-a-guid", "2024-03-01 10:00:00", "1", "Web", "", "", ""]
            for n in range(1, 4)]
    data = write_csv(tmp_path / "in.csv", COLUMNS, rows)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(TYPED)
    results = tmp_path / "results.csv"
    done = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                   server.url, "--rate", "100/1s")
    assert done.summary["invalid"] == 3
    checked = _verify(data, mapping, results, server.url)
    assert checked.code == 0, checked.stderr
    assert (checked.summary["checked"], checked.summary["posted"],
            checked.summary["sampled"]) == (0, 0, 0)


@pytest.mark.e2e
def test_a_results_file_of_another_input_or_missing_files_exit_2(tmp_path: Path,
                                                                 make_sandbox: Any) -> None:
    server = make_sandbox()
    data, mapping, results = _loaded(tmp_path, server, count=4)
    rows = _typed_rows(4)
    rows[2][3] = "99.5"  # row 3's amount is not what was posted
    other = write_csv(tmp_path / "other.csv", COLUMNS, rows)
    refused = _verify(other, mapping, results, server.url, "--all")
    assert refused.code == 2 and refused.summary["exit_code"] == 2
    assert "does not belong to" in refused.stderr
    assert "row 3 maps to other content than was posted" in refused.stderr
    missing = _verify(tmp_path / "nowhere.csv", mapping, results, server.url)
    assert missing.code == 2 and "no such file" in missing.summary["error"]
    no_mapping = _verify(data, tmp_path / "none.toml", results, server.url)
    assert no_mapping.code == 2 and "mapping file not found" in no_mapping.summary["error"]
    both = _verify(data, mapping, results, server.url, "--all", "--sample", "2")
    assert both.code == 2


@pytest.mark.e2e
def test_wrong_keys_abort_with_exit_3(tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data, mapping, results = _loaded(tmp_path, server, count=2)
    refused = run_cli("verify", results, "--input", data, "--mapping", mapping, "--host",
                      server.url, LSQ_SECRET_KEY="not-the-key")
    assert refused.code == 3 and "401" in refused.summary["aborted"]
    assert refused.summary["checked"] == 0


@pytest.mark.e2e
def test_an_answer_not_understood_is_unreadable_not_equal(tmp_path: Path,
                                                          serve_handler: Any) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"ID": request.query.get("activityId"), "Values": {}})

    url = serve_handler(answer)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[activity]\nevent = 205\nlead_id_column = "lead"\nkey_column = "key"\n'
                       '[fields]\nmx_Custom_1 = "key"\n')
    data = write_csv(tmp_path / "in.csv", ["key", "lead"], [["K1", ID], ["K2", ID]])
    # Posted rows as a run would have recorded them (no content hash: not compared).
    results = _results(tmp_path / "r.csv", [
        RowOutcome(row, f"K{row}", Status.POSTED, activity_id=f"act-{row}")
        for row in (1, 2)])
    checked = _verify(data, mapping, results, url, "--no-preflight")
    assert checked.code == 1, checked.stderr
    assert (checked.summary["checked"], checked.summary["unreadable"]) == (0, 2)
    assert "answer for activity act-1 is not understood" in checked.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("dialect", ["classic", "captured", "arrival", "pages"])
def test_an_activity_deleted_since_is_missing_not_unreadable_and_asked_once(
        tmp_path: Path, make_sandbox: Any, dialect: str) -> None:
    from bulkpost.sandbox.dialect import parse_dialect

    server = make_sandbox(dialect=parse_dialect(dialect))
    data, mapping, results = _loaded(tmp_path, server, 4)
    gone = read_results(results)[2]["activity_id"]

    async def delete() -> None:  # deleted in LeadSquared since the run
        server.sandbox.store.delete(gone)

    server.call(delete())
    # Read by its lead's page (the run calibrated the look-ups): every page read, not there.
    paged = _verify(data, mapping, results, server.url, "--all")
    assert paged.code == 1, paged.stderr
    assert (paged.summary["checked"], paged.summary["missing"]) == (3, 1)
    # Its lead holds no other: an empty first page proves it gone only where Offset 0 is
    # known to name the first page; else that activity is asked for alone.
    by_page = 4 if dialect == "arrival" else 3
    assert paged.summary["read"]["by_page"] == by_page
    assert paged.summary["read"]["one_per_activity"] == 4 - by_page
    assert f"row 2 (activity {gone}): the activity is missing or deleted in LeadSquared" \
        + (" (not among the 0 activities of event 301 on its lead's pages)"
           if by_page == 4 else ": Activity does not exist (MXUnknownProspectActivityException)"
           ) in paged.stderr
    # No calibration kept, and the row verify would calibrate with edited in the CRM since:
    # look-ups are not trusted, so one call per activity.
    kept_path(results).unlink()
    first = read_results(results)[1]["activity_id"]

    async def edit() -> None:
        server.sandbox.store.alter(first, {"mx_Custom_2": "7"})

    server.call(edit())
    details_before = server.stats()["details"]
    checked = _verify(data, mapping, results, server.url, "--all")
    assert checked.code == 1, checked.stderr
    summary = checked.summary
    assert (summary["checked"], summary["missing"], summary["unreadable"]) == (3, 1, 0)
    assert summary["differ"] == 1
    # "Get Custom Fields of an Activity" answers the same on every retry: asked once each.
    assert server.stats()["details"] - details_before == 4
    assert checked.summary["read"]["one_per_activity"] == 4
    assert "the look-ups cannot be trusted on this account: row 1 was created as activity" \
        in checked.stderr
    assert "2 as sent, 1 differ, 1 missing or deleted, 0 unreadable" in checked.stderr
    assert f"row 2 (activity {gone}): the activity is missing or deleted in LeadSquared" \
        in checked.stderr
    assert "MXUnknownProspectActivityException" in checked.stderr


@pytest.mark.e2e
def test_an_activity_unknown_in_an_older_form_is_unreadable_not_missing(
        tmp_path: Path, serve_handler: Any) -> None:
    """The sandbox once answered an unknown Id with an ``MXInvalidInputException``: no
    evidence says a real account does, so that answer proves nothing missing."""
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"Status": "Error", "ExceptionType": "MXInvalidInputException",
                                  "ExceptionMessage": "Activity does not exist"}, status=500)

    url = serve_handler(answer)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[activity]\nevent = 205\nlead_id_column = "lead"\nkey_column = "key"\n'
                       '[fields]\nmx_Custom_1 = "key"\n')
    data = write_csv(tmp_path / "in.csv", ["key", "lead"], [["K1", ID]])
    results = _results(tmp_path / "r.csv", [RowOutcome(1, "K1", Status.POSTED,
                                                       activity_id="act-1")])
    checked = _verify(data, mapping, results, url, "--no-preflight")
    assert checked.code == 1, checked.stderr
    assert (checked.summary["missing"], checked.summary["unreadable"]) == (0, 1)
    assert "MXInvalidInputException: Activity does not exist" in checked.stderr


# -- reading back by lead page --------------------------------------------------------------
NOTED = TYPED.replace('key_column = "key"\n', 'key_column = "key"\nnote_column = "remarks"\n')
PAGE_DIALECTS = ["classic", "captured", "arrival", "pages"]


def _differences(path: Path) -> set[tuple[int, str, str, str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {(int(r["row"]), r["field"], r["column"], r["sent"], r["stored"])
                for r in csv.DictReader(handle)}


def _same_update(server: Any, activity_id: str) -> None:
    """An update that changes nothing: the update-log dialects list a row with its Id."""
    async def update() -> None:
        store = server.sandbox.store
        entry = store._by_id[activity_id]
        store.update(entry, {"Fields": [{"SchemaName": "mx_Custom_1",
                                         "Value": entry["Fields"]["mx_Custom_1"]}]},
                     time.time())

    server.call(update())


@pytest.mark.e2e
@pytest.mark.parametrize("dialect", PAGE_DIALECTS)
def test_by_lead_page_finds_what_one_per_activity_finds_and_the_note(
        tmp_path: Path, make_sandbox: Any, dialect: str) -> None:
    server = make_sandbox(dialect=parse_dialect(dialect))
    data, mapping, results = _loaded(tmp_path, server, 60, mapping_text=NOTED)  # 12 a lead
    ids = {row: r["activity_id"] for row, r in read_results(results).items()}

    async def edit() -> None:  # what the CRM holds now, behind bulkpost's back
        store = server.sandbox.store
        store.alter(ids[3], {"mx_Custom_2": "7"})
        store.alter(ids[17], {"mx_Custom_8": "Ünïcødé ✓ & row 71"}, note="row 17, edited")
        store.alter(ids[40], note="Unicode & row 40")
        store.delete(ids[22])

    server.call(edit())
    _same_update(server, ids[5])  # 3011 rows: the same Id, no ActivityFields
    before = server.stats()
    paged = _verify(data, mapping, results, server.url, "--all", "--differences",
                    tmp_path / "page.csv")
    after = server.stats()
    assert paged.code == 1, paged.stderr
    summary = paged.summary
    assert (summary["checked"], summary["differ"], summary["missing"],
            summary["unreadable"]) == (59, 3, 1, 0)
    assert summary["read"]["by_page"] == 60 and summary["read"]["one_per_activity"] == 0
    assert after["details"] == before["details"]  # not one activity asked for alone
    page_calls = after["lookups"] - before["lookups"]
    assert page_calls == summary["read"]["page_calls"] + 1 == 6  # the schema, a page a lead
    assert (after["calls"] - before["calls"]) / 60 <= 0.2  # every call the server saw
    assert "read 60 by lead page in" in paged.stderr
    assert f"row 22 (activity {ids[22]}): the activity is missing or deleted" in paged.stderr
    by_page = _differences(tmp_path / "page.csv")
    notes = {d for d in by_page if d[1] == "ActivityNote"}
    assert notes == {(17, "ActivityNote", "remarks", "Ünïcødé ✓ & row 17", "row 17, edited"),
                     (40, "ActivityNote", "remarks", "Ünïcødé ✓ & row 40",
                      "Unicode & row 40")}

    before = server.stats()
    single = _verify(data, mapping, results, server.url, "--all", "--differences",
                     tmp_path / "single.csv", "--one-per-activity")
    assert single.code == 1, single.stderr
    assert single.summary["read"]["one_per_activity"] == 60
    assert single.summary["read"]["by_page"] == 0
    assert server.stats()["details"] - before["details"] == 60
    assert (single.summary["checked"], single.summary["missing"]) == (59, 1)
    assert "read 60 one per activity in 60 calls (--one-per-activity)" in single.stderr
    assert server.stats()["lookups"] - before["lookups"] == 61  # the schema, no page
    # The same field differences, shown the same; the page shows the notes besides.
    assert _differences(tmp_path / "single.csv") == by_page - notes
    assert {d[:2] for d in by_page - notes} == {(3, "mx_Custom_2"), (17, "mx_Custom_8")}


@pytest.mark.e2e
@pytest.mark.parametrize("dialect", PAGE_DIALECTS)
def test_a_lead_of_many_pages_is_read_to_its_end_or_until_all_are_found(
        tmp_path: Path, make_sandbox: Any, dialect: str) -> None:
    server = make_sandbox(dialect=parse_dialect(dialect))
    rows = [[f"V{n}", _lead(1), f"2024-03-01 10:{n:02d}:00", f"{n}.5", "Web", "2024-05-01",
             "2024-05-01 10:00", f"row {n}"] for n in range(1, 41)]  # 40 on one lead
    data, mapping, results = _loaded(tmp_path, server, 40, mapping_text=NOTED, rows=rows)
    ids = {row: r["activity_id"] for row, r in read_results(results).items()}

    async def edit() -> None:  # the oldest activities: on the last page
        server.sandbox.store.alter(ids[2], {"mx_Custom_2": "9"})
        server.sandbox.store.delete(ids[1])

    server.call(edit())
    _same_update(server, ids[30])
    before = server.stats()
    every = _verify(data, mapping, results, server.url, "--all")
    assert every.code == 1, every.stderr
    assert (every.summary["checked"], every.summary["differ"],
            every.summary["missing"]) == (39, 1, 1)
    assert every.summary["read"]["by_page"] == 40
    assert "(not among the 39 activities of event 301 on its lead's pages)" in every.stderr
    # Two pages, and (once, where no run learnt it) how Offset counts: three pages more.
    assert server.stats()["lookups"] - before["lookups"] <= 0.2 * 40
    assert server.stats()["details"] == before["details"]

    # Only the newest five posted: the first page holds them, no other page is read.
    lines = (results.read_text(encoding="utf-8").splitlines())
    newest = tmp_path / "newest.csv"
    newest.write_text("\n".join([lines[0], *(line for line in lines[1:]
                                              if int(line.split(",")[0]) > 35)]) + "\n",
                      encoding="utf-8")
    kept_path(newest).write_bytes(kept_path(results).read_bytes())
    before = server.stats()
    few = _verify(data, mapping, newest, server.url, "--all")
    assert few.code == 0, few.stderr
    assert few.summary["read"]["by_page"] == 5
    assert server.stats()["lookups"] - before["lookups"] == 2  # the schema, one page


@pytest.mark.e2e
@pytest.mark.parametrize("dialect", ["classic,fields=note-only", "captured,fields=note-only"])
def test_pages_without_custom_fields_mean_one_call_per_activity(
        tmp_path: Path, make_sandbox: Any, dialect: str) -> None:
    server = make_sandbox(dialect=parse_dialect(dialect), altered=frozenset({"mx_Custom_2"}))
    data, mapping, results = _loaded(tmp_path, server, 20, *NO_READ_BACK, mapping_text=NOTED)
    run_again = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                        server.url, "--rate", "100/1s")  # posted rows: a sample to calibrate
    assert run_again.code == 0, run_again.stderr
    before = server.stats()
    checked = _verify(data, mapping, results, server.url, "--all")
    assert checked.code == 1, checked.stderr
    read = checked.summary["read"]
    assert (read["by_page"], read["one_per_activity"], read["one_per_activity_calls"]) == (
        0, 20, 20)
    assert read["page_calls"] >= 1  # verify's own calibration: it finds no field on the page
    assert (checked.summary["differ"], checked.summary["differences"]) == (20, 20)
    assert server.stats()["details"] - before["details"] == 20
    assert "read 0 by lead page" not in checked.stderr
    assert "read 20 one per activity in 20 calls (the look-ups cannot be trusted on this " \
        "account: row 1 was created as activity" in checked.stderr
    assert "but the look-up does not show mx_Custom_1" in checked.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("dialect", ["captured", "pages"])
def test_faults_on_the_pages_never_pass_a_difference_for_equal(
        tmp_path: Path, make_sandbox: Any, dialect: str) -> None:
    server = make_sandbox(dialect=parse_dialect(dialect), seed=3)
    data, mapping, results = _loaded(tmp_path, server, 60, mapping_text=NOTED)
    ids = {row: r["activity_id"] for row, r in read_results(results).items()}
    altered = {4, 18, 33, 59}

    async def edit() -> None:
        for row in altered:
            server.sandbox.store.alter(ids[row], {"mx_Custom_2": "7"})

    server.call(edit())
    server.sandbox.faults = {"500-before": 0.3, "html": 0.1, "reset-before": 0.1}
    checked = _verify(data, mapping, results, server.url, "--all", "--differences",
                      tmp_path / "d.csv")
    assert checked.code == 1, checked.stderr
    summary = checked.summary
    assert sum(server.stats()["faults_on"]["lookups"].values()) > 0
    assert summary["checked"] + summary["unreadable"] == 60 and summary["missing"] == 0
    found = {row for row, *_ in _differences(tmp_path / "d.csv")}
    assert found <= altered
    # An altered row is a difference, or unreadable: never counted equal.
    assert len(altered - found) <= summary["unreadable"]
    assert summary["read"]["by_page"] + summary["read"]["one_per_activity"] == 60


@pytest.mark.e2e
@pytest.mark.parametrize("dialect", PAGE_DIALECTS)
def test_without_a_kept_calibration_verify_calibrates_as_a_run_does(
        tmp_path: Path, make_sandbox: Any, dialect: str) -> None:
    server = make_sandbox(dialect=parse_dialect(dialect))
    # --verify-first 0: the run neither reads back nor calibrates, so nothing is kept.
    data, mapping, results = _loaded(tmp_path, server, 30, *NO_READ_BACK, mapping_text=NOTED)
    assert recall_section(results, "calibration") is None
    ids = {row: r["activity_id"] for row, r in read_results(results).items()}

    async def edit() -> None:
        server.sandbox.store.alter(ids[12], note="edited")

    server.call(edit())
    before = server.stats()
    checked = _verify(data, mapping, results, server.url, "--all")
    assert checked.code == 1, checked.stderr
    assert checked.summary["read"]["by_page"] == 30
    assert (checked.summary["differ"], checked.summary["differences"]) == (1, 1)
    assert server.stats()["details"] == before["details"]
    # Calibrating (a page or two) and a page a lead: still far below a call per activity.
    assert (server.stats()["calls"] - before["calls"]) / 30 <= 0.4
    # What verify learnt is not the run's lesson: nothing kept.
    assert recall_section(results, "calibration") is None
