"""``bulkpost init``: the drafted mapping's guesses (plain tables) and the command, run for real
against the sandbox, down to a dry run with 0 invalid rows and a real run's ledger."""

from __future__ import annotations

import csv
import io
import json
import random
import shlex
import tomllib
import uuid
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulkpost.core.mapping import Mapping, parse_mapping
from bulkpost.core.schema import ActivityType, FieldSpec, parse_activity_type
from bulkpost.onboarding.field_matching import NEAR_MATCH, match_fields, similarity
from bulkpost.onboarding.mapping_draft import draft_mapping
from bulkpost.onboarding.sampled_columns import (
    ColumnSample,
    RepeatedKey,
    find_key_column,
    find_lead_columns,
    find_note_column,
    repeated_key_values,
)
from bulkpost.onboarding.sampled_datetimes import DateOrder, detect_datetime, detect_time
from bulkpost.reading.mapping_file import load_mapping
from bulkpost.sandbox.validation import activity_setting
from tests.conftest import ROOT, CliResult, read_results, run_cli, write_csv

PURCHASE = parse_activity_type(activity_setting(310), 310)
ORDER = parse_activity_type(activity_setting(301), 301)
_RANDOM = random.Random(310)


def _lead() -> str:
    return str(uuid.UUID(int=_RANDOM.getrandbits(128), version=4))


def _spec(display: str) -> FieldSpec:
    return FieldSpec("mx_Custom_1", display, "String")


def _loads(text: str) -> Mapping:
    return parse_mapping(tomllib.loads(text), "<draft>")


# -- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("column", "display"), [
    ("amount", "Amount"),
    ("AMOUNT (INR)", "Amount"),
    ("Amount [₹]", "Amount"),
    ("order_no.", "Order No"),
    ("Order #", "Order No"),
    ("OrderNo", "Order No"),
    ("Sales-Channel", "Sales Channel"),
    ("Qty", "Quantity"),
    ("mx_custom_1", "Whatever"),  # the SchemaName itself
])
def test_names_that_differ_in_form_only_match_fully(column: str, display: str) -> None:
    assert similarity(column, _spec(display)) == 1.0


@pytest.mark.parametrize(("column", "display"), [
    ("Delivry Date", "Delivery Date"),
    ("Ammount", "Amount"),
    ("Payment_Mde", "Payment Mode"),
])
def test_near_spellings_match(column: str, display: str) -> None:
    assert NEAR_MATCH <= similarity(column, _spec(display)) < 1.0


@pytest.mark.parametrize(("column", "display"), [
    ("Region", "Reason"),
    ("Customer ID", "Customer No"),
    ("Payment Date", "Payment Mode"),
    ("City", "Qty"),  # short names match only exactly
    ("Date", "Rate"),
])
def test_different_names_do_not_match(column: str, display: str) -> None:
    assert similarity(column, _spec(display)) < NEAR_MATCH


def test_one_field_takes_one_column_and_the_other_is_listed() -> None:
    matches, left = match_fields(["Amount (INR)", "Amount", "Region"], PURCHASE)
    assert [(m.column, m.spec.schema_name) for m in matches] == [("Amount", "mx_Custom_2")]
    assert "matches it better" in left["Amount (INR)"] and '"Amount"' in left["Amount (INR)"]
    assert "no field of type 310 resembles it" in left["Region"]


def test_two_fields_of_one_display_name_are_pointed_out() -> None:
    matches, _ = match_fields(["purpose"], ORDER)
    [match] = matches
    assert (match.spec.schema_name, match.twins) == ("mx_Custom_6", ("mx_Custom_7",))


# -- values --------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "order", "fmt", "written", "ambiguous"), [
    (["2024-03-01 10:00:00", "2024-03-02 11:00"], None, None, None, False),
    (["2024-03-01T10:00:00Z", "2024-03-02T10:00:00+05:30"], None, None, None, False),
    (["13/03/2024 10:00", "01/02/2024 09:30"], None, "%d/%m/%Y %H:%M", "day-first", False),
    (["03/13/2024 10:00:05", "01/02/2024 09:30:00"], None, "%m/%d/%Y %H:%M:%S", "month-first",
     False),
    (["13.03.2024", "1.2.2024"], None, "%d.%m.%Y", "day-first", False),
    (["13-03-24 10:00"], None, "%d-%m-%y %H:%M", "day-first", False),
    (["2024/03/13 10:00"], None, "%Y/%m/%d %H:%M", None, False),
    (["2024-3-1 9:05", "2024-3-13 10:00"], None, "%Y-%m-%d %H:%M", None, False),
    (["03/04/2024 10:00", "01/02/2024 09:30"], None, "%d/%m/%Y %H:%M", "day-first", True),
    (["03/04/2024 10:00"], "month-first", "%m/%d/%Y %H:%M", "month-first", False),
    (["3/4/2024 9:05 AM", "1/2/2024 11:30 PM"], None, "%d/%m/%Y %I:%M %p", "day-first", True),
    (["13/03/2024"], "month-first", "%d/%m/%Y", "day-first", False),  # the values win
])
def test_date_time_formats_come_from_the_values(values: list[str], order: DateOrder | None,
                                                 fmt: str | None, written: str | None,
                                                 ambiguous: bool) -> None:
    guess = detect_datetime(ColumnSample("when", tuple(values)), order)
    assert guess is not None and guess.problem is None
    assert (guess.format, guess.order, guess.ambiguous) == (fmt, written, ambiguous)
    assert guess.unparsed == ()
    assert guess.overruled == (order is not None and written != order)


