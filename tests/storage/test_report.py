"""``bulkpost report``, its failures file, the output checks and the results file's lock.

The failures file is checked the way a person uses it: the real CLI loads a cp1252 input
with semicolons into the sandbox, reports the rows not posted, and the file, fixed, is
loaded again with the same options; what the sandbox stored must be the input's text.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulkpost.core.activity import RowMapper
from bulkpost.core.mapping import parse_mapping
from bulkpost.core.results_line import HEADER, HEADER_LINE, RowOutcome, format_line
from bulkpost.core.statuses import Status
from bulkpost.errors import InputError, ResultsLocked
from bulkpost.storage.locking import lock_beside, release
from bulkpost.storage.report import ProblemGroups, Report, _check_encodes, build_report, fold
from bulkpost.storage.results import ResultsLog
from tests.conftest import KEYED_MAPPING, ROOT, cli_command, cli_env, read_results, run_cli

MAPPING = KEYED_MAPPING
COLUMNS = ["key", "lead", "note", "when", "value"]
UNKNOWN = "00000000-0000-4000-8000-00000000000"  # the sandbox knows no lead 00000000-…


def _lead(n: int) -> str:
    return str(uuid.UUID(int=(n + 7) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128, version=4))


def _mapping(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(MAPPING)
    return path


def _write(path: Path, rows: list[list[str]], encoding: str, delimiter: str,
           bom: bytes = b"") -> Path:
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=delimiter).writerows([COLUMNS, *rows])
    path.write_bytes(bom + text.getvalue().encode(encoding))
    return path


def _read(path: Path, encoding: str, delimiter: str) -> list[list[str]]:
    with open(path, newline="", encoding=encoding) as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def _run(data: Path, mapping: Path, results: Path, url: str, *extra: str) -> Any:
    return run_cli("run", data, "--mapping", mapping, "--results", results, "--host", url,
                   "--rate", "100/1s", "--log-format", "json", *extra)


def _pending_results(path: Path) -> Path:
    """A results file of a run that recorded nothing yet: every row is ``pending``."""
    path.write_text(",".join(HEADER) + "\n")
    return path


# -- the failures file loads again with the command that loaded the input ------------------
ACCENTED = [
    # key, lead, note, when, value: posted (good lead), rejected (unknown lead), invalid
    ["K1", _lead(1), "François était là", "2024-03-01 10:00:00", "Zoë"],
    ["K2", UNKNOWN + "1", "Müller; déjà vu, « quoted »", "2024-03-01 10:00:00", "Ångström"],
    ["K3", "", "Renée\nsur deux lignes", "2024-03-01 10:00:00", "Œuvre"],
    ["K4", "pas-un-guid", "Noël", "2024-03-01 10:00:00", "Ça"],
    ["K5", UNKNOWN + "2", 'Señor € 5 "cité"', "2024-03-01 10:00:00", "½ – ¾"],
    ["K6", _lead(2), "Ørsted", "2024-03-01 10:00:00", "ß"],
]


def test_failures_of_a_cp1252_semicolon_input_load_again_with_the_same_options(
        tmp_path: Path, make_sandbox: Any) -> None:
    data = _write(tmp_path / "export.csv", ACCENTED, "cp1252", ";")
    mapping = _mapping(tmp_path)
    server = make_sandbox()
    results = tmp_path / "r.csv"
    first = _run(data, mapping, results, server.url, "--encoding", "cp1252")
    assert first.code == 1, first.stderr
    assert (first.summary["posted"], first.summary["rejected"], first.summary["invalid"]) \
        == (2, 2, 2)

    failures = tmp_path / "to-fix.csv"
    report = run_cli("report", results, "--input", data, "--failures", failures,
                     "--encoding", "cp1252")
    assert report.code == 0, report.stderr
    assert f"wrote 4 rows not posted to {failures} (encoding cp1252, delimiter ';'" \
        in report.stderr
    raw = failures.read_bytes()
    assert b"Fran" not in raw and b"M\xfcller" in raw and b"\x80 5" in raw  # cp1252 bytes
    back = _read(failures, "cp1252", ";")
    assert back[0] == [*COLUMNS, "bulkpost_row", "status", "error"]
    assert [row[:5] for row in back[1:]] == [ACCENTED[i] for i in (1, 2, 3, 4)]
    assert [row[5:7] for row in back[1:]] == [["2", "rejected"], ["3", "invalid"],
                                               ["4", "invalid"], ["5", "rejected"]]
    assert f"--fixes {results}" in report.stderr

    # The person fixes the leads and loads the file with the options that loaded the input,
    # a new results file, and --fixes naming the first one.
    fixed = raw.decode("cp1252").replace(UNKNOWN + "1", _lead(3)).replace(
        UNKNOWN + "2", _lead(4)).replace("K3;;", f"K3;{_lead(5)};").replace(
        "pas-un-guid", _lead(6))
    failures.write_bytes(fixed.encode("cp1252"))
    again = _run(failures, mapping, tmp_path / "r2.csv", server.url, "--encoding", "cp1252",
                 "--fixes", str(results))
    assert again.code == 0, again.stderr
    assert (again.summary["posted"], again.summary["marked_fixed"]) == (4, 4)
    assert f"4 rows of {results} marked fixed" in again.stderr
    stored = {e["Fields"]["mx_Custom_1"]: e for e in server.ledger()}
    assert len(stored) == len(ACCENTED)
    for key, _lead_id, note, _when, value in ACCENTED:
        assert stored[key]["ActivityNote"] == note
        assert stored[key]["Fields"]["mx_Custom_2"] == value
    # The first load's rows 2-5 are fixed, by that file, with the activities it created;
    # rows 2 and 5 (rejected) still map to valid content of their own in export.csv, which
    # is not taken for another input.
    lines = read_results(results)
    posted_as = {r["key"]: r["activity_id"] for r in read_results(tmp_path / "r2.csv").values()}
    for row in (2, 3, 4, 5):
        assert (lines[row]["status"], lines[row]["error_type"]) == ("fixed", str(failures))
        assert lines[row]["activity_id"] == posted_as[lines[row]["key"]]
        assert lines[row]["error"].startswith(f"fixed by row {row - 1} of {failures}")
    shown = run_cli("report", results)
    assert f"fixed (by {failures}): 4" in shown.stdout
    calls = server.create_calls()
    # The first load's command again: exit 0, nothing sent; the fix command again: the same.
    original = _run(data, mapping, results, server.url, "--encoding", "cp1252")
    assert original.code == 0, original.stderr
    assert (original.summary["skipped"], original.summary["posted"]) == (6, 0)
    fix_again = _run(failures, mapping, tmp_path / "r2.csv", server.url, "--encoding",
                     "cp1252", "--fixes", str(results))
    assert fix_again.code == 0, fix_again.stderr
    assert fix_again.summary["posted"] == 0 and fix_again.summary["marked_fixed"] == 4
    assert server.create_calls() == calls and len(server.ledger()) == len(ACCENTED)
    # Nothing is left to fix: the failures of the first load are now none.
    none_left = run_cli("report", results, "--input", data, "--failures",
                        tmp_path / "none.csv", "--encoding", "cp1252")
    assert none_left.code == 0 and "wrote 0 rows" in none_left.stderr
    # Clean exits leave no lock file behind.
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == []


def test_a_failures_file_of_a_failures_file_keeps_the_first_row_numbers(
        tmp_path: Path) -> None:
    data = _write(tmp_path / "in.csv", ACCENTED[:3], "utf-8", ",")
    first = tmp_path / "to-fix.csv"
    assert run_cli("report", _pending_results(tmp_path / "r.csv"), "--input", data,
                   "--failures", first).code == 0
    rows = _read(first, "utf-8", ",")
    assert rows[0] == [*COLUMNS, "bulkpost_row", "status", "error"]
    assert [row[5] for row in rows[1:]] == ["1", "2", "3"]
    # Its rows 1 and 2 are rows 2 and 3 of in.csv: a second round keeps those numbers.
    with open(first, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([rows[0], rows[2], rows[3]])
    again = tmp_path / "to-fix-2.csv"
    assert run_cli("report", _pending_results(tmp_path / "r2.csv"), "--input", first,
                   "--failures", again).code == 0
    rows = _read(again, "utf-8", ",")
    assert rows[0] == [*COLUMNS, "bulkpost_row", "status", "error", "status_bulkpost",
                       "error_bulkpost"]
    assert [row[5] for row in rows[1:]] == ["2", "3"]


@pytest.mark.e2e
def test_two_rounds_of_fixes_mark_the_first_loads_rows_and_close_its_loop(
        tmp_path: Path, make_sandbox: Any) -> None:
    """A failures file of a failures file keeps the first input's numbers: the report says to
    load it with the FIRST load's results file as --fixes, and following that marks the
    right rows (never rows of the fix run's own results file, which are other rows)."""
    server = make_sandbox()
    rows = [["K1", _lead(1), "ok", "2024-03-01 10:00:00", "a"],
            ["K2", "", "no lead", "2024-03-01 10:00:00", "b"],
            ["K3", "bad-guid", "bad lead", "2024-03-01 10:00:00", "c"],
            ["K4", _lead(4), "bad date", "31/02/2024", "d"],
            ["K5", _lead(5), "ok", "2024-03-01 10:00:00", "e"]]
    data = _write(tmp_path / "in.csv", rows, "utf-8", ",")
    mapping = _mapping(tmp_path)
    results = tmp_path / "results.csv"
    assert _run(data, mapping, results, server.url).code == 1
    to_fix = tmp_path / "to-fix.csv"
    assert run_cli("report", results, "--input", data, "--failures", to_fix).code == 0
    first = _read(to_fix, "utf-8", ",")
    # Round one fixes only K2's lead; K3 and K4 are still wrong.
    first[1][1] = _lead(2)
    with open(to_fix, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(first)
    fix = _run(to_fix, mapping, tmp_path / "results-fix.csv", server.url, "--fixes", str(results))
    assert fix.code == 1, fix.stderr
    to_fix_2 = tmp_path / "to-fix-2.csv"
    second = run_cli("report", tmp_path / "results-fix.csv", "--input", to_fix, "--failures",
                     to_fix_2)
    assert second.code == 0, second.stderr
    assert f"--fixes {results.resolve()}" in second.stderr  # the first load's file
    again = _read(to_fix_2, "utf-8", ",")
    assert [(row[0], row[5]) for row in again[1:]] == [("K3", "3"), ("K4", "4")]
    again[1][1], again[2][3] = _lead(3), "2024-02-29 10:00:00"
    with open(to_fix_2, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(again)
    fix_2 = _run(to_fix_2, mapping, tmp_path / "results-fix-2.csv", server.url,
                 "--fixes", str(results.resolve()))
    assert fix_2.code == 0, fix_2.stderr
    marked = read_results(results)
    assert [marked[n]["status"] for n in range(1, 6)] == [
        "posted", "fixed", "fixed", "fixed", "posted"]
    # The fix run's own rows are left as they were: K3 and K4 still invalid there.
    assert [r["status"] for r in read_results(tmp_path / "results-fix.csv").values()] == [
        "posted", "invalid", "invalid"]
    # The first load's command: exit 0, nothing sent; each call once in the CRM.
    created = len(server.ledger())
    assert _run(data, mapping, results, server.url).code == 0
    assert len(server.ledger()) == created == 5
    assert sorted(e["Fields"]["mx_Custom_1"] for e in server.ledger()) == [
        "K1", "K2", "K3", "K4", "K5"]


def test_the_report_counts_fixed_rows_by_the_file_that_fixed_them(tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    with open(results, "wb") as handle:
        handle.write(HEADER_LINE)
        for outcome in [
            RowOutcome(1, "K1", Status.POSTED, activity_id="a1", content_hash="01" * 8),
            RowOutcome(2, "K2", Status.INVALID, error_type="lead", error="lead id is empty"),
            RowOutcome(2, "K2", Status.FIXED, activity_id="a2", error_type="to-fix.csv",
                       error="fixed by row 1 of to-fix.csv (results r2.csv)"),
            RowOutcome(3, "K3", Status.FIXED, activity_id="a3", error_type="to-fix.csv"),
            RowOutcome(4, "K4", Status.FIXED, activity_id="a4", error_type="again.csv"),
            RowOutcome(5, "K5", Status.REJECTED, error="Lead with Id x does not exist"),
        ]:
            handle.write(format_line(outcome))
    report = build_report(results)
    assert report.counts[Status.FIXED] == 3 and report.fixed_by == {"to-fix.csv": 2,
                                                                     "again.csv": 1}
    shown = report.render()
    assert "fixed (by again.csv): 1" in shown and "fixed (by to-fix.csv): 2" in shown
    # Fixed rows are no problem: the one error left is the rejected row's.
    assert [error for error, _, _ in report.errors] == [
        "rejected: Lead with Id x does not exist"]


def test_fixes_are_refused_before_any_row_without_the_row_numbers_or_the_original(
        tmp_path: Path) -> None:
    data = _write(tmp_path / "in.csv", ACCENTED[:1], "utf-8", ",")
    mapping = _mapping(tmp_path)
    original = _pending_results(tmp_path / "r.csv")

    def validate(*extra: str | Path) -> Any:
        return run_cli("validate", data, "--mapping", mapping, "--results",
                       tmp_path / "r2.csv", "--log-format", "json", *extra)

    no_column = validate("--fixes", original)
    assert no_column.code == 2
    assert "has no 'bulkpost_row' column" in no_column.stderr
    assert "bulkpost report RESULTS --input INPUT --failures FILE" in no_column.stderr
    missing = validate("--fixes", tmp_path / "nope.csv")
    assert missing.code == 2 and "no such results file" in missing.stderr
    own_file = tmp_path / "r2.csv"
    own_file.write_bytes(HEADER_LINE)
    own = validate("--fixes", own_file)
    assert own.code == 2 and "is this run's own results file" in own.stderr
    # A failures file loaded without --fixes: said, since that load would then never end.
    failures = tmp_path / "to-fix.csv"
    assert run_cli("report", original, "--input", data, "--failures", failures).code == 0
    unmarked = run_cli("validate", failures, "--mapping", mapping, "--results",
                       tmp_path / "r3.csv", "--log-format", "json")
    assert unmarked.code == 0, unmarked.stderr
    assert '"event": "fixes.not_given"' in unmarked.stderr


def test_the_report_folds_leads_and_tells_empty_from_malformed_lead_ids(
        tmp_path: Path, make_sandbox: Any) -> None:
    data = _write(tmp_path / "export.csv", ACCENTED, "cp1252", ";")
    server = make_sandbox()
    results = tmp_path / "r.csv"
    assert _run(data, _mapping(tmp_path), results, server.url, "--encoding", "cp1252").code == 1
    report = run_cli("report", results)
    assert report.code == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0] == "6 rows"
    errors = lines[lines.index("most common errors:") + 1:]
    assert len(errors) == 3, errors
    assert errors[0].split()[:2] == ["2", "rejected:"] and "Lead with Id … does not" \
        in errors[0]
    assert any("lead id is empty" in line and line.split()[0] == "1" for line in errors)
    assert any("lead id '…' is not a GUID" in line and line.split()[0] == "1"
               for line in errors)


def test_a_report_of_one_row_says_1_row(tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    results.write_text(",".join(HEADER) + "\n"
                       "1,K1,invalid,,,lead,lead id is empty,0,2024-01-01T00:00:00Z,0\n")
    report = run_cli("report", results)
    assert report.code == 0, report.stderr
    assert report.stdout.splitlines()[0] == "1 row"
    data = _write(tmp_path / "in.csv", [ACCENTED[2]], "utf-8", ",")
    report = run_cli("report", results, "--input", data, "--failures", tmp_path / "f.csv")
    assert "wrote 1 row not posted" in report.stderr


def test_a_parquet_input_gives_a_utf8_csv_whose_utc_times_load_again_as_utc(
        tmp_path: Path, make_sandbox: Any) -> None:
    from datetime import UTC, datetime

    data = tmp_path / "export.parquet"
    pq.write_table(pa.table({
        "key": ["P1", "P2"], "lead": [UNKNOWN + "3", _lead(7)], "note": ["Zoë ✓ 中文", "ok"],
        "when": pa.array([datetime(2024, 1, 1, 5, 30, tzinfo=UTC)] * 2,
                         pa.timestamp("s", tz="UTC")),
        "value": ["½", "x"]}), data)
    mapping = _mapping(tmp_path)
    server = make_sandbox()
    assert _run(data, mapping, tmp_path / "r.csv", server.url).code == 1
    failures = tmp_path / "to-fix.csv"
    report = run_cli("report", tmp_path / "r.csv", "--input", data, "--failures", failures)
    assert report.code == 0, report.stderr
    assert "encoding utf-8, delimiter ','; the input is Parquet" in report.stderr
    back = _read(failures, "utf-8", ",")
    assert back[1][:5] == ["P1", UNKNOWN + "3", "Zoë ✓ 中文", "2024-01-01 05:30:00+00:00", "½"]
    failures.write_text(failures.read_text(encoding="utf-8").replace(UNKNOWN + "3", _lead(8)),
                        encoding="utf-8")
    again = _run(failures, mapping, tmp_path / "r2.csv", server.url)
    assert again.code == 0, again.stderr
    stored = {e["Fields"]["mx_Custom_1"]: e for e in server.ledger()}
    # The mapping's zone is Asia/Kolkata: without its +00:00 the time would move 5:30.
    assert stored["P1"]["ActivityDateTime"] == "2024-01-01 05:30:00"
    assert stored["P1"]["ActivityNote"] == "Zoë ✓ 中文"


def test_a_byte_order_mark_is_written_back_since_it_decides_the_reading(tmp_path: Path) -> None:
    data = _write(tmp_path / "in.csv", [ACCENTED[0]], "utf-8", "\t", bom=b"\xef\xbb\xbf")
    failures = tmp_path / "f.csv"
    # --encoding cp1252 as in the person's command: the mark wins, when reading and writing.
    report = run_cli("report", _pending_results(tmp_path / "r.csv"), "--input", data,
                     "--failures", failures, "--encoding", "cp1252")
    assert report.code == 0, report.stderr
    assert "encoding utf-8 with a byte-order mark, delimiter '\\t'" in report.stderr
    assert failures.read_bytes().startswith(b"\xef\xbb\xbfkey\tlead\t")
    assert _read(failures, "utf-8-sig", "\t")[1][:5] == ACCENTED[0]
    assert _read(failures, "utf-8-sig", "\t")[1][5:7] == ["1", "pending"]


def test_a_value_the_encoding_lacks_is_an_error_naming_row_and_column() -> None:
    with pytest.raises(InputError, match=r"in.csv: row 7 \(line 8 in a spreadsheet\), "
                                         r"column 'note': '→' cannot be written in cp1252"):
        _check_encodes(["K7", "a → b"], ["key", "note"], 7, "cp1252", Path("in.csv"))
    _check_encodes(["K7", "Ça €"], ["key", "note"], 7, "cp1252", Path("in.csv"))


# -- an input that does not decode stops the report before it writes anything -------------
@pytest.mark.parametrize(("header", "where"), [
    (COLUMNS, "row 2 (line 3 in a spreadsheet), column 'note'"),
    (["key", "lead", "prénom", "when", "value"], "the header row, column 3"),
])
def test_an_input_in_another_encoding_fails_first_and_suggests_encoding(
        tmp_path: Path, header: list[str], where: str) -> None:
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=";").writerows([header, ["K1", _lead(1), "plain", "", "x"],
                                               ["K2", _lead(1), "François", "", "y"]])
    data = tmp_path / "export.csv"
    data.write_bytes(text.getvalue().encode("cp1252"))
    failures = tmp_path / "f.csv"
    report = run_cli("report", _pending_results(tmp_path / "r.csv"), "--input", data,
                     "--failures", failures)
    assert report.code == 2
    assert report.stdout == ""  # not even the report
    assert not failures.exists() and list(tmp_path.glob(".f.csv*")) == []
    assert f"{data}: does not decode as utf-8 at {where}, byte " in report.stderr
    assert "--encoding cp1252" in report.stderr and "Traceback" not in report.stderr
    # With the encoding given, the same command works.
    assert run_cli("report", tmp_path / "r.csv", "--input", data, "--failures", failures,
                   "--encoding", "cp1252").code == 0


# -- output paths are checked before the work starts --------------------------------------
def test_failures_paths_are_checked_before_anything_is_printed(tmp_path: Path) -> None:
    results = _pending_results(tmp_path / "r.csv")
    data = _write(tmp_path / "in.csv", [ACCENTED[0]], "utf-8", ",")
    cases = {tmp_path / "nodir" / "x.csv": f"the directory {tmp_path / 'nodir'} does not "
                                            f"exist: create it first (mkdir -p {tmp_path}",
             tmp_path: "it is a directory",
             data: "is the input: give a new file"}
    for path, message in cases.items():
        report = run_cli("report", results, "--input", data, "--failures", path)
        assert report.code == 2, report.stderr
        assert report.stdout == "" and "Traceback" not in report.stderr
        assert f"bulkpost: error: --failures {path}" in report.stderr
        assert message in report.stderr
    assert data.read_text().startswith("key,lead")


def test_run_and_verify_outputs_in_a_missing_directory_are_refused_before_any_call(
        tmp_path: Path, make_sandbox: Any) -> None:
    data = _write(tmp_path / "in.csv", [ACCENTED[0]], "utf-8", ",")
    mapping = _mapping(tmp_path)
    server = make_sandbox()
    missing = tmp_path / "out" / "2024"
    refused = _run(data, mapping, missing / "results.csv", server.url)
    assert refused.code == 2
    assert f"the directory {missing} does not exist: create it first (mkdir -p {missing})" \
        in refused.stderr
    assert "to resume an earlier run instead, give the results file it wrote" in refused.stderr
    refused = _run(data, mapping, tmp_path / "r.csv", server.url,
                   "--summary-json", str(missing / "s.json"))
    assert refused.code == 2 and f"--summary-json {missing / 's.json'}: the directory" \
        in refused.stderr
    assert refused.stderr.count("bulkpost: error:") == 1  # said once, not again on writing
    assert server.stats()["calls"] == 0
    refused = run_cli("verify", tmp_path / "r.csv", "--input", data, "--mapping", mapping,
                      "--differences", missing / "d.csv", "--host", server.url)
    assert refused.code == 2 and f"--differences {missing / 'd.csv'}: the directory" \
        in refused.stderr
    assert server.stats()["calls"] == 0


# -- the lock: who holds it, what to do, and no file left behind ----------------------------
def test_a_held_results_file_names_the_holder_and_never_suggests_another_file(
        tmp_path: Path, make_sandbox: Any) -> None:
    data = _write(tmp_path / "in.csv", [ACCENTED[0]], "utf-8", ",")
    server = make_sandbox()
    results = tmp_path / "r.csv"
    holder = ResultsLog(results).open()
    try:
        refused = _run(data, _mapping(tmp_path), results, server.url)
    finally:
        holder.close()
    assert refused.code == 2
    assert f"another bulkpost run is using this results file (pid {os.getpid()}, " \
        in refused.stderr
    assert "wait for it to finish, then run this command again" in refused.stderr
    assert "another file" not in refused.stderr and "new file" not in refused.stderr
    assert not (tmp_path / "r.csv.lock").exists()  # released, and removed


def test_two_concurrent_runs_on_one_results_file_exclude_each_other(
        tmp_path: Path, make_sandbox: Any) -> None:
    # 60 rows at 6 a second: the first run lasts 10 s, longer than a second process takes
    # to start and meet the lock on a busy machine.
    rows = [[f"K{n}", _lead(n), f"note {n}", "2024-03-01 10:00:00", "v"] for n in range(1, 61)]
    data = _write(tmp_path / "in.csv", rows, "utf-8", ",")
    mapping = _mapping(tmp_path)
    server = make_sandbox(latency=(0.05, 0.05))
    results = tmp_path / "r.csv"
    lock = tmp_path / "r.csv.lock"
    args = ["run", data, "--mapping", mapping, "--results", results, "--host", server.url,
            "--rate", "6/1s", "--log-format", "json"]
    first = subprocess.Popen(cli_command(*args), env=cli_env(), cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not lock.exists() or not lock.read_text().strip():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.02)
        second = run_cli(*args)
        assert first.poll() is None, "the first run ended before the second started"
    finally:
        _out, err = first.communicate(timeout=120)
    assert second.code == 2, second.stderr
    assert f"(pid {first.pid}, lock {lock})" in second.stderr
    assert first.returncode == 0, err
    assert Counter(e["Fields"]["mx_Custom_1"] for e in server.ledger()) \
        == Counter(f"K{n}" for n in range(1, 61))
    assert not lock.exists()


_CONTENDER = """
import os, sys, time
from pathlib import Path
from bulkpost.errors import ResultsLocked
from bulkpost.storage.locking import lock_beside, release

path, inside = Path(sys.argv[1]), Path(sys.argv[1] + ".inside")
held = overlaps = 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        fd = lock_beside(path, "results file", ResultsLocked)
    except ResultsLocked:
        continue
    try:
        os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        overlaps += 1  # another process holds a lock on the same path at the same time
    else:
        held += 1
        os.unlink(inside)
    release(fd)
print(held, overlaps)
"""


def test_removing_the_lock_file_on_release_never_lets_two_holders_in(tmp_path: Path) -> None:
    """Processes take and release one lock as fast as they can: a process that opened the
    lock file just before its holder removed it must not hold a lock beside a new one."""
    path = tmp_path / "r.csv"
    contenders = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(path), "1.5"],
                                   cwd=ROOT, text=True, stdout=subprocess.PIPE)
                  for _ in range(3)]
    counts = [tuple(map(int, c.communicate(timeout=60)[0].split())) for c in contenders]
    assert all(c.returncode == 0 for c in contenders)
    assert sum(held for held, _ in counts) > 100  # they did contend
    assert [overlaps for _, overlaps in counts] == [0, 0, 0]
    assert not (tmp_path / "r.csv.lock").exists()


