"""Preflight end to end: the CLI reads the activity types and checks rows before sending."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_results, run_cli, write_csv

pytestmark = pytest.mark.e2e

LEAD = "9e3779b9-7f4a-4c15-b39c-c0605cedc834"
TYPED = """
[activity]
event_column = "code"
lead_id_column = "lead"
timezone = "Asia/Kolkata"
key_column = "key"
[fields]
"Order No" = "key"
Amount = "amount"
channel = "channel"
"Delivery Date" = "delivery"
mx_Custom_5 = "shipped"
"""


def _typed_input(tmp_path: Path) -> tuple[Path, Path]:
    rows = [
        ["A1", LEAD, "301", "12.50", "web", "2024-05-01", "2024-05-01 10:00"],
        ["A2", LEAD, "301", "12,5", "web", "2024-05-01", ""],       # decimal comma
        ["A3", LEAD, "301", "7", "fax", "2024-05-01", ""],          # not an option
        ["A4", LEAD, "301", "7", "Store", "31/05/2024", ""],        # not a date
        ["A5-TOO-LONG-KEY", LEAD, "301", "7", "Store", "", ""],     # longer than 12
        ["A6", LEAD, "5000", "7", "Store", "", ""],                 # no such type
        ["A7", LEAD, "301", " 8 ", "PHONE", "2024-06-02T00:00:00", "2024-06-02T09:30:00Z"],
    ]
    data = write_csv(tmp_path / "orders.csv",
                     ["key", "lead", "code", "amount", "channel", "delivery", "shipped"], rows)
    mapping = tmp_path / "orders.toml"
    mapping.write_text(TYPED)
    return data, mapping


def test_typed_fields_are_checked_before_sending_and_sent_normalised(
        tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _typed_input(tmp_path)
    server = make_sandbox()
    results = tmp_path / "r.csv"
    result = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                     server.url, "--rate", "100/1s", "--log-format", "json")
    assert result.code == 1, result.stderr
    assert (result.summary["posted"], result.summary["invalid"]) == (2, 5)
    assert result.summary["rejected"] == 0  # nothing the API would refuse was sent
    rows = read_results(results)
    reasons = {n: (rows[n]["error_type"], rows[n]["error"]) for n in rows}
    assert reasons[2] == ("amount", "mx_Custom_2 (Amount): '12,5' is not a number (a decimal "
                                    "comma? see --decimal-comma)")
    assert reasons[3][0] == "channel" and "not one of the options" in reasons[3][1]
    assert reasons[4][0] == "delivery" and "is not a date" in reasons[4][1]
    assert reasons[5][0] == "key" and "longer than 12" in reasons[5][1]
    assert reasons[6][0] == "code" and "5000 does not exist" in reasons[6][1]
    by_key = {e["Fields"]["mx_Custom_1"]: e["Fields"] for e in server.ledger()}
    assert by_key["A7"] == {"mx_Custom_1": "A7", "mx_Custom_2": "8", "mx_Custom_3": "Phone",
                            "mx_Custom_4": "2024-06-02", "mx_Custom_5": "2024-06-02 09:30:00"}
    assert by_key["A1"]["mx_Custom_5"] == "2024-05-01 04:30:00"  # Kolkata → UTC

    # --decimal-comma: the rerun validates the invalid rows again and sends the fixed one.
    again = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                    server.url, "--rate", "100/1s", "--decimal-comma")
    assert again.summary["posted"] == 1
    assert {e["Fields"]["mx_Custom_1"]: e["Fields"] for e in server.ledger()}["A2"][
        "mx_Custom_2"] == "12.5"


def test_a_dry_run_runs_the_same_checks(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _typed_input(tmp_path)
    server = make_sandbox()
    result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--host", server.url, "--dry-run")
    assert result.code == 1
    assert (result.summary["to_send"], result.summary["invalid"]) == (2, 5)
    assert server.create_calls() == 0


@pytest.mark.parametrize(("change", "message"), [
    ('"Order No" = "key"\n', "mandatory field mx_Custom_1 (Order No) is not mapped"),
    ("Amount =", "Purpose ="),
])
def test_a_mapping_that_does_not_fit_the_type_exits_2(tmp_path: Path, make_sandbox: Any,
                                                       change: str, message: str) -> None:
    data, mapping = _typed_input(tmp_path)
    text = TYPED.replace(change, "") if change.endswith("\n") else TYPED.replace(change,
                                                                                 message)
    mapping.write_text(text)
    server = make_sandbox()
    result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--host", server.url)
    assert result.code == 2
    expected = "ambiguous" if message == "Purpose =" else message
    assert expected in result.stderr
    assert server.create_calls() == 0


def test_bulkpost_check(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _typed_input(tmp_path)
    server = make_sandbox()
    ok = run_cli("check", "--mapping", mapping, "--input", data, "--host", server.url)
    assert ok.code == 0, ok.stderr
    assert "activity type 301 (Order): 8 custom fields" in ok.stdout
    assert "not mapped: mx_Custom_6 (Purpose)" in ok.stdout
    assert "activity type 5000: not found" in ok.stdout
    wrong = run_cli("check", "--mapping", mapping, "--input", data, "--host", server.url,
                    LSQ_SECRET_KEY="not-the-key")
    assert wrong.code == 3 and "401" in wrong.stderr
    mapping.write_text(TYPED.replace('"Order No" = "key"\n', ""))
    unfit = run_cli("check", "--mapping", mapping, "--input", data, "--host", server.url)
    assert unfit.code == 2 and "mandatory field mx_Custom_1" in unfit.stderr


def test_display_names_need_the_schema(tmp_path: Path) -> None:
    data, mapping = _typed_input(tmp_path)
    result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--dry-run", LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert result.code == 2 and "display name" in result.stderr


def test_a_dry_run_reports_problems_grouped_and_the_time_it_would_take(
        tmp_path: Path, make_sandbox: Any) -> None:
    rows = [[f"B{n}", LEAD, "301", "12,5" if n % 3 == 0 else str(n), "Web", "", ""]
            for n in range(1, 61)]
    rows[10][4] = "Fax"
    data = write_csv(tmp_path / "orders.csv",
                     ["key", "lead", "code", "amount", "channel", "delivery", "shipped"], rows)
    mapping = tmp_path / "orders.toml"
    mapping.write_text(TYPED)
    server = make_sandbox()
    result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--host", server.url, "--dry-run")
    summary = result.summary
    assert (summary["to_send"], summary["invalid"]) == (39, 21)
    assert summary["problems"][0] == (
        "column 'amount': 20 rows, first at row 3 (line 4 in a spreadsheet): mx_Custom_2 "
        "(Amount): '12,5' is not a "
        "number (a decimal comma? see --decimal-comma)")
    assert summary["problems"][1].startswith(
        "column 'channel': 1 row, row 11 (line 12 in a spreadsheet): ")
    assert summary["estimated_s"] == round(39 / (25 / 5.1))  # 25/5s with the 2% margin
    assert "dry run: 39 rows to send, 21 invalid" in result.stderr
    assert "a real run would take about 0:00:08 at 25/5s" in result.stderr


def test_bulkpost_validate_is_a_dry_run(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _typed_input(tmp_path)
    server = make_sandbox()
    result = run_cli("validate", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--host", server.url)
    assert result.code == 1 and result.summary["dry_run"] is True
    assert (result.summary["to_send"], result.summary["invalid"]) == (2, 5)
    assert server.create_calls() == 0


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_constant_event_the_account_lacks_is_refused_before_any_row(
        tmp_path: Path, make_sandbox: Any, dry_run: bool) -> None:
    data = write_csv(tmp_path / "calls.csv", ["key", "lead"],
                     [["C1", LEAD], ["C2", LEAD]])
    mapping = tmp_path / "calls.toml"
    mapping.write_text('[activity]\nevent = 5000\nlead_id_column = "lead"\n'
                       'key_column = "key"\n')
    server = make_sandbox()
    results = tmp_path / "r.csv"
    result = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                     server.url, *(["--dry-run"] if dry_run else []))
    assert result.code == 2, result.stderr
    assert (f"{mapping}: event = 5000: activity type 5000 not found in the account"
            in result.stderr) and "bulkpost types lists the account's types" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["exit_code"] == 2
    assert server.create_calls() == 0
    assert not results.exists()  # no row was read, and the file this run made is gone
    assert sorted(tmp_path.iterdir()) == sorted([data, mapping])  # no lock or sidecar


def test_keys_refused_at_the_start_leave_no_results_file(tmp_path: Path,
                                                         make_sandbox: Any) -> None:
    data, mapping = _typed_input(tmp_path)
    server = make_sandbox()
    results = tmp_path / "r.csv"
    refused = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                      server.url, LSQ_SECRET_KEY="not-the-key")
    assert refused.code == 3 and "401" in refused.stderr
    assert not results.exists() and not (tmp_path / "r.csv.lock").exists()
    # A results file an earlier run wrote is kept, whatever stops the next one.
    first = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                    server.url, "--rate", "100/1s")
    assert first.code == 1 and first.summary["posted"] == 2
    again = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                    server.url, LSQ_SECRET_KEY="not-the-key")
    assert again.code == 3 and len(read_results(results)) == 7