def test_offsets_make_values_aware() -> None:
    aware = detect_datetime(ColumnSample("t", ("2024-03-01T10:00:00Z", "2024-03-01T10:00+05:30")))
    naive = detect_datetime(ColumnSample("t", ("2024-03-01T10:00:00Z", "2024-03-01 10:00")))
    assert aware is not None and aware.aware
    assert naive is not None and not naive.aware


@pytest.mark.parametrize(("values", "problem"), [
    (["13/03/2024", "03/13/2024"], "contradict each other"),
    (["13/03/2024 10:00", "14/03/2024 10:00:00"], "more than one form"),
    (["2024-03-13", "14/03/2024"], "more than one form"),
])
def test_values_no_format_reads_leave_it_to_the_user(values: list[str], problem: str) -> None:
    guess = detect_datetime(ColumnSample("when", tuple(values)))
    assert guess is not None and guess.format is None
    assert guess.problem is not None and problem in guess.problem


@pytest.mark.parametrize("values", [["12.5", "3"], ["SO-1", "SO-2"], ["abc"], []])
def test_other_values_are_not_date_times(values: list[str]) -> None:
    assert detect_datetime(ColumnSample("x", tuple(values))) is None


def test_impossible_dates_are_counted() -> None:
    guess = detect_datetime(ColumnSample("when", ("13/02/2025 09:30", "31/02/2025 14:15")))
    assert guess is not None and guess.unparsed == ("31/02/2025 14:15",)


def test_only_a_date_that_exists_proves_the_order() -> None:
    # An export's 31 February comes before its first real day above 12: it proves nothing.
    guess = detect_datetime(ColumnSample("when", ("01/09/2025", "31/02/2025", "13/09/2025")))
    assert guess is not None and (guess.order, guess.proof) == ("day-first", "13/09/2025")
    alone = detect_datetime(ColumnSample("when", ("01/09/2025", "31/02/2025", "02/31/2025")))
    assert alone is not None and alone.problem is None and alone.ambiguous
    assert alone.proof == "" and alone.unparsed == ("31/02/2025", "02/31/2025")


def test_leads_by_guid_and_e_mail_not_the_owner_s() -> None:
    found = find_lead_columns([
        ColumnSample("Owner Email", ("a@shop.in", "b@shop.in")),
        ColumnSample("Customer e-mail", ("x@example.com", "y@example.com")),
        ColumnSample("Order GUID", (_lead(), _lead())),
        ColumnSample("Lead", (_lead(), _lead())),
    ])
    assert (found.id_column, found.email_column) == ("Lead", "Customer e-mail")
    assert set(found.others) == {"Owner Email", "Order GUID"}


@pytest.mark.parametrize(("columns", "note"), [
    ({"Remarks": ("ok", "no"), "City": ("Pune", "Goa")}, "Remarks"),
    ({"comment_text": ("ok",), "Activity notes": ("x",)}, "comment_text"),
    ({"txt": ("Called twice, no answer; will try again on Monday morning",
              "Asked for the catalogue and a call back after the holidays")}, "txt"),
    ({"City": ("Pune", "Goa")}, None),
])
def test_note_column(columns: dict[str, tuple[str, ...]], note: str | None) -> None:
    assert find_note_column([ColumnSample(n, v) for n, v in columns.items()]) == note


@pytest.mark.parametrize(("columns", "key"), [
    ({"Order No": ("A1", "A2"), "source_id": ("S1", "S2")}, "source_id"),
    ({"Order No": ("A1", "A2"), "City": ("Pune", "Goa")}, "Order No"),
    ({"source_id": ("S1", "S1")}, None),  # not unique
    ({"source_id": ("S1", "")}, None),  # not filled
    ({"City": ("Pune", "Goa")}, None),  # no id in its name
])
def test_key_column(columns: dict[str, tuple[str, ...]], key: str | None) -> None:
    assert find_key_column([ColumnSample(n, v) for n, v in columns.items()]) == key


@pytest.mark.parametrize(("values", "fmt"), [
    (["2:05 PM", "11:30 am", "12:10 AM"], "%I:%M %p"),
    (["02:05:33 pm", "11:30:00 AM"], "%I:%M:%S %p"),
    (["2:05PM", "11:30am"], "%I:%M%p"),
    (["14:05", "9:30"], "%H:%M"),
    (["14:05:33", "09:30:00", ""], "%H:%M:%S"),
])
def test_times_of_day_get_a_format_from_the_values(values: list[str], fmt: str) -> None:
    guess = detect_time(ColumnSample("Call Time", tuple(values)))
    assert guess is not None and (guess.format, guess.problem, guess.unparsed) == (fmt, None, ())


def test_times_of_day_in_two_forms_or_out_of_range_are_said() -> None:
    mixed = detect_time(ColumnSample("t", ("2:05 PM", "14:05")))
    assert mixed is not None and mixed.format is None
    assert mixed.problem is not None and "more than one form" in mixed.problem
    wrong = detect_time(ColumnSample("t", ("14:05", "25:10")))
    assert wrong is not None and (wrong.format, wrong.unparsed) == ("%H:%M", ("25:10",))


@pytest.mark.parametrize("values", [["13/03/2024"], ["2024-03-13 10:00"], ["12.5"], ["SO-1"],
                                    []])
def test_other_values_are_not_times_of_day(values: list[str]) -> None:
    assert detect_time(ColumnSample("x", tuple(values))) is None


def test_a_typed_time_column_is_a_time_of_day_not_a_date_time() -> None:
    typed = ColumnSample("at", ("14:05:33", "09:00:00"), typed=True)
    assert detect_datetime(typed) is None
    guess = detect_time(typed)
    assert guess is not None and guess.format is None and guess.problem is None