def test_a_lock_file_already_there_is_taken_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    Path(f"{path}.lock").write_text("99999999\n")  # left by a run killed with -9
    fd = lock_beside(path, "results file", ResultsLocked)
    assert Path(f"{path}.lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(ResultsLocked, match=f"pid {os.getpid()}, lock "):
        lock_beside(path, "results file", ResultsLocked)
    release(fd)
    assert not Path(f"{path}.lock").exists()


# -- folding: one cause, one line ----------------------------------------------------------
@pytest.mark.parametrize("variants", [
    ["response is not JSON: Expecting value: line 1 column 1 (char 0)",
     "response is not JSON: Expecting value: line 3 column 17 (char 212)"],
    ["cannot decode the answer at byte 17", "cannot decode the answer at byte 1234"],
    ["unexpected token at position 5", "unexpected token at position 6004"],
    [f"Lead with Id {_lead(1)} does not exist", f"Lead with Id {_lead(2)} does not exist",
     f"Lead with Id {_lead(3).upper()} does not exist"],
    ["No lead with e-mail ana@example.com", "No lead with e-mail b.o+tag@example.co.in"],
    ["lead id 'x' is not a GUID", "lead id 'not-a-guid' is not a GUID"],
])
def test_what_varies_by_row_folds_to_one_line(variants: list[str]) -> None:
    assert len({fold(v) for v in variants}) == 1, [fold(v) for v in variants]


@pytest.mark.parametrize("distinct", [
    ["HTTP 500", "HTTP 502"],
    ["row has 6 cells, the header has 5", "row has 7 cells, the header has 5"],
    ["Field mx_Custom_1 does not exist", "Field mx_Custom_2 does not exist"],
])
def test_what_names_the_cause_is_not_folded(distinct: list[str]) -> None:
    assert len({fold(v) for v in distinct}) == len(distinct)


def test_an_empty_lead_id_and_a_malformed_one_are_two_problems() -> None:
    mapping = parse_mapping({"activity": {"event": 201, "lead_id_column": "lead"},
                             "fields": {}})
    groups = ProblemGroups()
    for row, lead in enumerate(["", "  ", "nope", "bad-guid"], start=1):
        invalid = RowMapper(mapping).map_row(row, {"lead": lead})
        groups.add(getattr(invalid, "column", ""), getattr(invalid, "reason", ""), row)
    assert groups.lines() == [
        "column 'lead': 2 rows, first at row 1 (line 2 in a spreadsheet): lead id is empty",
        "column 'lead': 2 rows, first at row 3 (line 4 in a spreadsheet): lead id 'nope' is "
        "not a GUID"]


def test_row_numbers_for_people_give_the_spreadsheet_line_too() -> None:
    from bulkpost.core.row_numbers import row_and_line, rows_and_lines

    assert row_and_line(17) == "row 17 (line 18 in a spreadsheet)"
    assert rows_and_lines([3, 9, 12]) == "rows 3, 9 and 12 (lines 4, 10 and 13 in a spreadsheet)"
    assert rows_and_lines([1, 2, 3, 4, 5, 6]) == (
        "rows 1, 2, 3, 4, 5 … (lines 2, 3, 4, 5, 6 … in a spreadsheet)")
    report = Report({status: 0 for status in Status}, [("lead id is empty", 3, 17)], 3)
    assert "(first at row 17, line 18 in a spreadsheet)" in report.render()


# -- a date and a time of day left empty ----------------------------------------------------

CALL_COLUMNS = ["Call ID", "Lead Email", "Call Date", "Call Time", "Notes"]
CALLS = [
    ["C1", "a@example.com", "13/03/2024", "2:05 PM", "बात हुई"],
    ["C2", "b@example.com", "13/03/2024", "", "समय नहीं लिखा"],  # no time of day
    ["C3", "c@example.com", "", "", "कुछ नहीं लिखा"],  # no date, no time
    ["C4", "d@example.com", "", "11:40 AM", "तारीख नहीं लिखी"],  # a time with no date
    ["C5", "e@example.com", "14/03/2024", "11:40 AM", "बात हुई"],
]
CALLS_MAPPING = """\
[activity]
event = 201
lead_email_column = "Lead Email"
date_column = "Call Date"
date_format = "%d/%m/%Y"
time_column = "Call Time"
time_format = "%I:%M %p"
timezone = "Asia/Kolkata"
note_column = "Notes"
key_column = "Call ID"
"""


def _calls(path: Path) -> Path:
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=";").writerows([CALL_COLUMNS, *CALLS])
    path.write_bytes(b"\xef\xbb\xbf" + text.getvalue().encode("utf-8"))
    return path


