"""The history (--history): keys posted across runs and files, nightly loads, import, stats."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.activity import Activity
from bulkpost.core.results_line import RowOutcome
from bulkpost.core.statuses import Status
from bulkpost.errors import HistoryLocked, ResultsWriteError, UsageError
from bulkpost.storage.history.database import History, history_key
from bulkpost.storage.history.imports import import_results
from bulkpost.storage.results import ResultsLog
from tests.conftest import ROOT, cli_command, cli_env, read_results, run_cli, write_csv

MAPPING = """
[activity]
event = 201
lead_id_column = "lead"
note_column = "note"
datetime_column = "when"
key_column = "order"

[fields]
mx_Custom_1 = "order"
mx_Custom_2 = "amount"
"""
HEADER = ["order", "lead", "note", "when", "amount"]


def _lead(n: int) -> str:
    return str(uuid.UUID(int=(n % 13 + 1) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128,
                         version=4))


def _row(n: int, amount: str = "") -> list[str]:
    return [f"ORD-{n:05d}", _lead(n), f"order {n} shipped", f"2025-06-{n % 28 + 1:02d} 10:00:00",
            amount or f"{n}.50"]


# A sandbox that answers at once and never limits these tests' few rows.
QUICK: dict[str, Any] = {"rate": "100/1s", "latency": (0.0, 0.02)}


def _mapping_file(tmp_path: Path, text: str = MAPPING) -> Path:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(text)
    return mapping


def _night(path: Path, numbers: list[int], changed: dict[int, str] | None = None) -> Path:
    changed = changed or {}
    return write_csv(path, HEADER, [_row(n, changed.get(n, "")) for n in numbers])


def _activity(row: int, key: str, content_hash: str, event: int = 201) -> Activity:
    return Activity(row, key, _lead(row), b"{}", content_hash, event)


# -- the database on its own ---------------------------------------------------------------
def test_a_new_history_is_sqlite_in_wal_mode_and_locked_while_open(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    history = History(path, "run-1").open()
    try:
        assert history.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(HistoryLocked, match="another bulkpost run is using this history"):
            History(path, "run-2").open()
    finally:
        history.close()
    History(path, "run-3").open().close()  # released on close
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone() == ("2",)


def _entry(history: History, key: str) -> dict[str, Any]:
    entry = history.lookup(key)
    assert entry is not None, key
    return entry


def _claimed(history: History, key: str) -> list[str]:
    return [claim["content_hash"] for claim in _entry(history, key)["claims"]]


def test_claims_are_settled_by_their_own_answer_only(tmp_path: Path) -> None:
    history = History(tmp_path / "h.db", "run-1").open()
    history.register("in.csv", "r.csv")
    a, b, c = (_activity(n, f"K{n}", f"{n:016x}") for n in (1, 2, 3))
    for item in (a, b, c):
        history.sending(item)
    history.commit(history.take())
    assert _entry(history, "K1") == {
        "key": "K1", "posted": False,
        "claims": [{"content_hash": f"{1:016x}", "run_id": "run-1",
                    "at": _entry(history, "K1")["claims"][0]["at"]}]}
    history.posted(a, "id-a")
    history.released(b)
    history.commit(history.take())
    entry = _entry(history, "K1")
    assert (entry["posted"], entry["activity_id"], entry["claims"]) == (True, "id-a", [])
    assert history.lookup("K2") is None  # refused: the key is free again
    assert _claimed(history, "K3") == [f"{3:016x}"]
    # Posting a key again with other content (--on-changed post), twice, and a third time
    # with a refusal: the posted activity stays, and stays claimed, until a new one is
    # created; each content's claim is its own.
    second, third = _activity(1, "K1", f"{11:016x}"), _activity(1, "K1", f"{12:016x}")
    history.sending(second)
    history.sending(third)
    history.commit(history.take())
    assert _claimed(history, "K1") == [f"{11:016x}", f"{12:016x}"]
    assert history.claimed_ids(f"{1:016x}") == {"id-a"}
    history.released(third)
    history.commit(history.take())
    entry = _entry(history, "K1")
    assert (entry["activity_id"], entry["content_hash"]) == ("id-a", f"{1:016x}")
    assert _claimed(history, "K1") == [f"{11:016x}"]  # the other claim is untouched
    history.posted(second, "id-a2")
    history.commit(history.take())
    entry = _entry(history, "K1")
    assert (entry["activity_id"], entry["content_hash"], entry["claims"]) == (
        "id-a2", f"{11:016x}", [])
    assert history.claimed_ids(f"{11:016x}") == {"id-a2"}
    assert history.claimed_ids(f"{1:016x}") == set()
    history.finish(0, 1, 0, 0)
    history.close()
    # A caller's own run id, given again (a retried task), goes on as the same run.
    again = History(tmp_path / "h.db", "run-1").open()
    again.register("in.csv", "r.csv")
    assert again.stats()["runs"] == 1 and again.stats()["recent_runs"][0]["finished"] == ""
    again.close()


def test_screening_finds_keys_of_earlier_runs_and_of_earlier_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    first = History(path, "night-1").open()
    first.register("n1.csv", "r1.csv")
    first.posted(_activity(1, "K1", "aa" * 8), "id-1")
    first.sending(_activity(2, "K2", "bb" * 8))
    first.posted(_activity(6, "K6", "66" * 8), "id-6")
    first.sending(_activity(6, "K6", "67" * 8))  # posted again, then killed
    first.sending(_activity(8, "K8", "81" * 8))  # sent twice with other contents
    first.sending(_activity(8, "K8", "82" * 8))
    first.finish(1, 1, 0, 0)
    first.close()

    history = History(path, "night-2").open()
    items = [_activity(1, "K1", "aa" * 8), _activity(2, "K2", "cc" * 8),
             _activity(3, "K3", "dd" * 8), _activity(4, "K3", "dd" * 8),
             _activity(5, "K3", "ee" * 8)]
    found = history.screen(items)
    assert found[1].posted and found[1].same_content and found[1].activity_id == "id-1"
    assert found[1].run_id == "night-1"
    assert not found[2].posted and not found[2].same_content
    assert 3 not in found
    assert found[4].row == 3 and found[4].same_content
    assert found[5].row == 3 and not found[5].same_content
    again = history.screen([_activity(6, "K6", "67" * 8), _activity(7, "K6", "66" * 8)])
    assert not again[6].posted and again[6].same_content  # look it up first
    assert again[7].row == 6  # the input's first row of the key decides
    # The next batch still knows this input's keys.
    later = history.screen([_activity(9, "K3", "dd" * 8), _activity(10, "K1", "aa" * 8)])
    assert later[9].row == 3 and later[10].row == 1
    assert "row 3 of this input" in later[9].describe()
    assert "posted as activity id-1 by run night-1" in found[1].describe()
    # Every claimed content is remembered: each is looked up when met; another is sent.
    for n, content, same in ((11, "81", True), (12, "82", True), (13, "83", False)):
        verdict = history.screen([_activity(n, "K8", content * 8)])
        assert not verdict[n].posted and verdict[n].same_content is same
        history.db.execute("DELETE FROM temp.seen")  # as if each were another night's input
    history.close()


def test_without_a_key_column_the_content_hash_is_the_key() -> None:
    assert history_key(_activity(1, "", "ab" * 8)) == "ab" * 8
    assert history_key(_activity(1, "K1", "ab" * 8)) == "K1"


def test_a_newer_schema_or_another_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    History(path).open().close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    with pytest.raises(UsageError, match="history schema 99"):
        History(path).open()
    other = tmp_path / "not.db"
    other.write_text("order,lead\n" * 100)
    with pytest.raises(UsageError, match=r"cannot be read .* damaged, or not a history"):
        History(other).open()


def test_a_newer_schema_is_refused_before_anything_in_it_is_changed(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    History(path).open().close()
    with sqlite3.connect(path) as db:  # as a newer bulkpost might leave it: no WAL, new table
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("UPDATE meta SET value = '3' WHERE name = 'schema'")
        db.execute("DROP TABLE claims")
    before = path.read_bytes()
    for lock in (True, False):  # a run's opening, and a reader's (history stats)
        with pytest.raises(UsageError, match=r"history schema 3.*left as it is"):
            History(path).open(lock=lock)
        assert path.read_bytes() == before  # no journal mode set, no table created
        assert not (tmp_path / "h.db-wal").exists()
    stats = run_cli("history", "stats", "--history", path)
    assert stats.code == 2 and "history schema 3" in stats.stderr
    assert path.read_bytes() == before


def _damaged_history(path: Path, keys: int) -> None:
    """A history of ``keys`` posted keys whose middle pages were overwritten, as a failing
    disk or a copy cut and patched leaves one."""
    history = History(path, "night-1").open()
    history.register("in.csv", "r.csv")
    history.commit([(statement, parameters) for n in range(1, keys + 1)
                    for statement, parameters in _posted_writes(history, n)])
    history.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    with open(path, "r+b") as handle:
        for number in range(pages // 3, 2 * pages // 3):
            handle.seek(number * page + 100)
            handle.write(b"\xa5" * 64)


def _posted_writes(history: History, n: int) -> list[tuple[str, tuple[Any, ...]]]:
    item = Activity(n, f"ORD-{n:05d}", _lead(n), b"{}", f"{n:016x}", 201)
    history.posted(item, str(uuid.UUID(int=n)))
    return history.take()


@pytest.mark.e2e
def test_a_damaged_history_is_named_with_how_to_rebuild_it(tmp_path: Path,
                                                           make_sandbox: Any) -> None:
    path = tmp_path / "history.db"
    _damaged_history(path, 4000)
    stats = run_cli("history", "stats", "--history", path)
    assert stats.code == 2, stats.stderr
    assert f"{path}: the history cannot be read" in stats.stderr
    assert "history import" in stats.stderr and "internal error" not in stats.stderr
    server = make_sandbox(**QUICK)
    tonight = _night(tmp_path / "n.csv", list(range(1, 4001, 7)))
    run = run_cli(*_args(tonight, _mapping_file(tmp_path), tmp_path / "r.csv", path,
                         server.url))
    assert run.code in (2, 3), run.stderr
    assert "the history cannot be read" in run.stderr and "history import" in run.stderr
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr
    assert server.create_calls() == 0  # refused before it sent a row it could not screen


def test_a_failed_commit_is_a_write_error(tmp_path: Path) -> None:
    history = History(tmp_path / "h.db", "run-1").open()
    history.register("in.csv", "r.csv")
    history.db.execute("DROP TABLE claims")  # any SQLite error on commit
    history.sending(_activity(1, "K1", "aa" * 8))
    with pytest.raises(ResultsWriteError, match="cannot write the history"):
        history.commit(history.take())
    history.close()


def _results_file(path: Path, outcomes: list[RowOutcome]) -> Path:
    log = ResultsLog(path).open()
    for outcome in outcomes:
        log.record(outcome)
    log.close()
    return path


def test_import_seeds_posted_keys_and_marks_maybe_created_ones(tmp_path: Path) -> None:
    results = _results_file(tmp_path / "r.csv", [
        RowOutcome(1, "K1", Status.UNKNOWN, content_hash="01" * 8),
        RowOutcome(1, "K1", Status.POSTED, activity_id="id-1", content_hash="01" * 8),
        RowOutcome(2, "K2", Status.UNKNOWN, content_hash="02" * 8),
        RowOutcome(3, "K3", Status.REJECTED, content_hash="03" * 8),
        RowOutcome(4, "", Status.POSTED, activity_id="id-4", content_hash="04" * 8),
        RowOutcome(5, "K5", Status.INVALID, content_hash="05" * 8),
        RowOutcome(6, "K6", Status.FAILED, content_hash="06" * 8,
                   updated_at="2026-01-02T03:04:05Z"),
    ])
    path = tmp_path / "h.db"
    night = History(path, "night").open()  # a run that stopped with K3 on the wire
    night.register("n.csv", "rn.csv")
    night.sending(_activity(3, "K3", "03" * 8))
    night.commit(night.take())
    night.close()
    [imported] = import_results(path, [results], "t")
    # Without the input: no posted key is identified (no update can bring it up to date).
    assert imported.counts == {"lines": 7, "posted": 2, "to_look_up": 2, "ignored": 1,
                               "identified": 0, "not_identified": 2, "not_matching": 0,
                               "posted_more_than_once": 0, "keys_posted_more_than_once": []}
    history = History(path).open()
    assert _entry(history, "K1")["posted"] and _entry(history, "K1")["claims"] == []
    assert _entry(history, "04" * 8)["activity_id"] == "id-4"
    assert _claimed(history, "K2") == ["02" * 8]
    assert _entry(history, "K6")["claims"][0]["at"] == "2026-01-02T03:04:05Z"
    assert history.lookup("K5") is None
    # The file's refusal of K3 is not the stopped run's request: its claim stays.
    assert _claimed(history, "K3") == ["03" * 8]
    history.close()
    # Importing again changes nothing; an older file never overrides a posted key, nor does
    # an "unknown".
    later = _results_file(tmp_path / "r2.csv", [
        RowOutcome(1, "K1", Status.UNKNOWN, content_hash="01" * 8),
        RowOutcome(2, "04" * 8, Status.POSTED, activity_id="id-old", content_hash="04" * 8)])
    again = import_results(path, [results, later], "t2")
    assert [i.counts["posted"] for i in again] == [0, 0]
    history = History(path).open()
    stats = history.stats()
    assert (stats["keys"], stats["posted"], stats["claims"]) == (5, 2, 3)
    assert _entry(history, "04" * 8)["activity_id"] == "id-4"
    assert stats["runs"] == 4 and stats["recent_runs"][0]["run_id"] == "import-t2-2"
    history.close()


def test_import_names_the_keys_a_file_posted_more_than_once(tmp_path: Path) -> None:
    """Two calls under one id, both posted: two activities; the history keeps one, and the
    import says so rather than merging them quietly."""
    results = _results_file(tmp_path / "r.csv", [
        RowOutcome(1, "C-101", Status.POSTED, activity_id="id-1", content_hash="01" * 8),
        RowOutcome(2, "C-104", Status.POSTED, activity_id="id-2", content_hash="02" * 8),
        RowOutcome(3, "C-104", Status.UNKNOWN, content_hash="03" * 8),
        RowOutcome(3, "C-104", Status.POSTED, activity_id="id-3", content_hash="03" * 8),
        RowOutcome(4, "", Status.POSTED, activity_id="id-4", content_hash="04" * 8),
        RowOutcome(5, "", Status.POSTED, activity_id="id-5", content_hash="04" * 8),
        RowOutcome(6, "C-106", Status.UNKNOWN, content_hash="06" * 8),
        RowOutcome(7, "C-106", Status.POSTED, activity_id="id-7", content_hash="07" * 8),
    ])
    [imported] = import_results(tmp_path / "h.db", [results], "t")
    counts = imported.counts
    assert (counts["posted"], counts["posted_more_than_once"]) == (4, 2)
    assert counts["keys_posted_more_than_once"] == ["C-104", "04" * 8]
    done = run_cli("history", "import", results, "--history", tmp_path / "h2.db")
    assert done.code == 0, done.stderr
    assert ("2 keys posted by more than one row (an activity each; the history keeps one): "
            f"'C-104', '{'04' * 8}'") in done.stderr


# -- runs against the sandbox ----------------------------------------------------------------
def _ledger_orders(server: Any) -> Counter[str]:
    return Counter(entry["Fields"]["mx_Custom_1"] for entry in server.ledger())


def _args(data: Path, mapping: Path, results: Path, history: Path, url: str,
          *extra: str) -> tuple[str | Path, ...]:
    return ("run", data, "--mapping", mapping, "--results", results, "--history", history,
            "--host", url, "--rate", "100/1s", "--timeout", "2", "--backoff", "0.05",
            "--log-format", "json", *extra)


def _kill_when(process: subprocess.Popen[str], server: Any, created: int) -> None:
    """SIGKILL the run once the sandbox has created ``created`` activities in all."""
    deadline = time.monotonic() + 60
    while len(server.ledger()) < created and process.poll() is None:
        assert time.monotonic() < deadline, "the run created too little"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


@pytest.mark.e2e
@pytest.mark.parametrize("order", ["rerun-first", "next-night-first"])
def test_three_nights_post_every_distinct_key_exactly_once(tmp_path: Path, make_sandbox: Any,
                                                           order: str) -> None:
    """Three nightly files that overlap; night 2 is killed halfway (requests on the wire)
    and re-run with the same command, before or after night 3 ran with its own results
    file. Every distinct key reaches the ledger exactly once."""
    server = make_sandbox(rate="100/1s", latency=(0.1, 0.4),
                          faults={"500-after": 0.04, "reset-after": 0.04}, seed=11)
    mapping = _mapping_file(tmp_path)
    history = tmp_path / "history.db"
    nights = {
        1: list(range(1, 81)),
        2: list(range(41, 161)),
        3: [*range(121, 201), *range(1, 21)],  # overlaps night 2, and night 1 again
    }
    files = {n: _night(tmp_path / f"night-{n}.csv", rows) for n, rows in nights.items()}
    results = {n: tmp_path / f"results-{n}.csv" for n in nights}

    def night(n: int, *extra: str) -> dict[str, Any]:
        done = run_cli(*_args(files[n], mapping, results[n], history, server.url, *extra))
        assert done.code == 0, done.stderr[-3000:]
        return done.summary

    first = night(1)
    assert first["posted"] == 80 and first["skipped"] == 0
    # Night 2: killed once 40 new activities exist, with requests on the wire.
    both = ("--mode", "both", "--bulk-rate", "5/1s", "--batch-size", "10")
    process = subprocess.Popen(cli_command(*_args(files[2], mapping, results[2], history,
                                                   server.url, *both)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=cli_env(), cwd=ROOT)
    _kill_when(process, server, 80 + 40)
    store = History(history).open()
    in_flight = store.stats()["claims"]
    store.close()
    assert in_flight > 0  # killed with requests on the wire
    if order == "rerun-first":
        again = night(2, *both)
        third = night(3)
    else:
        third = night(3)
        again = night(2, *both)
    ledger = _ledger_orders(server)
    assert set(ledger) == {f"ORD-{n:05d}" for n in range(1, 201)}
    assert max(ledger.values()) == 1, [k for k, v in ledger.items() if v > 1]
    # Each night's rows are posted or skipped, and skipped at least where the nights
    # before it had finished: night 2 skips night 1's keys, night 3 night 1's (1-20).
    for summary, n in ((first, 1), (again, 2), (third, 3)):
        assert summary["posted"] + summary["skipped"] == len(nights[n])
    assert again["skipped"] >= 40 and third["skipped"] >= 20
    if order == "rerun-first":
        assert (third["posted"], third["skipped"]) == (40, 60)
    for n in nights:
        statuses = Counter(r["status"] for r in read_results(results[n]).values())
        assert set(statuses) <= {"posted", "skipped"} and sum(statuses.values()) == len(
            nights[n])
    ids = {e["Fields"]["mx_Custom_1"]: e["Id"] for e in server.ledger()}
    store = History(history).open()
    stats = store.stats()
    assert (stats["posted"], stats["claims"]) == (200, 0)
    for key, activity_id in ids.items():  # the history holds each key's one activity
        assert _entry(store, key)["activity_id"] == activity_id
    store.close()
    # Rows the kill left in flight were looked up by whichever run came next.
    assert again["reconciled"] + third["reconciled"] > 0
    print("three nights:", json.dumps({
        "order": order, "in_flight_at_kill": in_flight, "faults": server.stats()["faults"],
        **{f"night-{n}": {k: s[k] for k in ("posted", "skipped", "reconciled", "found_posted")}
           for n, s in ((1, first), (2, again), (3, third))}}))


@pytest.mark.e2e
def test_changed_content_is_skipped_posted_or_failed_as_on_changed_says(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    mapping = _mapping_file(tmp_path)
    history = tmp_path / "history.db"
    first = run_cli(*_args(_night(tmp_path / "n1.csv", list(range(1, 11))), mapping,
                           tmp_path / "r1.csv", history, server.url))
    assert first.code == 0 and first.summary["posted"] == 10
    # Tonight's export corrects the amounts of orders 3 and 4, and brings order 11.
    tonight = _night(tmp_path / "n2.csv", list(range(1, 12)), changed={3: "9.99", 4: "1.00"})

    skip = run_cli(*_args(tonight, mapping, tmp_path / "r-skip.csv", history, server.url))
    assert skip.code == 0, skip.stderr
    assert (skip.summary["posted"], skip.summary["skipped"], skip.summary["changed"]) == (1, 10, 2)
    warnings = [line for line in map(json.loads, skip.stderr.splitlines())
                if line["level"] == "warning"]
    assert [(w["event"], w["rows"]) for w in warnings] == [("history.changed_skipped", 2)]
    rows = read_results(tmp_path / "r-skip.csv")
    assert rows[3]["status"] == "skipped" and rows[3]["error_type"] == "changed"
    assert "key 'ORD-00003' was posted as activity" in rows[3]["error"]

    fail = run_cli(*_args(tonight, mapping, tmp_path / "r-fail.csv", history, server.url,
                          "--on-changed", "fail"))
    assert fail.code == 1 and fail.summary["invalid"] == 2 and fail.summary["skipped"] == 9
    rows = read_results(tmp_path / "r-fail.csv")
    assert rows[4]["status"] == "invalid" and rows[4]["error_type"] == "order"

    # Decided: post them. The same command (same results file) with --on-changed post
    # decides the skipped rows again.
    post = run_cli(*_args(tonight, mapping, tmp_path / "r-skip.csv", history, server.url,
                          "--on-changed", "post"))
    assert post.code == 0 and post.summary["posted"] == 2 and post.summary["changed"] == 2
    assert post.summary["skipped"] == 9
    amounts = Counter((e["Fields"]["mx_Custom_1"], e["Fields"]["mx_Custom_2"])
                      for e in server.ledger())
    assert amounts[("ORD-00003", "3.50")] == amounts[("ORD-00003", "9.99")] == 1
    assert sum(_ledger_orders(server).values()) == 13
    store = History(history).open()
    new_id = read_results(tmp_path / "r-skip.csv")[3]["activity_id"]
    assert _entry(store, "ORD-00003")["activity_id"] == new_id
    store.close()
    # And again: now that content is the posted one, nothing is sent.
    again = run_cli(*_args(tonight, mapping, tmp_path / "r-again.csv", history, server.url,
                           "--on-changed", "post"))
    assert again.code == 0 and again.summary["posted"] == 0 and again.summary["changed"] == 0


@pytest.mark.e2e
def test_a_run_while_another_holds_the_history_refuses_with_exit_2(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    mapping = _mapping_file(tmp_path)
    history = tmp_path / "history.db"
    summary = tmp_path / "summary.json"
    holder = History(history, "the-other-run").open()
    try:
        refused = run_cli(*_args(_night(tmp_path / "n.csv", [1, 2]), mapping,
                                 tmp_path / "r.csv", history, server.url,
                                 "--summary-json", str(summary)))
    finally:
        holder.close()
    assert refused.code == 2
    assert "another bulkpost run is using this history database" in refused.stderr
    assert json.loads(summary.read_text())["exit_code"] == 2
    assert server.create_calls() == 0
    # The results file was not taken either: the same command now runs.
    assert run_cli(*_args(tmp_path / "n.csv", mapping, tmp_path / "r.csv", history,
                          server.url)).code == 0


@pytest.mark.e2e
def test_history_import_and_stats_then_a_run_skips_what_was_posted(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    mapping = _mapping_file(tmp_path)
    before = tmp_path / "before.csv"
    # Posted before histories existed: a plain run with its results file.
    plain = run_cli("run", _night(tmp_path / "old.csv", list(range(1, 31))), "--mapping",
                    mapping, "--results", before, "--host", server.url, "--rate", "100/1s")
    assert plain.code == 0
    history = tmp_path / "history.db"
    imported = run_cli("history", "import", before, "--history", history)
    assert imported.code == 0, imported.stderr
    assert imported.summary["imported"][0]["posted"] == 30
    assert "30 lines: 30 keys posted, 0 to look up first" in imported.stderr

    tonight = run_cli(*_args(_night(tmp_path / "new.csv", list(range(21, 41))), mapping,
                             tmp_path / "r.csv", history, server.url))
    assert tonight.code == 0
    assert (tonight.summary["skipped"], tonight.summary["posted"]) == (10, 10)
    assert max(_ledger_orders(server).values()) == 1

    stats = run_cli("history", "stats", "--history", history, "--json")
    assert stats.code == 0
    data = stats.summary
    assert (data["keys"], data["posted"], data["claims"], data["runs"]) == (40, 40, 0, 2)
    assert data["by_event_code"] == [{"event_code": None, "keys": 30},  # imported
                                     {"event_code": 201, "keys": 10}]
    assert data["recent_runs"][0]["posted"] == 10 and data["recent_runs"][0]["exit_code"] == 0
    assert data["bytes"] > 0
    text = run_cli("history", "stats", "--history", history)
    assert "40 keys" in text.stdout and "posted" in text.stdout and "latest runs" in text.stdout
    missing = run_cli("history", "stats", "--history", tmp_path / "nope.db")
    assert missing.code == 2


@pytest.mark.e2e
def test_without_a_key_column_identical_content_is_posted_once(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    mapping = _mapping_file(tmp_path, MAPPING.replace('key_column = "order"\n', ""))
    history = tmp_path / "history.db"
    first = run_cli(*_args(_night(tmp_path / "a.csv", [1, 2, 3, 3, 4]), mapping,
                           tmp_path / "ra.csv", history, server.url))
    assert first.code == 0
    assert (first.summary["posted"], first.summary["skipped"]) == (4, 1)
    repeat = read_results(tmp_path / "ra.csv")[4]
    assert (repeat["error_type"], repeat["error"]) == (
        "repeat", "repeat of row 3 (the same content; the input has no key for it)")
    assert first.summary["repeats"] == 1
    second = run_cli(*_args(_night(tmp_path / "b.csv", [3, 4, 5]), mapping,
                            tmp_path / "rb.csv", history, server.url))
    assert (second.summary["posted"], second.summary["skipped"]) == (1, 2)
    assert Counter(_ledger_orders(server).values()) == Counter({1: 5})


@pytest.mark.e2e
def test_a_resumed_run_repairs_the_history_and_a_dry_run_writes_none(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    mapping = _mapping_file(tmp_path)
    data = _night(tmp_path / "n.csv", list(range(1, 21)))
    results = tmp_path / "r.csv"
    history = tmp_path / "history.db"
    plain = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                    server.url, "--rate", "100/1s")
    assert plain.code == 0
    # The same command with a history (as after a run that stopped before its last
    # commit): every row is skipped from the results file, and the history learns them.
    again = run_cli(*_args(data, mapping, results, history, server.url))
    assert again.code == 0 and again.summary["skipped"] == 20
    store = History(history).open()
    assert store.stats()["posted"] == 20
    store.close()
    dry = run_cli(*_args(_night(tmp_path / "m.csv", list(range(11, 31)), {12: "7.00"}),
                         mapping, tmp_path / "rd.csv", history, server.url, "--dry-run"))
    assert dry.code == 0
    assert (dry.summary["to_send"], dry.summary["skipped"], dry.summary["changed"]) == (
        10, 10, 1)
    assert read_results(tmp_path / "rd.csv") == {}  # a dry run decides nothing
    store = History(history).open()
    assert store.stats()["runs"] == 1  # the dry run left no trace
    store.close()
    assert server.create_calls() == 20


@pytest.mark.e2e
def test_a_key_left_in_flight_with_other_content_is_sent(tmp_path: Path,
                                                        make_sandbox: Any) -> None:
    """A run that stopped left the key *sending* with content that tonight's row no longer
    has: that content cannot be looked up, and the key may hold nothing, so the row is sent
    (not skipped as changed)."""
    server = make_sandbox(**QUICK)
    mapping = _mapping_file(tmp_path)
    history = tmp_path / "history.db"
    stopped = History(history, "killed-run").open()
    stopped.register("old.csv", "old-results.csv")
    stopped.sending(_activity(1, "ORD-00001", "12" * 8))
    stopped.commit(stopped.take())
    stopped.close()
    done = run_cli(*_args(_night(tmp_path / "n.csv", [1, 2]), mapping, tmp_path / "r.csv",
                          history, server.url))
    assert done.code == 0
    assert (done.summary["posted"], done.summary["changed"], done.summary["reconciled"]) == (
        2, 0, 0)
    assert _ledger_orders(server) == Counter({"ORD-00001": 1, "ORD-00002": 1})


@pytest.mark.e2e
def test_a_history_that_cannot_be_written_stops_sending_and_no_key_goes_unclaimed(
        tmp_path: Path, make_sandbox: Any) -> None:
    import resource

    server = make_sandbox(rate="200/1s", latency=(0.0, 0.02))
    mapping = _mapping_file(tmp_path)
    data = _night(tmp_path / "n.csv", list(range(1, 201)))
    history = tmp_path / "history.db"
    History(history).open().close()  # created with room; its write-ahead log then has little

    def small_disk() -> None:  # no file may grow past 120 kB: the history's log fills first
        resource.setrlimit(resource.RLIMIT_FSIZE, (120_000, 120_000))

    args = _args(data, mapping, tmp_path / "r.csv", history, server.url, "--rate", "200/1s")
    done = subprocess.run(cli_command(*args), capture_output=True, text=True, env=cli_env(),
                          cwd=ROOT, timeout=120, preexec_fn=small_disk, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "cannot write the history" in done.stderr
    sent = set(_ledger_orders(server))
    assert sent and len(sent) < 200
    store = History(history).open()
    assert all(store.lookup(key) is not None for key in sent)  # claimed before it was sent
    print("history write failure:", len(sent), "sent,", store.stats()["keys"], "claimed")
    store.close()
    finished = run_cli(*args)  # room again: the same command finishes, each key once
    assert finished.code == 0, finished.stderr[-2000:]
    assert Counter(_ledger_orders(server).values()) == Counter({1: 200})


@pytest.mark.e2e
def test_a_claim_outlives_a_refusal_of_other_content_and_is_looked_up(
        tmp_path: Path, make_sandbox: Any) -> None:
    """Night 1 created ORD-00001 and was killed before recording it: its claim stays in the
    history. Night 2 sends the key with other content, refused. Night 3 has night 1's
    content again: it is looked up (found), not sent a second time."""
    server = make_sandbox(**QUICK)
    mapping = _mapping_file(tmp_path)
    history = tmp_path / "history.db"
    first = _night(tmp_path / "n1.csv", [1, 2])
    assert run_cli(*_args(first, mapping, tmp_path / "r1.csv", history, server.url)).code == 0
    content = read_results(tmp_path / "r1.csv")[1]["content_hash"]
    store = History(history, "killed").open()  # as the kill left it: claimed, not posted
    store.register("n1.csv", "r1.csv")
    store.db.execute("DELETE FROM keys WHERE key = 'ORD-00001'")
    store.sending(_activity(1, "ORD-00001", content))
    store.commit(store.take())
    store.close()
    refused = _night(tmp_path / "n2.csv", [1])
    refused.write_text(refused.read_text().replace(_lead(1), "00000000-0000-4000-8000-"
                                                             "000000000000"))
    second = run_cli(*_args(refused, mapping, tmp_path / "r2.csv", history, server.url))
    assert second.code == 1 and second.summary["rejected"] == 1
    third = run_cli(*_args(first, mapping, tmp_path / "r3.csv", history, server.url))
    assert third.code == 0, third.stderr[-2000:]
    assert (third.summary["reconciled"], third.summary["found_posted"]) == (1, 1)
    assert _ledger_orders(server) == Counter({"ORD-00001": 1, "ORD-00002": 1})


@pytest.mark.e2e
def test_rows_skipped_as_posted_stay_skipped_under_another_history(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    mapping = _mapping_file(tmp_path)
    first = run_cli(*_args(_night(tmp_path / "a.csv", [1, 2, 3]), mapping,
                           tmp_path / "ra.csv", tmp_path / "h1.db", server.url))
    assert first.code == 0
    tonight = _night(tmp_path / "b.csv", [1, 2, 3, 4])
    second = run_cli(*_args(tonight, mapping, tmp_path / "rb.csv", tmp_path / "h1.db",
                            server.url))
    assert (second.summary["skipped"], second.summary["posted"]) == (3, 1)
    # The same command with a history that never saw these keys (a fresh file, a restored
    # backup): the results file's skipped lines name the activities; nothing is re-sent,
    # and the new history learns them.
    again = run_cli(*_args(tonight, mapping, tmp_path / "rb.csv", tmp_path / "h2.db",
                           server.url))
    assert again.code == 0 and (again.summary["skipped"], again.summary["posted"]) == (4, 0)
    assert Counter(_ledger_orders(server).values()) == Counter({1: 4})
    store = History(tmp_path / "h2.db").open()
    ids = {e["Fields"]["mx_Custom_1"]: e["Id"] for e in server.ledger()}
    assert {key: _entry(store, key)["activity_id"] for key in ids} == ids
    store.close()


def test_a_fixed_rows_original_claim_is_dropped_and_no_other(tmp_path: Path) -> None:
    """Fixed from a failures file, a row that failed or was left unknown keeps no claim of its
    broken content: carried over, that content would be sent beside the fix's."""
    from bulkpost.storage.fixes import _drop_claims

    path = tmp_path / "h.db"
    history = History(path, "run-1").open()
    history.register("in.csv", "r.csv")
    broken, other = _activity(3, "", "0c" * 8), _activity(4, "", "0d" * 8)
    history.sending(broken)
    history.sending(other)
    history.commit(history.take())
    history.close()
    _drop_claims(path, [("0c" * 8, "0c" * 8)])
    with History(path).open(lock=False) as store:
        assert store.stats()["claims"] == 1
        assert store.carried()[0].key == "0d" * 8


def test_a_history_that_is_the_results_file_is_refused_before_anything(tmp_path: Path) -> None:
    """By the CLI's dry run and real run, and by the Python API, with nothing written: the
    two files' lines would tear each other apart. Checked first, before the time zone."""
    import bulkpost

    data, mapping = _night(tmp_path / "in.csv", [1, 2]), _mapping_file(tmp_path)
    same = tmp_path / "r.csv"
    for command in (("validate",), ("run", "--dry-run"), ("run", "--timezone", "Bad/Zone")):
        result = run_cli(command[0], data, "--mapping", mapping, "--results", same,
                         "--history", tmp_path / "." / "r.csv", *command[1:],
                         LSQ_ACCESS_KEY="access-1", LSQ_SECRET_KEY="secret-1",
                         LSQ_HOST="http://127.0.0.1:9")
        assert result.code == 2, result.stderr
        assert "the history and the results file must be two files" in result.stderr
    assert not same.exists()
    with pytest.raises(UsageError, match="must be two files"):
        bulkpost.run(data, mapping, same, history=str(same), dry_run=True)
    assert not same.exists()
