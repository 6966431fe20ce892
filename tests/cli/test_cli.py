"""End to end: the real CLI in a subprocess against the sandbox on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulkpost.runner.logs import EVENTS
from bulkpost.storage.results import ResultsLog
from tests.conftest import (
    KEYED_MAPPING,
    ROOT,
    SECRET,
    CliResult,
    cli_command,
    cli_env,
    read_results,
    read_results_log,
    replaced_on_purpose,
    run_cli,
    run_cli_process,
    write_csv,
)

pytestmark = pytest.mark.e2e

MAPPING = KEYED_MAPPING


def _lead(n: int) -> str:
    return str(uuid.UUID(int=(n + 1) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128, version=4))


def _inputs(tmp_path: Path, count: int, values: list[str] | None = None) -> tuple[Path, Path]:
    rows = []
    for n in range(1, count + 1):
        value = values[(n - 1) % len(values)] if values else f"v{n}"
        rows.append([f"K{n:05d}", _lead(n % 17), f"note {n}", "2024-03-01 10:00:00", value])
    data = write_csv(tmp_path / "in.csv", ["key", "lead", "note", "when", "value"], rows)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    return data, mapping


def _run(data: Path, mapping: Path, results: Path, url: str, *extra: str, **env: str) -> CliResult:
    if "--rate" not in extra:
        extra = ("--rate", "100/1s", *extra)
    return run_cli("run", data, "--mapping", mapping, "--results", results, "--host", url,
                   "--log-format", "json", *extra, **env)


def _ledger_keys(ledger: list[dict[str, Any]]) -> Counter[str]:
    return Counter(entry["Fields"]["mx_Custom_1"] for entry in ledger)


def test_every_value_arrives_faithfully_and_a_rerun_sends_nothing(
        tmp_path: Path, make_sandbox: Any) -> None:
    tricky = ["00123", "NA", "null", "", "12345678901234567890", "a, b", "line1\nline2",
              'say "hi"', "  padded  ", "1e5", "Ünïcødé ✓ 中文"]
    data, mapping = _inputs(tmp_path, len(tricky), tricky)
    server = make_sandbox()
    results = tmp_path / "results.csv"
    first = _run(data, mapping, results, server.url)
    assert first.code == 0, first.stderr
    assert first.summary["posted"] == len(tricky)
    ledger = server.ledger()
    by_key = {e["Fields"]["mx_Custom_1"]: e for e in ledger}
    for n, value in enumerate(tricky, start=1):
        entry = by_key[f"K{n:05d}"]
        assert entry["Fields"]["mx_Custom_2"] == value
        assert entry["ActivityNote"] == f"note {n}"
        assert entry["ActivityDateTime"] == "2024-03-01 04:30:00"  # Kolkata → UTC
        assert entry["RelatedProspectId"] == _lead(n % 17)
    recorded = read_results(results)
    assert len(recorded) == len(tricky)  # compacted: one line per row
    assert {r["activity_id"] for r in recorded.values()} == {e["Id"] for e in ledger}
    before = server.stats()
    again = _run(data, mapping, results, server.url)
    assert again.code == 0
    assert again.summary["skipped"] == len(tricky) and again.summary["posted"] == 0
    after = server.stats()
    # Nothing is sent: the only call is the preflight's read of the activity type.
    assert after["calls"] - after["lookups"] == before["calls"] - before["lookups"]
    assert after["lookups"] == before["lookups"] + 1 and after["created"] == before["created"]


def test_parquet_values_arrive_in_faithful_form(tmp_path: Path, make_sandbox: Any) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    path = tmp_path / "typed.parquet"
    pq.write_table(pa.table({
        "key": ["A", "B"],
        "lead": [_lead(1), _lead(2)],
        "when": pa.array([datetime(2024, 1, 1, 5, 30, tzinfo=UTC), None],
                         pa.timestamp("ms", tz="UTC")),
        "count": pa.array([7, None], pa.int64()),
        "price": pa.array([19.9, 100.0]),
        "amount": pa.array([Decimal("12.50"), Decimal("0.05")]),
        "flag": [True, False],
    }), path)
    mapping = tmp_path / "m.toml"
    mapping.write_text("""