@pytest.mark.e2e
def test_empty_dates_and_times_are_invalid_and_their_failures_keep_both_columns(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data = _calls(tmp_path / "calls.csv")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(CALLS_MAPPING)
    dry = run_cli("validate", data, "--mapping", mapping, "--results", tmp_path / "dry.csv",
                  "--host", server.url, "--log-format", "json")
    assert dry.code == 1, dry.stderr
    assert (dry.summary["to_send"], dry.summary["invalid"]) == (2, 3)
    assert "would be stamped with the time of its arrival" in dry.stderr
    assert "would land at midnight" in dry.stderr

    results = tmp_path / "results.csv"
    first = _run(data, mapping, results, server.url)
    assert first.code == 1, first.stderr
    assert (first.summary["posted"], first.summary["invalid"]) == (2, 3)
    outcomes = {r["key"]: r for r in read_results(results).values()}
    assert {key: (outcomes[key]["status"], outcomes[key]["error_type"])
            for key in ("C2", "C3", "C4")} == {"C2": ("invalid", "Call Time"),
                                               "C3": ("invalid", "Call Date"),
                                               "C4": ("invalid", "Call Date")}
    assert outcomes["C3"]["error"].startswith("date is empty in column 'Call Date': the "
                                              "activity would be stamped with the time of its "
                                              "arrival")
    stored = {e["EmailAddress"]: e["ActivityDateTime"] for e in server.ledger()}
    assert stored == {"a@example.com": "2024-03-13 08:35:00",
                      "e@example.com": "2024-03-14 06:10:00"}

    # The failures file holds the three rows with both columns as they were written.
    failures = tmp_path / "to-fix.csv"
    report = run_cli("report", results, "--input", data, "--failures", failures)
    assert report.code == 0, report.stderr
    back = _read(failures, "utf-8-sig", ";")
    assert back[0] == [*CALL_COLUMNS, "bulkpost_row", "status", "error"]
    assert [row[:5] for row in back[1:]] == [CALLS[1], CALLS[2], CALLS[3]]

    # Opted in: an empty time of day posts at midnight, an empty date (and time) at arrival.
    # A time with no date is still refused: it cannot be placed.
    mapping.write_text(CALLS_MAPPING + 'empty_time = "midnight"\nempty_datetime = "now"\n')
    again = _run(failures, mapping, tmp_path / "r2.csv", server.url)
    assert (again.summary["posted"], again.summary["invalid"]) == (2, 1), again.stderr
    stored = {e["EmailAddress"]: e["ActivityDateTime"] for e in server.ledger()}
    assert stored["b@example.com"] == "2024-03-12 18:30:00"  # midnight in Kolkata
    assert stored["c@example.com"] is None  # sent without one: stamped on arrival
    assert "d@example.com" not in stored


@pytest.mark.e2e
def test_an_empty_date_time_cell_is_invalid_unless_the_mapping_says_now(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    rows = [["K1", _lead(1), "called", "2023-05-01 10:00:00", "x"],
            ["K2", _lead(2), "called", "", "y"]]
    data = _write(tmp_path / "in.csv", rows, "utf-8", ",")
    mapping = _mapping(tmp_path)
    assert 'datetime_column = "when"' in MAPPING
    dry = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "dry.csv",
                  "--dry-run", "--host", server.url, "--log-format", "json")
    assert (dry.summary["to_send"], dry.summary["invalid"]) == (1, 1), dry.stderr
    real = _run(data, mapping, tmp_path / "r.csv", server.url)
    assert (real.summary["posted"], real.summary["invalid"]) == (1, 1), real.stderr
    [entry] = server.ledger()
    assert entry["ActivityDateTime"] == "2023-05-01 04:30:00"  # 10:00 in Kolkata

    mapping.write_text(MAPPING.replace('datetime_column = "when"',
                                       'datetime_column = "when"\nempty_datetime = "now"'))
    now = _run(data, mapping, tmp_path / "r2.csv", server.url)
    # K1 is not created again under the new results file: the account's history holds it.
    assert (now.summary["posted"], now.summary["created_before"], now.summary["invalid"]) \
        == (1, 1, 0), now.stderr
    late = [e for e in server.ledger() if e["RelatedProspectId"] == _lead(2)]
    assert [e["ActivityDateTime"] for e in late] == [None]