def test_a_key_column_left_out_for_a_repeated_value_is_named_with_its_rows() -> None:
    samples = [ColumnSample("Call ID", ("C-1", "C-2", "C-4", "C-3", "C-2", "C-4", "C-2"),
                            numbers=(1, 2, 3, 5, 6, 7, 8)),
               ColumnSample("source_id", ("S1", "")),  # not filled: not a candidate
               ColumnSample("City", ("Pune", "Pune"))]  # not named like a key
    assert repeated_key_values(samples) == [RepeatedKey("Call ID", "C-2", (2, 6, 8), 3)]
    assert repeated_key_values(samples)[0].describe() == '"C-2" is in rows 2, 6, 8 of "Call ID"'
    many = RepeatedKey("id", "7", (1, 2, 3, 4, 5), 9)
    assert many.describe() == '"7" is in rows 1, 2, 3, 4, 5 and 4 more of "id"'


# -- the draft -----------------------------------------------------------------------------

def _export(lead: tuple[str, ...] = (),
            when: tuple[str, ...] = ("13/03/2024 10:00", "14/03/2024 11:00")
            ) -> list[ColumnSample]:
    lead = lead or tuple(_lead() for _ in when)
    count = len(when)
    return [ColumnSample("source_id", tuple(f"S{n}" for n in range(count))),
            ColumnSample("Lead", lead),
            ColumnSample("When", when),
            ColumnSample("order_no.", tuple(f"A{n}" for n in range(count))),
            ColumnSample("AMOUNT (INR)", ("12.50",) * count),
            ColumnSample("Chanel", ("web",) * count),
            ColumnSample("Region", ("North",) * count),
            ColumnSample("Notes", ("called",) * count)]


def test_the_draft_loads_as_a_mapping_with_every_guess() -> None:
    draft = draft_mapping(_export(), 301, ORDER, source="x.csv", rows=2,
                          timezone="Asia/Kolkata")
    mapping = _loads(draft.text)
    assert (mapping.event, mapping.lead_id_column, mapping.datetime_column,
            mapping.datetime_format, mapping.note_column, mapping.key_column) == (
        301, "Lead", "When", "%d/%m/%Y %H:%M", "Notes", "source_id")
    assert str(mapping.timezone) == "Asia/Kolkata"
    assert mapping.fields == (("mx_Custom_1", "order_no."), ("mx_Custom_2", "AMOUNT (INR)"),
                              ("mx_Custom_3", "Chanel"))
    assert '#   "Region": no field of type 301 resembles it' in draft.text
    assert "Channel (Dropdown): a near spelling" in draft.text
    assert not any("!!!" in line for line in draft.lines if "time zone" in line)


def test_without_the_type_the_columns_are_comments() -> None:
    draft = draft_mapping(_export(), 301, None, source="x.csv", rows=1)
    mapping = _loads(draft.text)
    assert mapping.fields == () and mapping.lead_id_column == "Lead"
    for column in ("order_no.", "AMOUNT (INR)", "Chanel", "Region"):
        assert f"#   {column!r}".replace("'", '"') in draft.text
    assert any("needs the keys" in w for w in draft.warnings)
    # Naive date-times: a commented time zone to confirm, and a warning.
    assert '# timezone = "Asia/Kolkata"' in draft.text
    assert any("no UTC offset" in w for w in draft.warnings)


def test_an_ambiguous_order_is_loud_in_the_file_and_warned() -> None:
    draft = draft_mapping(_export(when=("03/04/2024 10:00", "05/06/2024 11:00")), 301, None,
                          source="x.csv", rows=2)
    assert _loads(draft.text).datetime_format == "%d/%m/%Y %H:%M"
    assert "# !!! CONFIRM: no sampled value tells day-first from month-first" in draft.text
    assert '"%m/%d/%Y %H:%M"' in draft.text and "--month-first" in draft.text
    assert any("tells day-first from month-first" in w for w in draft.warnings)


def test_contradicting_dates_leave_the_format_to_the_user() -> None:
    draft = draft_mapping(_export(when=("13/03/2024", "03/13/2024")), 301, None,
                          source="x.csv", rows=2)
    mapping = _loads(draft.text)
    assert (mapping.datetime_column, mapping.datetime_format) == ("When", None)
    assert "# !!! no datetime_format written: the values contradict each other" in draft.text
    assert any("contradict" in w for w in draft.warnings)


def test_a_mandatory_field_without_a_column_is_loud() -> None:
    samples = [s for s in _export() if s.name != "order_no."]
    draft = draft_mapping(samples, 301, ORDER, source="x.csv", rows=1)
    assert "# !!! MANDATORY FIELD WITH NO COLUMN: mx_Custom_1 (Order No)" in draft.text
    assert any("mandatory" in w and "mx_Custom_1" in w for w in draft.warnings)


def test_sampled_values_a_field_refuses_are_pointed_out() -> None:
    samples = [ColumnSample("lead", (_lead(),)), ColumnSample("Amount", ("12,5",))]
    draft = draft_mapping(samples, 301, ORDER, source="x.csv", rows=1)
    assert '"12,5" is not a number' in draft.text
    assert any("would be invalid" in w for w in draft.warnings)


def test_no_lead_column_is_said_and_the_mapping_needs_an_edit() -> None:
    draft = draft_mapping([ColumnSample("City", ("Pune",))], 201, None, source="x.csv", rows=1)
    assert "no column of lead GUIDs or e-mail addresses" in draft.text
    with pytest.raises(Exception, match="lead_id_column"):
        _loads(draft.text)


