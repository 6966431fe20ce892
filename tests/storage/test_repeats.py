"""Repeated keys inside one input: an exact repeat created once, a key whose rows differ
sent never, with and without --history; the input's keys kept on disk."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import bulkpost
from bulkpost.core.activity import Activity, InvalidRow
from bulkpost.core.repeats import Repeat, repeated_lines
from bulkpost.storage.input_keys import InputKeys
from tests.conftest import SECRET, read_results, run_cli, write_csv

MAPPING = """
[activity]
event = 201
lead_id_column = "lead"
note_column = "note"
key_column = "call"

[fields]
mx_Custom_1 = "call"
"""
HEADER = ["call", "lead", "note"]


def _lead(n: int) -> str:
    return str(uuid.UUID(int=(n % 13 + 1) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128,
                         version=4))


# Row 1: C-101; rows 2 and 3: C-102 twice, the same call; rows 4 and 6: two different calls
# under C-104; row 5: C-105.
ROWS = [["C-101", _lead(1), "called back"],
        ["C-102", _lead(2), "left a message"],
        ["C-102", _lead(2), "left a message"],
        ["C-104", _lead(4), "asked for a quote"],
        ["C-105", _lead(5), "no answer"],
        ["C-104", _lead(6), "wrong number"]]
CONFLICT = ("is also in row {} with other content: fix the export or give each call its "
            "own key")


def _activity(row: int, key: str, content: str) -> Activity:
    return Activity(row, key, _lead(row), b"{}", content)


# -- the input's keys, on their own -----------------------------------------------------------
def test_read_ahead_every_row_of_a_repeated_key_knows_them_all() -> None:
    keys = InputKeys()
    try:
        first: list[Activity | InvalidRow] = [
            _activity(1, "A", "01"), _activity(2, "B", "02"), _activity(3, "B", "02")]
        second: list[Activity | InvalidRow] = [
            _activity(4, "C", "04"), InvalidRow(5, "A", "lead", "not a GUID", "05"),
            _activity(6, "", "07"), _activity(7, "", "07"), _activity(8, "D", "08")]
        keys.take(first)
        keys.take(second)
        a = Repeat("A", 1, 2, (1, 5), True)  # row 5 does not validate: other content
        b = Repeat("B", 2, 2, (2, 3), False)
        same = Repeat("", 6, 2, (6, 7), False)  # no key: a row's key is its content
        assert keys.repeats_of(first) == {1: a, 2: b, 3: b}
        assert keys.repeats_of(second) == {5: a, 6: same, 7: same}
        assert keys.counts() == (3, 1, 6)
        assert keys.report() == [
            "3 repeated keys in 6 rows, 1 with differing contents (their rows are invalid):",
            "  key 'A': rows 1, 5, with differing contents: none is sent (fix the export or "
            "give each call its own key)",
            "  key 'B': rows 2, 3: created once, by row 2; the others are repeats",
            "  rows 6, 7 are identical (no key: a row's key is its content): created once, "
            "by row 6; the others are repeats"]
    finally:
        keys.close()


def test_read_once_a_row_knows_the_rows_before_it() -> None:
    keys = InputKeys()
    try:
        assert keys.add([]) == {}
        assert keys.add([_activity(1, "A", "01"), _activity(2, "A", "01")]) == {
            2: Repeat("A", 1, 2, (1, 2), False)}
        # Row 3 differs: it and every later row of the key are told so; row 1 has gone.
        assert keys.add([_activity(3, "A", "03"), _activity(4, "A", "01")]) == {
            3: Repeat("A", 1, 3, (1, 2, 3), True), 4: Repeat("A", 1, 4, (1, 2, 3, 4), True)}
    finally:
        keys.close()


def test_a_key_in_many_rows_lists_its_first_and_counts_the_rest() -> None:
    keys = InputKeys()
    try:
        keys.take([_activity(row, "K", "01" if row < 900 else "02") for row in range(1, 1001)])
        repeat = keys.repeats_of([_activity(950, "K", "02")])[950]
        assert repeat == Repeat("K", 1, 1000, (1, 2, 3, 4, 5, 6), True)
        assert repeat.conflict(950) == ("key 'K' is also in rows 1, 2, 3, 4, 5 and 994 more "
                                        "with other content: fix the export or give each "
                                        "call its own key")
        assert repeat.conflict(2) == ("key 'K' is also in rows 1, 3, 4, 5, 6 and 994 more "
                                      "with other content: fix the export or give each call "
                                      "its own key")
    finally:
        keys.close()


def test_the_list_of_repeated_keys_is_capped() -> None:
    shown = [Repeat(f"K{n}", n, 2, (n, n + 100), False) for n in range(1, 21)]
    lines = repeated_lines(5000, 0, 10000, shown)
    assert lines[0] == "5,000 repeated keys in 10,000 rows:"
    assert len(lines) == 22 and lines[-1] == "  … and 4,980 more repeated keys"
    assert repeated_lines(0, 0, 0, []) == []


# -- end to end, against the sandbox ------------------------------------------------------------
def _run(data: Path, mapping: Path, results: Path, url: str, *extra: str | Path) -> Any:
    return run_cli("run", data, "--mapping", mapping, "--results", results, "--host", url,
                   "--rate", "100/1s", "--timeout", "2", "--backoff", "0.05", *extra)


def _calls(server: Any) -> Counter[str]:
    return Counter(entry["Fields"]["mx_Custom_1"] for entry in server.ledger())


@pytest.mark.e2e
@pytest.mark.parametrize("with_history", [False, True], ids=["alone", "with history"])
def test_an_exact_repeat_is_created_once_and_a_conflicting_key_never(
        tmp_path: Path, make_sandbox: Any, with_history: bool) -> None:
    server = make_sandbox(rate="100/1s", latency=(0.0, 0.02))
    data = write_csv(tmp_path / "calls.csv", HEADER, ROWS)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    results = tmp_path / "results.csv"
    extra = ("--history", tmp_path / "history.db") if with_history else ()

    dry = run_cli("validate", data, "--mapping", mapping, "--results", tmp_path / "dry.csv",
                  "--no-preflight", *extra)
    assert dry.code == 1, dry.stderr
    assert dry.summary["repeated_keys"] == [
        "2 repeated keys in 4 rows, 1 with differing contents (their rows are invalid):",
        "  key 'C-104': rows 4, 6, with differing contents: none is sent (fix the export or "
        "give each call its own key)",
        "  key 'C-102': rows 2, 3: created once, by row 2; the others are repeats"]
    assert "key 'C-104': rows 4, 6, with differing contents" in dry.stderr
    assert (dry.summary["to_send"], dry.summary["invalid"], dry.summary["repeats"]) == (3, 2, 1)

    first = _run(data, mapping, results, server.url, *extra)
    assert first.code == 1, first.stderr
    assert "input.repeated_keys" in first.stderr or "keys in more than one row" in first.stderr
    assert _calls(server) == Counter({"C-101": 1, "C-102": 1, "C-105": 1})
    lines = read_results(results)
    assert [lines[row]["status"] for row in range(1, 7)] == [
        "posted", "posted", "skipped", "invalid", "posted", "invalid"]
    assert (lines[3]["error_type"], lines[3]["error"]) == ("repeat", "repeat of row 2")
    assert (lines[4]["error_type"], lines[4]["error"]) == ("call", "key 'C-104' "
                                                           + CONFLICT.format(6))
    assert lines[6]["error"] == "key 'C-104' " + CONFLICT.format(4)
    assert (first.summary["skipped"], first.summary["repeats"], first.summary["invalid"]) == (
        1, 1, 2)
    report = run_cli("report", results)
    assert "skipped: [repeat]" in report.stdout

    again = _run(data, mapping, results, server.url, *extra)  # resumed: nothing sent
    assert again.code == 1 and len(server.ledger()) == 3
    assert read_results(results)[4]["status"] == "invalid"

    fixed = [*ROWS[:5], ["C-106", _lead(6), "wrong number"]]  # each call its own key now
    write_csv(data, HEADER, fixed)
    done = _run(data, mapping, results, server.url, *extra)
    assert done.code == 0, done.stderr
    assert _calls(server) == Counter({"C-101": 1, "C-102": 1, "C-104": 1, "C-105": 1,
                                      "C-106": 1})
    assert read_results(results)[3]["status"] == "skipped"  # still a repeat of row 2


@pytest.mark.e2e
def test_a_stream_read_once_sends_a_conflicting_keys_first_row_only(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(rate="100/1s", latency=(0.0, 0.02))
    table = pa.table({name: [row[i] for row in ROWS] for i, name in enumerate(HEADER)})
    stream = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(2))
    mapping = {"activity": {"event": 201, "lead_id_column": "lead", "note_column": "note",
                            "key_column": "call"}, "fields": {"mx_Custom_1": "call"}}
    summary = bulkpost.run(stream, mapping, tmp_path / "r.csv", host=server.url,
                           access_key="demo-access-key", secret_key=SECRET, rate="100/1s")
    assert (summary.posted, summary.repeats, summary.invalid) == (4, 1, 1)
    assert _calls(server) == Counter({"C-101": 1, "C-102": 1, "C-104": 1, "C-105": 1})
    assert read_results(tmp_path / "r.csv")[6]["error"] == "key 'C-104' " + CONFLICT.format(4)


def test_taken_and_added_rows_are_held_alike() -> None:
    """The read ahead's SQL and the one-pass read's Python keep the same per key."""
    rows: list[Activity | InvalidRow] = [
        _activity(n, f"K{n % 7}", f"{n % 3 if n % 7 == 1 else 0:02d}") for n in range(1, 60)]
    rows.append(InvalidRow(60, "K2", "lead", "not a GUID", "aa"))
    taken, added = InputKeys(), InputKeys()
    try:
        for start in range(0, len(rows), 8):
            taken.take(rows[start:start + 8])
            added.add(rows[start:start + 8])
        assert taken.repeats_of(rows) == added.repeats_of(rows)
        assert taken.report() == added.report()
    finally:
        taken.close()
        added.close()
