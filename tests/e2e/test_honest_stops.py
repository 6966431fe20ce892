"""What a person meets when a load goes partly wrong: no silent wrong data, honest stops.

End to end against the sandbox: a results file reused with other content is refused before
anything is created; rows not posted may be edited and sent again; after Ctrl-C the summary,
the results file, ``report`` and the failures file agree, and the last line says how to
resume; closing lines name what failed and the ``report`` command to run.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import MAPPING, _lead, _run, _wait_for_posted
from tests.conftest import ROOT, cli_command, cli_env, read_results, run_cli, write_csv

pytestmark = pytest.mark.e2e

HEADER = ["key", "lead", "note", "when", "value"]


def _rows(count: int, note: str = "note") -> list[list[str]]:
    return [[f"K{n:05d}", _lead(n % 17), f"{note} {n}", "2024-03-01 10:00:00", f"v{n}"]
            for n in range(1, count + 1)]


def _files(tmp_path: Path, rows: list[list[str]], name: str = "in.csv") -> tuple[Path, Path]:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING.replace('key_column = "key"\n', ""))  # no key: numbers only
    return write_csv(tmp_path / name, HEADER, rows), mapping


def _report_counts(results: Path) -> dict[str, int]:
    shown = run_cli("report", results)
    assert shown.code in (0, 1), shown.stderr
    counts = {}
    for line in (shown.stdout + shown.stderr).splitlines():
        if match := re.fullmatch(r"\s+([a-z]+)\s+([\d,]+)", line):
            counts[match[1]] = int(match[2].replace(",", ""))
    return counts


def test_a_results_file_reused_with_other_content_is_refused_before_anything_is_created(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    first_rows = _rows(4)
    data, mapping = _files(tmp_path, first_rows)
    results = tmp_path / "r.csv"
    assert _run(data, mapping, results, server.url).code == 0
    before = read_results(results)
    created = server.stats()["created"]
    # The person's corrected file, loaded with the old results file: row 2 now holds
    # something else (the fix), which was never sent.
    fixed = [row[:] for row in first_rows]
    fixed[1][2] = "the fixed note"
    other, _ = _files(tmp_path, fixed, "fixed.csv")
    again = _run(other, mapping, results, server.url)
    assert again.code == 2, again.stderr
    assert "row 2 (line 3 in a spreadsheet) is recorded as posted" in again.stderr
    # What a new results file would do is said: the account's history skips what it holds.
    assert "With a new --results file, rows the history" in again.stderr
    assert "are skipped, not sent again" in again.stderr
    # Without a history, the advice says it would send every row again.
    bare = _run(other, mapping, results, server.url, "--create-again")
    assert bare.code == 2 and "sends every row again, those posted here too" in bare.stderr
    assert server.stats()["created"] == created  # nothing sent
    assert read_results(results) == before
    # The refusal holds in a dry run too, so that validating warns as well.
    dry = run_cli("run", other, "--mapping", mapping, "--results", results, "--dry-run")
    assert dry.code == 2 and "row 2 (line 3 in a spreadsheet)" in dry.stderr
    # With a new results file the fixed row goes out, and only it: the account's history
    # knows that the three others were created (the advice above sends nothing twice).
    fresh = _run(other, mapping, tmp_path / "r2.csv", server.url)
    assert fresh.code == 0 and fresh.summary["posted"] == 1
    assert fresh.summary["created_before"] == 3
    notes = Counter(entry["ActivityNote"] for entry in server.ledger())
    assert notes["the fixed note"] == 1


def test_rows_not_posted_may_be_edited_and_sent_with_the_same_results_file(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    rows = _rows(5)
    rows[2][3] = "2024-13-45 10:00:00"  # not a date: invalid, never sent
    data, mapping = _files(tmp_path, rows)
    results = tmp_path / "r.csv"
    first = _run(data, mapping, results, server.url)
    assert first.code == 1 and first.summary["invalid"] == 1
    rows[2][3] = "2024-03-01 10:00:00"
    data, _ = _files(tmp_path, rows)
    second = _run(data, mapping, results, server.url)
    assert second.code == 0, second.stderr
    assert second.summary["posted"] == 1 and second.summary["skipped"] == 4
    assert server.stats()["created"] == 5


def test_closing_lines_say_what_failed_and_the_report_command(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    rows = _rows(4)
    rows[1][1] = "not-a-lead-id"
    data, mapping = _files(tmp_path, rows)
    results = tmp_path / "r.csv"
    result = _run(data, mapping, results, server.url, "--encoding", "cp1252",
                  "--delimiter", ",")
    assert result.code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bulkpost: 1 row not posted (1 invalid)")
    assert (f"bulkpost report {results} --input {data} --encoding cp1252 --delimiter , "
            "--failures to-fix.csv") in last
    # The command it names works as written.
    shown = run_cli("report", results, "--input", data, "--encoding", "cp1252",
                    "--delimiter", ",", "--failures", tmp_path / "to-fix.csv")
    assert shown.code in (0, 1), shown.stderr
    with open(tmp_path / "to-fix.csv", newline="", encoding="cp1252") as handle:
        assert len(list(csv.reader(handle))) == 2  # header and the one row
    # A run that posts everything says nothing more.
    clean, _ = _files(tmp_path, _rows(3), "clean.csv")
    done = _run(clean, mapping, tmp_path / "r2.csv", server.url)
    assert done.code == 0 and "not posted" not in done.stderr


def test_a_file_that_is_not_utf8_at_all_suggests_an_encoding(tmp_path: Path) -> None:
    rows = _rows(3, note="Françoise")
    data, mapping = _files(tmp_path, rows)
    data.write_bytes(data.read_text(encoding="utf-8").encode("cp1252"))
    result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--host", "http://127.0.0.1:9", "--no-preflight", "--verify-first", "0",
                     "--log-format", "json")
    assert result.code == 1, result.stderr
    assert result.summary["invalid"] == 3 and result.summary["posted"] == 0
    assert "try --encoding cp1252" in result.stderr
    # The results file names the column, as docs/RESULTS.md says.
    recorded = read_results(tmp_path / "r.csv")
    assert {r["error_type"] for r in recorded.values()} == {"note"}


def test_after_ctrl_c_the_summary_the_results_file_and_the_report_agree(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(rate="200/1s", latency=(0.1, 0.3),
                          faults={"500-before": 0.15}, seed=3)
    data, mapping = _files(tmp_path, _rows(120))
    results = tmp_path / "r.csv"
    process = subprocess.Popen(
        cli_command("run", data, "--mapping", mapping, "--results", results, "--host",
                    server.url, "--log-format", "json", "--rate", "20/1s",
                    "--backoff", "0.3", "--max-attempts", "3"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)
    _wait_for_posted(results, 25)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["aborted"] == "interrupted by SIGINT"
    assert summary["pending"] > 0
    # A stop the user asked for is no error: no error-level log line, no "aborted:" line.
    levels = [json.loads(line).get("level") for line in stderr.splitlines()
              if line.startswith("{")]
    assert "error" not in levels and "bulkpost: aborted" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert "run the same command again to resume" in last
    assert f"bulkpost run {data} --mapping {mapping} --results {results}" in last
    # The three agree: the summary, the results file and report.
    recorded = Counter(row["status"] for row in read_results(results).values())
    counts = _report_counts(results)
    for status in ("posted", "failed", "rejected", "invalid", "unknown"):
        assert summary[status] == recorded.get(status, 0) == counts.get(status, 0), status
    assert summary["rows"] >= summary["pending"] + sum(recorded.values())
    # The failures file lists what the summary calls failed and pending (rows never read
    # by the stopped run are pending too).
    failures = tmp_path / "to-fix.csv"
    run_cli("report", results, "--input", data, "--failures", failures)
    with open(failures, newline="", encoding="utf-8") as handle:
        listed = Counter(row["status"] for row in csv.DictReader(handle))
    assert listed.get("failed", 0) == summary["failed"]
    assert listed.get("unknown", 0) == summary["unknown"]
    assert listed["pending"] == 120 - sum(recorded.values())
    # Resuming finishes the load: every row once.
    finished = _run(data, mapping, results, server.url, "--rate", "200/1s",
                    "--backoff", "0.05")
    assert finished.code == 0, finished.stderr
    notes = Counter(entry["ActivityNote"] for entry in server.ledger())
    assert len(notes) == 120 and max(notes.values()) == 1


def test_a_rate_limit_warning_says_retry_after_only_when_the_server_said_it(
        tmp_path: Path, make_sandbox: Any) -> None:
    # The sandbox's rate-limit answers carry no Retry-After, like the captured real ones.
    server = make_sandbox(rate="100/0.5s", faults={"429-other": 0.2}, seed=4)
    data, mapping = _files(tmp_path, _rows(20))
    result = _run(data, mapping, tmp_path / "r.csv", server.url, "--rate", "100/0.5s",
                  "--verify-first", "0")
    assert result.code == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    warnings = [event for event in events if event["event"] == "rate_limited"]
    assert warnings and all(w["level"] == "warning" for w in warnings)
    assert all("retry_after" not in warning for warning in warnings)