@pytest.mark.parametrize("name", ['say "hi"', "back\\slash", "two\nlines", "tab\there",
                                  "del\x7f", "Ünïcødé ✓"])
def test_any_column_name_is_written_as_valid_toml(name: str) -> None:
    samples = [ColumnSample("Lead", (_lead(),)), ColumnSample(name, ("x",))]
    activity = ActivityType(201, "t", {"mx_Custom_1": FieldSpec("mx_Custom_1", name, "String")})
    mapping = _loads(draft_mapping(samples, 201, activity, source=name, rows=1).text)
    assert mapping.fields == (("mx_Custom_1", name),)


def _calls(dates: tuple[str, ...], times: tuple[str, ...],
           durations: tuple[str, ...] = ()) -> list[ColumnSample]:
    """A counsellor call log: a date column, the time of day beside it, a duration."""
    count = len(dates)
    return [ColumnSample("Call ID", tuple(f"C{n}" for n in range(count))),
            ColumnSample("Lead Email", tuple(f"lead{n}@example.com" for n in range(count))),
            ColumnSample("Call Date", dates),
            ColumnSample("Call Time", times),
            ColumnSample("Duration", durations or ("00:05:12",) * count),
            ColumnSample("Notes", ("बात हुई",) * count)]


def test_a_date_and_the_time_of_day_beside_it_are_mapped_together() -> None:
    draft = draft_mapping(_calls(("13/03/2024", "01/04/2024"), ("2:05 PM", "11:40 AM")), 201,
                          None, source="calls.csv", rows=2, timezone="Asia/Kolkata")
    mapping = _loads(draft.text)
    assert (mapping.datetime_column, mapping.date_column, mapping.date_format,
            mapping.time_column, mapping.time_format) == (
        None, "Call Date", "%d/%m/%Y", "Call Time", "%I:%M %p")
    assert (mapping.lead_email_column, mapping.note_column, mapping.key_column) == (
        "Lead Email", "Notes", "Call ID")
    # The duration looks like a time of day too, but is not the one beside the date.
    assert '#   "Duration": also holds times of day' in draft.text
    assert 'date "Call Date" (%d/%m/%Y) and time "Call Time" (%I:%M %p)' in draft.found
    assert not any("midnight" in w for w in draft.warnings)


def test_a_date_with_no_time_of_day_is_loud_every_activity_lands_at_midnight() -> None:
    samples = [s for s in _calls(("13/03/2024", "01/04/2024"), ("", ""))
               if s.name not in ("Call Time", "Duration")]
    draft = draft_mapping(samples, 201, None, source="calls.csv", rows=2)
    mapping = _loads(draft.text)
    assert (mapping.datetime_column, mapping.datetime_format) == ("Call Date", "%d/%m/%Y")
    assert "# !!! the values of \"Call Date\" have no time of day" in draft.text
    assert "every activity will land at midnight" in draft.text
    assert any("every activity will land at midnight" in w for w in draft.warnings)


def test_sampled_empty_date_and_time_cells_are_loud() -> None:
    draft = draft_mapping(_calls(("13/03/2024", "", "14/03/2024"), ("2:05 PM", "", "")), 201,
                          None, source="calls.csv", rows=3, timezone="Asia/Kolkata")
    text = draft.text
    assert '# !!! 1 sampled cell(s) of "Call Date" are empty: their rows will be invalid' in text
    assert 'add empty_datetime = "now"' in text
    # Row 2's time counts with its date: an empty time with no date changes nothing.
    assert '# !!! 1 sampled cell(s) of "Call Time" are empty beside a date: their rows will be' \
        in text
    assert 'add empty_time = "midnight"' in text
    assert sum("are empty" in w for w in draft.warnings) == 2
    # The opt-ins are the user's: the draft does not write them.
    assert (_loads(text).empty_time, _loads(text).empty_datetime) == (None, None)


def test_an_empty_date_time_cell_is_loud_too() -> None:
    draft = draft_mapping(_export(when=("13/03/2024 10:00", "  ")), 301, None, source="x.csv",
                          rows=2)
    assert '# !!! 1 sampled cell(s) of "When" are empty: their rows will be invalid' \
        in draft.text


# -- the command, for real -----------------------------------------------------------------

ORDERS_HEADER = ["source_id", "Lead", "Order date", "ORDER_NO.", "Amount (INR)", "qty",
                 "Sales-channel", "Delivry Date", "Region", "Notes"]


def _orders(path: Path, dates: list[str], lead_column: list[str] | None = None) -> Path:
    leads = lead_column or [_lead() for _ in dates]
    channels = ["web", "Phone", "STORE", "Partner"]
    rows = [[f"S{n}", leads[n], when, f"A-{n:04d}", f"{100 + n}.50", str(1 + n % 3),
             channels[n % 4], f"2024-04-{1 + n % 28:02d}", "North", f"called, {n}"]
            for n, when in enumerate(dates)]
    return write_csv(path, ORDERS_HEADER, rows)


def _init(*args: Any, **env: str) -> CliResult:
    return run_cli("init", *map(str, args), **env)


def _drafted(path: Path, dates: list[str], url: str,
             zone: str) -> tuple[Path, Path, CliResult]:
    """An orders export of these dates, and the mapping init drafted for it as type 310."""
    data = _orders(path, dates)
    output = path.with_name("mapping.toml")
    done = _init(data, "--event", "310", "--output", output, "--host", url, "--timezone", zone)
    assert done.code == 0, done.stderr
    return data, output, done