[activity]
event = 202
lead_id_column = "lead"
datetime_column = "when"
empty_datetime = "now"
timezone = "Asia/Kolkata"
key_column = "key"
[fields]
mx_Custom_1 = "key"
mx_Custom_2 = "count"
mx_Custom_3 = "price"
mx_Custom_4 = "amount"
mx_Custom_5 = "flag"
""")
    server = make_sandbox()
    result = _run(path, mapping, tmp_path / "r.csv", server.url)
    assert result.code == 0, result.stderr
    by_key = {e["Fields"]["mx_Custom_1"]: e for e in server.ledger()}
    assert by_key["A"]["Fields"] == {"mx_Custom_1": "A", "mx_Custom_2": "7",
                                     "mx_Custom_3": "19.9", "mx_Custom_4": "12.50",
                                     "mx_Custom_5": "true"}
    # An aware timestamp is already UTC: the mapping's time zone does not apply to it.
    assert by_key["A"]["ActivityDateTime"] == "2024-01-01 05:30:00"
    assert by_key["B"]["ActivityDateTime"] is None  # a null, sent on arrival: chosen ("now")
    assert by_key["B"]["Fields"]["mx_Custom_2"] == ""
    assert by_key["B"]["Fields"]["mx_Custom_3"] == "100"


def test_bad_rows_are_recorded_and_never_stop_the_run(tmp_path: Path, make_sandbox: Any) -> None:
    good = _lead(3)
    path = tmp_path / "in.csv"
    path.write_text(
        "key,lead,note,when,value\n"
        f"K1,{good},ok,2024-03-01 10:00:00,a\n"
        "K2,not-a-guid,x,2024-03-01 10:00:00,b\n"
        f"K3,{good},x,31/02/2024,c\n"
        f"K4,{good},too,many,cells,here\n"
        f"K5,00000000-0000-4000-8000-000000000000,x,2024-03-01 10:00:00,e\n"
        f"K6,{good},ok,,f\n")  # no date-time: it would be stamped on arrival
    mapping = tmp_path / "m.toml"
    mapping.write_text(MAPPING)
    server = make_sandbox()
    results = tmp_path / "r.csv"
    result = _run(path, mapping, results, server.url)
    assert result.code == 1
    summary = result.summary
    assert (summary["posted"], summary["invalid"], summary["rejected"]) == (1, 4, 1)
    rows = read_results(results)
    assert rows[2]["status"] == "invalid" and rows[2]["error_type"] == "lead"
    assert "not a GUID" in rows[2]["error"]
    assert rows[3]["status"] == "invalid" and rows[3]["error_type"] == "when"
    assert rows[4]["status"] == "invalid" and "6 cells" in rows[4]["error"]
    assert rows[5]["status"] == "rejected"
    assert rows[5]["error_type"] == "MXInvalidInputException"
    assert "does not exist" in rows[5]["error"]
    assert rows[6]["status"] == "invalid" and rows[6]["error_type"] == "when"
    assert rows[6]["error"].startswith("date-time is empty in column 'when'")
    assert rows[1]["status"] == "posted"
    assert server.create_calls() == 2  # invalid rows were never sent

    failures = tmp_path / "failures.csv"
    report = run_cli("report", results, "--input", path, "--failures", failures)
    assert report.code == 0
    assert "invalid" in report.stdout and "not a GUID" in report.stdout
    lines = failures.read_text().splitlines()
    assert lines[0] == "key,lead,note,when,value,bulkpost_row,status,error"
    assert len(lines) == 6 and lines[1].startswith("K2,not-a-guid,")
    assert lines[3].startswith(",,,,,4,invalid,") and "K4" in lines[3]  # the raw ragged row

    # A rerun re-validates invalid rows (free) and does not re-send the unchanged rejection.
    calls = server.create_calls()
    again = _run(path, mapping, results, server.url)
    assert again.code == 1 and server.create_calls() == calls
    assert again.summary["rejected"] == 1 and again.summary["skipped"] == 1


def test_a_fault_mix_posts_every_row_exactly_once(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 200)
    faults = {"500-before": 0.06, "html": 0.05, "reset-before": 0.05, "429-other": 0.04,
              "ratelimit-200": 0.04, "slow": 0.03}
    # Short windows: each rate-limit fault lowers the run's share for a window or two.
    server = make_sandbox(rate="100/0.5s", faults=faults, seed=11, slow_seconds=0.3,
                          latency=(0.0, 0.02))
    result = _run(data, mapping, tmp_path / "r.csv", server.url, "--rate", "75/0.5s",
                  "--backoff", "0.01", "--max-attempts", "12", "--timeout", "5")
    assert result.code == 0, result.stderr
    keys = _ledger_keys(server.ledger())
    assert len(keys) == 200 and set(keys.values()) == {1}
    stats = server.stats()
    assert all(stats["faults"][kind] > 0 for kind in faults)
    assert result.summary["retries"] > 0 and result.summary["rate_limited"] > 0


def test_the_rate_limit_holds_against_a_strict_window(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 45)
    server = make_sandbox(rate="10/1s", latency=(0.01, 0.2))
    # In a process of its own: the window is timed at the server, which shares no
    # interpreter (and no GIL) with the client.
    result = run_cli_process("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                             "--host", server.url, "--log-format", "json", "--rate", "10/1s")
    assert result.code == 0, result.stderr
    stats = server.stats()
    assert stats["rate_limited"] == 0 and stats["max_in_window"] <= 10
    assert stats["created"] == 45


def _wait_for_posted(results: Path, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if results.exists() and results.read_text().count(",posted,") >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} rows posted in {timeout} s")


def _start(data: Path, mapping: Path, results: Path, url: str,
           *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command("run", data, "--mapping", mapping, "--results", results, "--host", url,
                    "--log-format", "json", *extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)


def test_kill_9_then_rerun_posts_every_row_exactly_once(tmp_path: Path,
                                                        make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 150)
    server = make_sandbox(rate="40/1s", latency=(0.05, 0.25))
    results = tmp_path / "r.csv"
    for at_least in (20, 70):
        process = _start(data, mapping, results, server.url, "--rate", "40/1s")
        _wait_for_posted(results, at_least)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    before = read_results_log(results)
    unknown = [row for row, status in before.items() if status == "unknown"]
    assert unknown  # killed with requests on the wire
    finished = _run(data, mapping, results, server.url, "--rate", "40/1s")
    assert finished.code == 0, finished.stderr
    # Rows left in flight were looked up, not guessed at: found ones are posted with the
    # Id the API gave them, the others were sent once.
    assert finished.summary["reconciled"] == len(unknown)
    assert finished.summary["found_posted"] <= len(unknown)
    ledger = server.ledger()
    keys = _ledger_keys(ledger)
    assert len(keys) == 150 and max(keys.values()) == 1
    ids = {e["Fields"]["mx_Custom_1"]: e["Id"] for e in ledger}
    rows = read_results(results)
    assert {r["key"]: r["activity_id"] for r in rows.values()} == ids


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_finishes_requests_on_the_wire_and_exits_3(tmp_path: Path, make_sandbox: Any,
                                                            signame: str) -> None:
    data, mapping = _inputs(tmp_path, 120)
    server = make_sandbox(rate="30/1s", latency=(0.2, 0.4))
    results = tmp_path / "r.csv"
    process = _start(data, mapping, results, server.url, "--rate", "30/1s")
    _wait_for_posted(results, 15)
    process.send_signal(signal.Signals[signame])
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 3, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["aborted"] == f"interrupted by {signame}"
    rows = read_results(results)
    assert len(rows) == len(read_results_log(results))  # compacted
    assert "unknown" not in {r["status"] for r in rows.values()}
    finished = _run(data, mapping, results, server.url, "--rate", "30/1s")
    assert finished.code == 0
    keys = _ledger_keys(server.ledger())
    assert len(keys) == 120 and max(keys.values()) == 1


def test_wrong_keys_stop_the_run_with_exit_3(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 30)
    server = make_sandbox()
    results = tmp_path / "r.csv"
    wrong = "wrong-secret-0123456789"
    result = _run(data, mapping, results, server.url, LSQ_SECRET_KEY=wrong)
    assert result.code == 3
    assert "401" in result.stderr and "LSQ_SECRET_KEY" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert not results.exists()  # stopped before its first row: no results file left
    assert server.stats()["calls"] <= 30 and server.stats()["created"] == 0
    fixed = _run(data, mapping, results, server.url)
    assert fixed.code == 0 and fixed.summary["posted"] == 30


def test_wrong_host_path_is_404_exit_3(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 3)
    server = make_sandbox()
    result = _run(data, mapping, tmp_path / "r.csv", server.url + "/wrong")
    assert result.code == 3 and "404" in result.stderr


@pytest.mark.parametrize(("mapping_text", "message"), [
    (MAPPING.replace('"value"', '"valeur"'), "'valeur' not found in"),
    (MAPPING.replace("mx_Custom_2", "mx_Custom_51"), "mx_Custom_1 … mx_Custom_50"),
    (MAPPING.replace("Asia/Kolkata", "Mars/Olympus"), "unknown time zone"),
])
def test_mapping_problems_exit_2_before_any_request(tmp_path: Path, make_sandbox: Any,
                                                    mapping_text: str, message: str) -> None:
    data, mapping = _inputs(tmp_path, 3)
    mapping.write_text(mapping_text)
    server = make_sandbox()
    result = _run(data, mapping, tmp_path / "r.csv", server.url)
    assert result.code == 2
    assert message in result.stderr
    if "not found" in message:
        assert "available columns: 'key', 'lead', 'note', 'when', 'value'" in result.stderr
    assert server.stats()["calls"] == 0


def test_dry_run_sends_nothing_and_records_invalid_rows(tmp_path: Path,
                                                       make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 5)
    data.write_text(data.read_text().replace(_lead(2), "nope", 1))
    server = make_sandbox()
    results = tmp_path / "r.csv"
    result = _run(data, mapping, results, server.url, "--dry-run")
    assert result.code == 1
    assert result.summary["to_send"] == 4 and result.summary["invalid"] == 1
    assert server.create_calls() == 0 and server.stats()["lookups"] == 1  # the preflight
    assert [r["status"] for r in read_results(results).values()] == ["invalid"]


def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    data, mapping = _inputs(tmp_path, 1)
    result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--host", "http://api-in21.leadsquared.com")
    assert result.code == 2 and "https:// is required" in result.stderr


def test_a_second_run_on_the_same_results_file_is_refused(tmp_path: Path,
                                                          make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 1)
    server = make_sandbox()
    results = tmp_path / "r.csv"
    holder = ResultsLog(results).open()
    try:
        result = _run(data, mapping, results, server.url)
    finally:
        holder.close()
    assert result.code == 2 and "another bulkpost run" in result.stderr


def test_json_logs_are_json_lines_without_secrets(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 5)
    server = make_sandbox(faults={"html": 0.5}, seed=3)
    result = _run(data, mapping, tmp_path / "r.csv", server.url, "--backoff", "0.01",
                  "--log-level", "debug")
    events = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert {"run.started", "run.finished"} <= {e["event"] for e in events}
    assert any(e["event"] == "row.retrying" for e in events)
    # Each line: a stable key for a scheduler, and the sentence for a person.
    assert all(e["message"] == EVENTS.get(e["event"]) for e in events), events
    assert SECRET not in result.stderr


def test_unknown_rows_are_reconciled_and_resend_unknown_skips_the_look_up(
        tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 3)
    server = make_sandbox()
    results = tmp_path / "r.csv"
    header = ("row,key,status,activity_id,http_status,error_type,error,attempts,updated_at,"
              "content_hash\n")
    # The results file alone (no history: it would know row 2 posted and row 3 not claimed),
    # so that editing it plays a lost answer.
    first = _run(data, mapping, results, server.url, "--create-again")
    assert first.code == 0
    created = {e["Fields"]["mx_Custom_1"]: e["Id"] for e in server.ledger()}
    # As if row 2's answer had been lost and row 3 never sent: both unknown.
    results.write_text(header + "".join(
        f"{n},K{n:05d},unknown,,,,in flight,1,2026-01-01T00:00:00Z,\n" for n in (2, 3)))
    replaced_on_purpose(results)
    server.sandbox.ledger = [e for e in server.sandbox.ledger if e["Id"] != created["K00003"]]
    server.sandbox._by_lead = {lead: [e for e in entries if e["Id"] != created["K00003"]]
                               for lead, entries in server.sandbox._by_lead.items()}
    again = _run(data, mapping, results, server.url, "--create-again")
    assert again.code == 0, again.stderr
    assert again.summary["reconciled"] == 2 and again.summary["found_posted"] == 1
    rows = read_results(results)
    assert rows[2]["activity_id"] == created["K00002"] and rows[2]["error_type"] == "reconciled"
    assert rows[3]["status"] == "posted" and rows[3]["activity_id"] != created["K00003"]
    assert _ledger_keys(server.ledger())["K00002"] == 1
    # --resend-unknown sends without looking: the documented way to force a duplicate.
    results.write_text(header + "2,K00002,unknown,,,,in flight,1,2026-01-01T00:00:00Z,\n")
    replaced_on_purpose(results)
    forced = _run(data, mapping, results, server.url, "--resend-unknown", "--create-again")
    assert forced.code == 0 and forced.summary["reconciled"] == 0
    assert _ledger_keys(server.ledger())["K00002"] == 2


def test_a_second_sigint_stops_at_once_leaving_rows_on_the_wire_unknown(
        tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 40)
    server = make_sandbox(rate="100/1s", latency=(20.0, 20.0))  # every answer takes 20 s
    results = tmp_path / "r.csv"
    process = _start(data, mapping, results, server.url, "--rate", "100/1s", "--workers", "8",
                     "--no-preflight",  # the preflight's read would take 20 s too
                     "--verify-first", "0")  # and so would the first row's
    deadline = time.monotonic() + 30
    while server.create_calls() < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(stderr) from None
    assert process.returncode == 3, stderr
    assert time.monotonic() - started < 10  # did not wait for the 20 s answers
    statuses = Counter(read_results_log(results).values())
    assert statuses["unknown"] == 8 and statuses["posted"] == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["exit_code"] == 3 and summary["unknown"] == 8
    assert server.create_calls() == 8


EMAIL_MAPPING = """
[activity]
event = 201
lead_email_column = "email"
note_column = "note"
key_column = "key"
[fields]
mx_Custom_1 = "key"
"""


def test_rows_by_email_are_reconciled_through_the_lead(tmp_path: Path,
                                                       make_sandbox: Any) -> None:
    data = write_csv(tmp_path / "in.csv", ["key", "email", "note"],
                     [[f"K{n:05d}", f"person{n % 6}@example.com", f"n{n}"] for n in range(1, 61)])
    mapping = tmp_path / "m.toml"
    mapping.write_text(EMAIL_MAPPING)
    server = make_sandbox(rate="200/1s", faults={"500-after": 0.2, "reset-after": 0.1}, seed=4)
    results = tmp_path / "r.csv"
    result = _run(data, mapping, results, server.url, "--rate", "200/1s", "--backoff", "0.01",
                  "--max-attempts", "10")
    assert result.code == 0, result.stderr
    assert result.summary["found_posted"] > 0
    keys = _ledger_keys(server.ledger())
    assert len(keys) == 60 and max(keys.values()) == 1
    assert {e["EmailAddress"] for e in server.ledger()} == {
        f"person{n}@example.com" for n in range(6)}


def test_an_email_row_whose_lead_cannot_be_found_stays_unknown(tmp_path: Path,
                                                               make_sandbox: Any) -> None:
    data = write_csv(tmp_path / "in.csv", ["key", "email", "note"],
                     [["K00001", "nobody@example.com", "n"]])
    mapping = tmp_path / "m.toml"
    mapping.write_text(EMAIL_MAPPING)
    server = make_sandbox()
    results = tmp_path / "r.csv"
    results.write_text("row,key,status,activity_id,http_status,error_type,error,attempts,"
                       "updated_at,content_hash\n1,K00001,unknown,,,,in flight,1,"
                       "2026-01-01T00:00:00Z,\n")
    result = _run(data, mapping, results, server.url)
    assert result.code == 1 and result.summary["unknown"] == 1
    row = read_results(results)[1]
    assert row["status"] == "unknown" and "nobody@example.com" in row["error"]
    assert server.stats()["created"] == 0
    forced = _run(data, mapping, results, server.url, "--resend-unknown", "--create-again")
    assert forced.code == 0 and server.stats()["created"] == 1


BROKEN_INPUTS: dict[str, bytes] = {
    "empty.csv": b"",
    "header-only.csv": b"key,lead,note,when,value\n",
    "ragged.csv": b"key,lead,note,when,value\nK1,x\nK2,a,b,c,d,e,f\n",
    "not-utf8.csv": b"key,lead,note,when,value\nK1,\xff\xfe,n,,v\n",
    "ragged-not-utf8.csv": b"key,lead,note,when,value\nK1,\xff,n\n",
    "duplicate-columns.csv": b"key,key,lead,note,when,value\n",
    "junk.csv": bytes(range(256)) * 4,
    "truncated.parquet": b"PAR1\x00\x01\x02",
    "missing.csv": b"",
}


@pytest.mark.parametrize("name", sorted(BROKEN_INPUTS))
def test_broken_inputs_give_a_clear_message_and_no_traceback(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name != "missing.csv":
        path.write_bytes(BROKEN_INPUTS[name])
    mapping = tmp_path / "m.toml"
    mapping.write_text(MAPPING)
    result = run_cli("run", path, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--dry-run", "--log-format", "json")
    assert result.code in (0, 1, 2), result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    if result.code == 2:
        assert name in result.stderr  # the message names the file
    else:
        assert result.summary["rows"] == len(read_results(tmp_path / "r.csv"))


@pytest.mark.parametrize("command", ["run", "validate", "init", "check"])
def test_a_named_pipe_as_input_is_refused_at_once_not_waited_on(tmp_path: Path,
                                                                command: str) -> None:
    # A pipe can be read once; bulkpost reads its input more than once (and opening it would
    # wait for a writer for ever).
    pipe = tmp_path / "export.csv"
    os.mkfifo(pipe)
    mapping = tmp_path / "m.toml"
    mapping.write_text(MAPPING)
    args: tuple[str | Path, ...] = {
        "run": ("run", pipe, "--mapping", mapping, "--results", tmp_path / "r.csv",
                "--dry-run"),
        "validate": ("validate", pipe, "--mapping", mapping, "--results", tmp_path / "r.csv"),
        "init": ("init", pipe, "--event", "201", "--output", tmp_path / "m2.toml"),
        "check": ("check", "--mapping", mapping, "--input", pipe),
    }[command]
    started = time.monotonic()
    result = run_cli(*args)
    assert result.code == 2, result.stderr
    assert f"{pipe}: a named pipe (FIFO)" in result.stderr and "regular file" in result.stderr
    assert "Traceback" not in result.stderr and time.monotonic() - started < 60


def test_a_parquet_mapping_naming_a_missing_column_exits_2(tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text((ROOT / "samples" / "mapping-parquet.toml").read_text().replace(
        '"order_no"', '"nope"'))
    result = run_cli("run", ROOT / "samples" / "activities.parquet", "--mapping", mapping,
                     "--results", tmp_path / "r.csv", "--dry-run")
    assert result.code == 2
    assert "'nope' not found" in result.stderr and "'order_no'" in result.stderr


def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else(
        tmp_path: Path, serve_handler: Any) -> None:
    from aiohttp import web

    seen_elsewhere: list[dict[str, str]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen_elsewhere.append(dict(request.headers))
        return web.json_response({"Status": "Success", "Message": {"Id": "stolen"}})

    other = serve_handler(elsewhere)

    async def redirecting(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{other}{request.path}")

    data, mapping = _inputs(tmp_path, 3)
    result = _run(data, mapping, tmp_path / "r.csv", serve_handler(redirecting))
    assert result.code == 3 and "redirect" in result.stderr
    assert seen_elsewhere == []


def test_summary_json_and_run_id_for_schedulers(tmp_path: Path, make_sandbox: Any) -> None:
    """--summary-json holds what stdout's last line says; every log line has the run id."""
    server = make_sandbox()
    data, mapping = _inputs(tmp_path, 12)
    summary_file = tmp_path / "out" / "summary.json"
    summary_file.parent.mkdir()
    done = _run(data, mapping, tmp_path / "results.csv", server.url, "--summary-json",
                str(summary_file))
    assert done.code == 0
    written = json.loads(summary_file.read_text())
    assert written == done.summary and written["posted"] == 12 and written["exit_code"] == 0
    run_id = written["run_id"]
    assert len(run_id) > 16
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert lines and all(line.get("run_id") == run_id for line in lines)
    assert [p.name for p in summary_file.parent.iterdir()] == ["summary.json"]  # no temp left
    again = _run(data, mapping, tmp_path / "results.csv", server.url, "--summary-json",
                 str(summary_file))
    assert json.loads(summary_file.read_text())["run_id"] not in ("", run_id)
    assert again.summary["skipped"] == 12


def test_summary_json_is_written_for_a_refused_run_too(tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data, _ = _inputs(tmp_path, 3)
    summary_file = tmp_path / "summary.json"
    done = _run(data, tmp_path / "missing.toml", tmp_path / "results.csv", server.url,
                "--summary-json", str(summary_file))
    assert done.code == 2
    written = json.loads(summary_file.read_text())
    assert written["exit_code"] == 2 and "missing.toml" in written["error"] and written["run_id"]