@pytest.mark.e2e
def test_init_then_a_dry_run_and_a_real_run_post_the_right_fields(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    dates = [f"{1 + n % 28:02d}/03/2024 {9 + n % 8:02d}:{n % 60:02d}" for n in range(30)]
    data, output, done = _drafted(tmp_path / "orders.csv", dates, server.url, "Asia/Kolkata")
    mapping = load_mapping(output)
    assert (mapping.lead_id_column, mapping.datetime_column, mapping.datetime_format,
            mapping.note_column, mapping.key_column) == (
        "Lead", "Order date", "%d/%m/%Y %H:%M", "Notes", "source_id")
    assert dict(mapping.fields) == {
        "mx_Custom_1": "ORDER_NO.", "mx_Custom_2": "Amount (INR)", "mx_Custom_3": "qty",
        "mx_Custom_4": "Sales-channel", "mx_Custom_5": "Delivry Date"}
    text = output.read_text()
    assert '#   "Region": no field of type 310 resembles it' in text
    assert "Delivery Date (Date): a near spelling" in text
    assert "mx_Custom_6 (Payment Mode)" in text  # a field with no column is listed
    command = f"bulkpost run {data} --mapping {output} --results results.csv --dry-run " \
              f"--host {server.url}"
    assert command in done.stdout

    results = tmp_path / "results.csv"
    dry = run_cli("run", data, "--mapping", output, "--results", results, "--dry-run",
                  "--host", server.url, "--log-format", "json")
    assert dry.code == 0, dry.stderr
    assert (dry.summary["to_send"], dry.summary["invalid"]) == (30, 0)
    assert "dry run: 30 rows to send, 0 invalid" in dry.stderr

    real = run_cli("run", data, "--mapping", output, "--results", results,
                   "--host", server.url, "--rate", "100/1s", "--log-format", "json")
    assert real.code == 0, real.stderr
    assert real.summary["posted"] == 30
    by_order = {e["Fields"]["mx_Custom_1"]: e for e in server.ledger()}
    first = by_order["A-0000"]
    assert first["ActivityEvent"] == 310
    assert first["Fields"] == {"mx_Custom_1": "A-0000", "mx_Custom_2": "100.50",
                               "mx_Custom_3": "1", "mx_Custom_4": "Web",
                               "mx_Custom_5": "2024-04-01"}
    assert first["ActivityDateTime"] == "2024-03-01 03:30:00"  # 09:00 Kolkata
    assert first["ActivityNote"] == "called, 0"
    assert {r["status"] for r in read_results(results).values()} == {"posted"}


@pytest.mark.e2e
def test_the_sample_export_drafts_a_mapping_with_no_invalid_row(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data = ROOT / "samples" / "first-load" / "export.csv"
    output = tmp_path / "mapping.toml"
    done = _init(data, "--event", "310", "--output", output, "--host", server.url)
    assert done.code == 0, done.stderr
    assert "no UTC offset" in done.stderr  # the time zone is the user's to confirm
    assert '# timezone = "' in output.read_text()
    dry = run_cli("run", data, "--mapping", output, "--results", tmp_path / "r.csv",
                  "--dry-run", "--host", server.url, "--log-format", "json")
    assert dry.code == 0, dry.stderr
    assert (dry.summary["to_send"], dry.summary["invalid"]) == (40, 0)


def test_month_first_dates_are_read_month_first(tmp_path: Path) -> None:
    data = _orders(tmp_path / "us.csv", ["03/13/2024 09:00", "04/02/2024 10:30"])
    done = _init(data, "--event", "310", "--output", tmp_path / "m.toml",
                 LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert done.code == 0, done.stderr
    assert load_mapping(tmp_path / "m.toml").datetime_format == "%m/%d/%Y %H:%M"
    assert "day-first from month-first" not in done.stderr


@pytest.mark.e2e
def test_a_month_first_export_drafts_a_mapping_whose_dry_run_finds_no_invalid_row(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    # A US export: month first, which only the values past the 12th tell.
    dates = [f"{1 + n % 12:02d}/{1 + n % 28:02d}/2024 {1 + n % 12}:{n % 60:02d} "
             f"{'AM' if n % 2 else 'PM'}" for n in range(30)]
    data, output, _ = _drafted(tmp_path / "us.csv", dates, server.url, "America/New_York")
    assert load_mapping(output).datetime_format == "%m/%d/%Y %I:%M %p"
    dry = run_cli("run", data, "--mapping", output, "--results", tmp_path / "r.csv",
                  "--dry-run", "--host", server.url, "--log-format", "json")
    assert dry.code == 0, dry.stderr
    assert (dry.summary["to_send"], dry.summary["invalid"]) == (30, 0)
    real = run_cli("run", data, "--mapping", output, "--results", tmp_path / "r.csv",
                   "--host", server.url, "--rate", "100/1s", "--log-format", "json")
    assert real.code == 0 and real.summary["posted"] == 30, real.stderr
    by_order = {e["Fields"]["mx_Custom_1"]: e for e in server.ledger()}
    # Row 13, "02/14/2024 2:13 AM" in New York (EST), is sent in UTC, five hours later.
    assert by_order["A-0013"]["ActivityDateTime"] == "2024-02-14 07:13:00"


@pytest.mark.parametrize(("flag", "fmt", "warned"), [
    ((), "%d/%m/%Y %H:%M", True),
    (("--month-first",), "%m/%d/%Y %H:%M", False),
    (("--day-first",), "%d/%m/%Y %H:%M", False),
])
def test_ambiguous_dates_are_warned_unless_decided(tmp_path: Path, flag: tuple[str, ...],
                                                   fmt: str, warned: bool) -> None:
    data = _orders(tmp_path / "in.csv", ["03/04/2024 09:00", "05/06/2024 10:30"])
    output = tmp_path / "m.toml"
    done = _init(data, "--event", "310", "--output", output, *flag,
                 LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert done.code == 0, done.stderr
    assert load_mapping(output).datetime_format == fmt
    assert ("day-first from month-first" in done.stderr) == warned
    assert ("# !!! CONFIRM: no sampled value" in output.read_text()) == warned


def test_an_e_mail_lead_column(tmp_path: Path) -> None:
    emails = [f"buyer{n}@example.com" for n in range(3)]
    data = _orders(tmp_path / "in.csv", ["2024-03-01 10:00"] * 3, lead_column=emails)
    done = _init(data, "--event", "310", "--output", tmp_path / "m.toml",
                 LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert done.code == 0, done.stderr
    mapping = load_mapping(tmp_path / "m.toml")
    assert (mapping.lead_id_column, mapping.lead_email_column) == (None, "Lead")
    assert mapping.datetime_format is None  # ISO: read without a format


def test_without_keys_it_writes_what_it_can_and_says_the_fields_need_them(
        tmp_path: Path) -> None:
    data = _orders(tmp_path / "in.csv", ["13/03/2024 09:00"])
    output = tmp_path / "m.toml"
    done = _init(data, "--event", "310", "--output", output,
                 LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert done.code == 0, done.stderr
    mapping = load_mapping(output)
    assert (mapping.event, mapping.lead_id_column, mapping.datetime_column,
            mapping.note_column, mapping.fields) == (310, "Lead", "Order date", "Notes", ())
    text = output.read_text()
    for column in ("ORDER_NO.", "Amount (INR)", "qty", "Sales-channel", "Region"):
        assert f'#   "{column}"' in text
    assert "needs the keys" in done.stderr
    assert f"--mapping {output} --results results.csv --dry-run" in done.stdout
    assert "--host" not in done.stdout


def test_it_never_overwrites_without_force(tmp_path: Path) -> None:
    data = _orders(tmp_path / "in.csv", ["13/03/2024 09:00"])
    output = tmp_path / "m.toml"
    output.write_text("# mine\n")
    refused = _init(data, "--event", "310", "--output", output,
                    LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert refused.code == 2
    assert f"{output} exists: give --force to overwrite it" in refused.stderr
    assert output.read_text() == "# mine\n"
    forced = _init(data, "--event", "310", "--output", output, "--force",
                   LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert forced.code == 0, forced.stderr
    assert load_mapping(output).lead_id_column == "Lead"
    into_input = _init(data, "--event", "310", "--output", data, "--force",
                       LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert into_input.code == 2 and "is the input" in into_input.stderr


def test_an_excel_export_reads_with_its_encoding_and_delimiter(tmp_path: Path) -> None:
    # docs/tutorial/visits.csv: cp1252, semicolons, day-first, one impossible date.
    output = tmp_path / "m.toml"
    done = _init(ROOT / "docs" / "tutorial" / "visits.csv", "--event", "201", "--output",
                 output, "--encoding", "cp1252", LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert done.code == 0, done.stderr
    mapping = load_mapping(output)
    assert (mapping.lead_id_column, mapping.datetime_column, mapping.datetime_format,
            mapping.note_column, mapping.key_column) == (
        "lead", "when", "%d/%m/%Y %H:%M", "note", "visit_id")
    # Rows that will be invalid are said: an impossible date, a lead id cut short.
    assert '"31/02/2025 14:15"' in done.stderr
    assert 'are not GUIDs, e.g. "d9090b89-0655-4096-8f1a"' in done.stderr
    assert "--encoding cp1252" in done.stdout


def test_bytes_that_do_not_decode_are_said_with_the_init_to_run_instead(
        tmp_path: Path) -> None:
    # The tutorial's cp1252 export read as UTF-8: refused, naming where and what reads it.
    tutorial = ROOT / "docs" / "tutorial" / "visits.csv"
    output = tmp_path / "m.toml"
    done = _init(tutorial, "--event", "201", "--output", output, "--timezone",
                 "Asia/Kolkata", LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert done.code == 2 and not output.exists()
    assert f"{tutorial} does not decode as utf-8 at row " in done.stderr
    assert "Nothing was written" in done.stderr
    again = shlex.join(["bulkpost", "init", str(tutorial), "--event", "201", "--output",
                        str(output), "--encoding", "cp1252", "--timezone", "Asia/Kolkata"])
    assert done.stderr.rstrip().endswith(again)
    # The command it prints reads it.
    fixed = _init(*shlex.split(again)[2:], LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert fixed.code == 0, fixed.stderr
    # Bytes cp1252 cannot read: latin-1, said honestly; UTF-8 read as cp1252: UTF-8.
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"key,note\nA1,caf\xe9\x81\n")
    latin = _init(odd, "--event", "201", "--output", tmp_path / "odd.toml", "--encoding",
                  "cp1252", LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert latin.code == 2 and "the file may be in another encoding" in latin.stderr
    assert latin.stderr.rstrip().endswith("--encoding latin-1")


@pytest.mark.parametrize(("data", "tried", "advised", "words"), [
    (b"caf\xc3\xa9", "cp1252", None, ""),                     # decodes: no advice asked
    (b"caf\xc3\xa9 \xe2\x80\x9d", "cp1252", "utf-8", "decode as UTF-8"),  # 0x9D
    (b"\x93quoted\x94 caf\xe9", "utf-8", "cp1252", "0x93 (\u201c), 0x94 (\u201d)"),
    (b"caf\xe9 ", "utf-8", "cp1252", "could be cp1252 or latin-1"),
    (b"caf\xe9\x81 ", "utf-8", "latin-1", "may be in another encoding"),
    (b"caf\xe9\x81", "latin-1", None, ""),
    (b"caf\xc3", "utf-8", None, ""),                           # a character cut at the end
])
def test_the_encoding_advised_for_a_sample(data: bytes, tried: str, advised: str | None,
                                           words: str) -> None:
    from bulkpost.reading.encodings import advise, first_undecodable

    if first_undecodable(data, tried, complete=False) is None:
        assert advised is None
        return
    advice = advise(data, tried, complete=False)
    assert (advice.encoding if advice else None) == advised
    assert advice is None or words in advice.reason


def test_parquet_timestamps_need_no_format(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "lead": [_lead(), _lead()],
        "at": pa.array([datetime(2024, 1, 1, 5, 30, tzinfo=UTC)] * 2, pa.timestamp("ms", "UTC")),
        "tags": pa.array([["a"], ["b"]], pa.list_(pa.string())),
    }), path)
    output = tmp_path / "m.toml"
    done = _init(path, "--event", "201", "--output", output, LSQ_ACCESS_KEY="",
                 LSQ_SECRET_KEY="")
    assert done.code == 0, done.stderr
    mapping = load_mapping(output)
    assert (mapping.datetime_column, mapping.datetime_format) == ("at", None)
    text = output.read_text()
    assert "carries its UTC offset" in text and "timezone" not in done.stderr
    assert '#   "tags": its type cannot be sent as a field value' in text


@pytest.mark.e2e
def test_an_unknown_event_code_is_refused(tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data = _orders(tmp_path / "in.csv", ["13/03/2024 09:00"])
    done = _init(data, "--event", "5", "--output", tmp_path / "m.toml", "--host", server.url)
    assert done.code == 2 and "activity type 5: not found in the account" in done.stderr
    assert not (tmp_path / "m.toml").exists()


def _init_without_host(tmp_path: Path, urls: dict[str, str]) -> CliResult:
    """init with the keys and no host, sandboxes standing in for the regions in ``urls``;
    the fields matched prove the type was read from the keys' host."""
    from bulkpost.onboarding.region import URLS_ENV

    data = _orders(tmp_path / "in.csv", ["13/03/2024 09:00", "14/03/2024 10:00"])
    output = tmp_path / "m.toml"
    done = _init(data, "--event", "310", "--output", output,
                 **{URLS_ENV: json.dumps(urls), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                    "LSQ_HOST": ""})
    assert done.code == 0, done.stderr
    assert dict(load_mapping(output).fields)["mx_Custom_1"] == "ORDER_NO."
    return done


@pytest.mark.e2e
def test_with_keys_and_no_host_the_account_s_region_is_found(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()  # plays api.leadsquared.com, the keys' home
    done = _init_without_host(tmp_path, {"api.leadsquared.com": server.url})
    assert "--host" not in done.stdout  # the run finds the host as init did


@pytest.mark.e2e
def test_a_cached_host_that_refuses_the_keys_is_found_again(
        tmp_path: Path, make_sandbox: Any) -> None:
    from bulkpost.onboarding.region import HostCache
    from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY

    singapore, mumbai = "api.leadsquared.com", "api-in21.leadsquared.com"
    stale = make_sandbox(region=singapore, home_region=mumbai)  # refuses, naming Mumbai
    home = make_sandbox(region=mumbai)
    cache = HostCache(tmp_path / "cache" / "bulkpost" / "hosts.json")
    cache.put(DEFAULT_ACCESS_KEY, singapore)
    _init_without_host(tmp_path, {singapore: stale.url, mumbai: home.url})
    assert cache.get(DEFAULT_ACCESS_KEY) == mumbai


# -- a call log: a date column and a time-of-day column -------------------------------------

CALLS_HEADER = ["Call ID", "Lead Email", "Call Date", "Call Time", "Counsellor", "Duration",
                "Notes"]


def _call_log(path: Path, count: int) -> tuple[Path, dict[str, str]]:
    """A counsellor call log as Excel writes it in India: UTF-8 with a byte-order mark,
    semicolons, day-first dates, 12-hour times, leads by e-mail, notes in Devanagari. Also
    each lead's UTC date-time, computed here with the standard library alone."""
    rows, sent = [], {}
    kolkata = ZoneInfo("Asia/Kolkata")
    for n in range(count):
        day = date(2023, 1 + n % 12, 1 + n % 28)
        hour, minute = 1 + n % 12, (7 * n) % 60
        half = "AM" if n % 2 else "PM"
        email = f"student{n}@example.com"
        rows.append([f"CL-{n:05d}", email, f"{day:%d/%m/%Y}", f"{hour}:{minute:02d} {half}",
                     "Priya", f"00:{n % 60:02d}:12", f"छात्र से बात हुई, कॉल {n}"])
        clock = time(hour % 12 + (12 if half == "PM" else 0), minute)
        local = datetime.combine(day, clock, kolkata)
        sent[email] = f"{local.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M:%S}"
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=";").writerows([CALLS_HEADER, *rows])
    path.write_bytes(b"\xef\xbb\xbf" + text.getvalue().encode("utf-8"))
    return path, sent


@pytest.mark.e2e
def test_a_call_log_with_a_date_and_a_time_column_posts_each_call_at_its_time(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data, sent = _call_log(tmp_path / "calls.csv", 40)
    output = tmp_path / "mapping.toml"
    done = _init(data, "--event", "201", "--output", output, "--host", server.url,
                 "--timezone", "Asia/Kolkata")
    assert done.code == 0, done.stderr
    mapping = load_mapping(output)
    assert (mapping.lead_email_column, mapping.datetime_column, mapping.date_column,
            mapping.date_format, mapping.time_column, mapping.time_format,
            mapping.note_column, mapping.key_column, str(mapping.timezone)) == (
        "Lead Email", None, "Call Date", "%d/%m/%Y", "Call Time", "%I:%M %p", "Notes",
        "Call ID", "Asia/Kolkata")
    assert "midnight" not in done.stderr
    assert "Duration" not in mapping.used_columns()  # like a time of day, not beside the date

    results = tmp_path / "results.csv"
    dry = run_cli("validate", data, "--mapping", output, "--results", results,
                  "--host", server.url, "--log-format", "json")
    assert dry.code == 0, dry.stderr
    assert (dry.summary["to_send"], dry.summary["invalid"]) == (40, 0)
    real = run_cli("run", data, "--mapping", output, "--results", results,
                   "--host", server.url, "--rate", "100/1s", "--log-format", "json")
    assert real.code == 0 and real.summary["posted"] == 40, real.stderr
    by_lead = {e["EmailAddress"]: e for e in server.ledger()}
    assert {lead: e["ActivityDateTime"] for lead, e in by_lead.items()} == sent
    # By hand: "01/01/2023" "1:00 PM" in Kolkata is 07:30 UTC; "12/12/2023" "12:17 AM" is
    # seventeen minutes past midnight, so the day before in UTC.
    assert by_lead["student0@example.com"]["ActivityDateTime"] == "2023-01-01 07:30:00"
    assert by_lead["student11@example.com"]["ActivityDateTime"] == "2023-12-11 18:47:00"
    assert by_lead["student3@example.com"]["ActivityNote"] == "छात्र से बात हुई, कॉल 3"

    # Verifying the run reads the calls back and finds the date-times it sent.
    check = run_cli("verify", results, "--input", data, "--mapping", output,
                    "--host", server.url)
    assert check.code == 0, check.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("clock_type", ["time64", "string"])
def test_parquet_dates_with_a_time_column_post_each_row_at_its_time(
        tmp_path: Path, make_sandbox: Any, clock_type: str) -> None:
    server = make_sandbox()
    leads = [_lead() for _ in range(3)]
    days = [date(2024, 3, 13), date(2024, 12, 31), date(2024, 1, 1)]
    clocks = [time(14, 5, 33), time(23, 59, 59, 500000), time(0, 10)]
    if clock_type == "time64":
        clock_column = pa.array(clocks, pa.time64("us"))
    else:
        clock_column = pa.array(["2:05:33 PM", "11:59:59 PM", "12:10:00 AM"], pa.string())
    path = tmp_path / "calls.parquet"
    pq.write_table(pa.table({"lead": leads, "call_date": pa.array(days, pa.date32()),
                             "call_time": clock_column}), path)
    output = tmp_path / "mapping.toml"
    done = _init(path, "--event", "201", "--output", output, "--host", server.url,
                 "--timezone", "Asia/Kolkata")
    assert done.code == 0, done.stderr
    mapping = load_mapping(output)
    assert (mapping.date_column, mapping.date_format, mapping.time_column,
            mapping.time_format) == (
        "call_date", None, "call_time", None if clock_type == "time64" else "%I:%M:%S %p")
    dry = run_cli("run", path, "--mapping", output, "--results", tmp_path / "r.csv",
                  "--dry-run", "--host", server.url, "--log-format", "json")
    assert (dry.summary["to_send"], dry.summary["invalid"]) == (3, 0), dry.stderr
    real = run_cli("run", path, "--mapping", output, "--results", tmp_path / "r.csv",
                   "--host", server.url, "--log-format", "json")
    assert real.code == 0 and real.summary["posted"] == 3, real.stderr
    by_lead = {e["RelatedProspectId"]: e["ActivityDateTime"] for e in server.ledger()}
    # Kolkata is UTC+05:30; the fraction of a second is dropped.
    assert by_lead == {leads[0]: "2024-03-13 08:35:33", leads[1]: "2024-12-31 18:29:59",
                       leads[2]: "2023-12-31 18:40:00"}


def test_a_date_alone_is_warned_to_land_at_midnight(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "calls.csv", ["Lead Email", "Call Date"],
                     [[f"s{n}@example.com", f"1{n}/03/2024"] for n in range(3)])
    output = tmp_path / "m.toml"
    done = _init(data, "--event", "201", "--output", output, "--timezone", "Asia/Kolkata",
                 LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert done.code == 0, done.stderr
    assert "every activity will land at midnight" in done.stderr
    assert "# !!! the values of \"Call Date\" have no time of day" in output.read_text()

@pytest.mark.e2e
def test_init_says_why_an_id_column_that_repeats_is_not_the_key(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data = _orders(tmp_path / "calls.csv", [f"0{1 + n % 9}/03/2024 10:00" for n in range(12)])
    rows = list(csv.reader(data.open(encoding="utf-8", newline="")))
    rows[9][0] = rows[3][0]  # rows 3 and 9 share source_id S2: two calls under one id
    write_csv(data, rows[0], rows[1:])
    output = tmp_path / "mapping.toml"
    done = _init(data, "--event", "310", "--output", output, "--host", server.url)
    assert done.code == 0, done.stderr
    assert load_mapping(output).key_column != "source_id"
    assert ('bulkpost: warning: "source_id" is not the key column: "S2" is in rows 3, 9 of '
            '"source_id" sampled') in done.stderr
    text = " ".join(line.lstrip("# !") for line in output.read_text().splitlines())
    assert ('"source_id" is not the key_column: "S2" is in rows 3, 9 of "source_id" sampled '
            "(two calls under one id, or one exported twice?)") in text
