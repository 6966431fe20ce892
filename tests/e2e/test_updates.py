"""Nightly loads whose rows change: ``--on-changed update``, and rows carried to the next night.

Each test runs the CLI against the sandbox and checks what the sandbox holds afterwards: each
key's activity once, with the latest night's content, and every update in its ledger.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.allowance import parse_rate
from bulkpost.storage.history.database import History
from tests.conftest import read_results, run_cli, run_killed, write_csv
from tests.storage.test_history import HEADER, MAPPING  # the orders export of the nightly tests

LEADS = ["3c6ef372-fe94-4f3a-a54f-f53a5f1d36f1", "9e107d9d-3721-4b1a-a1b9-0d3a5f2c7e11",
         "e4d909c2-90d0-4b4f-8c2e-7d1a3f5b9c02"]


def _row(n: int, *, note: str = "", amount: str = "", when: str = "") -> list[str]:
    return [f"ORD-{n:05d}", LEADS[n % 3], note or f"order {n} open",
            when or f"2025-06-{n % 28 + 1:02d} 10:00:00", amount or f"{n}.50"]


def _night(path: Path, rows: list[list[str]]) -> Path:
    return write_csv(path, HEADER, rows)


def _args(data: Path, results: Path, tmp_path: Path, url: str, *extra: str) -> list[str | Path]:
    mapping = tmp_path / "mapping.toml"
    if not mapping.exists():
        mapping.write_text(MAPPING)
    return ["run", data, "--mapping", mapping, "--results", results,
            "--history", tmp_path / "history.db", "--host", url, "--rate", "100/1s",
            "--timeout", "2", "--backoff", "0.05", "--log-format", "json", *extra]


def _first_night(tmp_path: Path, url: str, rows: list[list[str]]) -> None:
    """Night 1: ``rows`` posted (``n1.csv``, results ``r1.csv``), into the history."""
    done = run_cli(*_args(_night(tmp_path / "n1.csv", rows), tmp_path / "r1.csv", tmp_path, url))
    assert done.code == 0, done.stderr


def _events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run (its closing lines are plain text)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _by_order(server: Any) -> dict[str, list[dict[str, Any]]]:
    held: dict[str, list[dict[str, Any]]] = {}
    for entry in server.ledger():
        held.setdefault(entry["Fields"]["mx_Custom_1"], []).append(entry)
    return held


QUICK: dict[str, Any] = {"rate": "100/1s", "latency": (0.0, 0.01)}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_changed_rows_update_their_activity_in_place(tmp_path: Path, make_sandbox: Any,
                                                      mode: str) -> None:
    server = make_sandbox(**QUICK, bulk_rate=parse_rate("100/1s"))
    night_1 = _night(tmp_path / "n1.csv", [_row(n) for n in range(1, 10)])
    first = run_cli(*_args(night_1, tmp_path / "r1.csv", tmp_path, server.url))
    assert first.code == 0 and first.summary["posted"] == 9, first.stderr
    created = {row["key"]: row["activity_id"] for row in read_results(tmp_path / "r1.csv")
               .values()}
    # Night 2: orders 1-3 shipped (note and amount changed), order 4 emptied its amount,
    # order 10 is new.
    rows = [_row(n, note=f"order {n} shipped", amount=f"{n}.75") for n in (1, 2, 3)]
    rows += [_row(4, amount=" ")] + [_row(n) for n in range(5, 11)]
    night_2 = _night(tmp_path / "n2.csv", rows)
    second = run_cli(*_args(night_2, tmp_path / "r2.csv", tmp_path, server.url,
                            "--on-changed", "update", "--mode", mode, "--bulk-rate", "100/1s"))
    assert second.code == 0, second.stderr
    summary = second.summary
    assert (summary["updated"], summary["posted"], summary["skipped"], summary["changed"]) == (
        4, 1, 5, 0)
    results = read_results(tmp_path / "r2.csv")
    for row in (1, 2, 3, 4):  # updated with the Id night 1 created
        line = results[row]
        assert (line["status"], line["activity_id"]) == ("updated", created[line["key"]])
    held = _by_order(server)
    assert all(len(entries) == 1 for entries in held.values()) and len(held) == 10
    shipped = held["ORD-00002"][0]
    assert shipped["ActivityNote"] == "order 2 shipped"
    assert shipped["Fields"]["mx_Custom_2"] == "2.75"
    assert [update["Bulk"] for update in shipped["Updates"]] == [mode == "bulk"]
    assert held["ORD-00004"][0]["Fields"]["mx_Custom_2"] == " "  # emptied upstream
    assert "Updates" not in held["ORD-00005"][0]
    assert server.stats()["updated"] == 4
    # `bulkpost verify` reads the updated activities back too: their new values are stored.
    checked = run_cli("verify", tmp_path / "r2.csv", "--input", night_2, "--mapping",
                      tmp_path / "mapping.toml", "--host", server.url, "--rate", "100/1s",
                      "--log-format", "json")
    assert checked.code == 0, checked.stderr
    assert (checked.summary["posted"], checked.summary["checked"],
            checked.summary["differ"]) == (5, 5, 0)
    # The history holds the new content: the same night again changes nothing.
    again = run_cli(*_args(night_2, tmp_path / "r2-again.csv", tmp_path, server.url,
                           "--on-changed", "update", "--mode", mode))
    assert again.code == 0 and again.summary["updated"] == 0 and again.summary["posted"] == 0
    assert server.stats()["updated"] == 4


@pytest.mark.e2e
def test_a_row_whose_date_time_or_event_changed_is_not_updated_and_says_why(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    _first_night(tmp_path, server.url, [_row(n) for n in (1, 2)])
    night_2 = _night(tmp_path / "n2.csv", [_row(1, when="2025-07-01 09:00:00", note="moved"),
                                           _row(2, note="corrected")])
    second = run_cli(*_args(night_2, tmp_path / "r2.csv", tmp_path, server.url,
                            "--on-changed", "update"))
    assert second.code == 0, second.stderr
    assert (second.summary["updated"], second.summary["changed"]) == (1, 1)
    line = read_results(tmp_path / "r2.csv")[1]
    assert (line["status"], line["error_type"]) == ("skipped", "changed")
    assert "its lead or date-time changed, which an update cannot change" in line["error"]
    # The hint naming post says what post does: a second activity, not an update.
    assert "--on-changed post would create a new activity beside the existing one (a second " \
           "copy)" in line["error"]
    warnings = [event for event in _events(second.stderr)
                if event["level"] == "warning"]
    assert [event["event"] for event in warnings] == ["history.changed_skipped"]
    # The warning names the option given, and what the others would do.
    assert warnings[0]["on_changed"] == "update"
    assert "post creates a new activity beside each (a second copy)" in warnings[0]["next"]
    assert "--on-changed post sends them" not in second.stderr
    assert server.stats()["updated"] == 1 and len(server.ledger()) == 2


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_an_update_of_a_deleted_activity_is_rejected_with_the_reason(
        tmp_path: Path, make_sandbox: Any, mode: str) -> None:
    server = make_sandbox(**QUICK, bulk_rate=parse_rate("100/1s"))
    _first_night(tmp_path, server.url, [_row(n) for n in (1, 2)])
    gone = read_results(tmp_path / "r1.csv")[1]["activity_id"]

    async def delete() -> None:
        server.sandbox.store._by_id.pop(gone)

    server.call(delete())
    night_2 = _night(tmp_path / "n2.csv", [_row(n, note="shipped") for n in (1, 2)])
    second = run_cli(*_args(night_2, tmp_path / "r2.csv", tmp_path, server.url,
                            "--on-changed", "update", "--max-attempts", "2", "--mode", mode,
                            "--bulk-rate", "100/1s"))
    assert second.code == 1 and (second.summary["rejected"], second.summary["updated"]) == (1, 1)
    line = read_results(tmp_path / "r2.csv")[1]
    assert (line["status"], line["error_type"]) == ("rejected",
                                                    "MXUnknownProspectActivityException")
    assert line["error"] == ("the activity is missing or deleted in LeadSquared: "
                             f"Activity {gone} does not exist")
    assert second.summary["retries"] == 0  # the same on every retry: sent once
    assert len(server.ledger()) == 2  # nothing created in its place


@pytest.mark.e2e
def test_a_lost_update_answer_is_sent_again_without_a_look_up(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    _first_night(tmp_path, server.url, [_row(n) for n in (1, 2, 3)])
    lookups_before = server.stats()["lookups"]
    server.sandbox.faults = {"reset-after": 1.0}  # every answer lost, after the update
    night_2 = _night(tmp_path / "n2.csv", [_row(n, note="shipped") for n in (1, 2, 3)])
    second = run_cli(*_args(night_2, tmp_path / "r2.csv", tmp_path, server.url,
                            "--on-changed", "update", "--max-attempts", "3",
                            "--no-preflight", "--verify-first", "0"))
    assert second.code == 1 and second.summary["failed"] == 3, second.stderr
    stats = server.stats()
    assert stats["updated"] == 9 and stats["lookups"] == lookups_before  # 3 × 3, no look-up
    server.sandbox.faults = {}
    third = run_cli(*_args(night_2, tmp_path / "r2.csv", tmp_path, server.url,
                           "--on-changed", "update", "--no-preflight", "--verify-first", "0"))
    assert third.code == 0 and third.summary["updated"] == 3, third.stderr
    assert server.stats()["lookups"] == lookups_before and len(server.ledger()) == 3
    assert {e["ActivityNote"] for e in server.ledger()} == {"shipped"}


@pytest.mark.e2e
def test_a_row_left_unfinished_is_finished_by_the_next_night_without_it(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    _first_night(tmp_path, server.url, [_row(n) for n in (1, 2)])
    # Night 2: order 3 is new, but every call fails with an HTTP 500 (it may have been
    # created, and the look-up fails too): it ends the night unknown.
    server.sandbox.faults = {"500-before": 1.0}
    night_2 = _night(tmp_path / "n2.csv", [_row(3)])
    second = run_cli(*_args(night_2, tmp_path / "r2.csv", tmp_path, server.url,
                            "--max-attempts", "2", "--no-preflight", "--verify-first", "0"))
    assert second.code == 1 and second.summary["unknown"] == 1
    with History(tmp_path / "history.db").open(lock=False) as store:
        assert store.stats()["waiting"] == 1
    server.sandbox.faults = {}
    # Night 3's export no longer has order 3: it is carried over, and created once.
    night_3 = _night(tmp_path / "n3.csv", [_row(4)])
    third = run_cli(*_args(night_3, tmp_path / "r3.csv", tmp_path, server.url))
    assert third.code == 0, third.stderr
    assert (third.summary["posted"], third.summary["carried"],
            third.summary["carried_done"], third.summary["carried_left"]) == (1, 1, 1, 0)
    carried = [event for event in _events(third.stderr)
               if event["event"] == "row.carried_over"]
    assert [(c["key"], c["input"].endswith("n2.csv"), c["row"], c["status"])
            for c in carried] == [("ORD-00003", True, 1, "posted")]
    assert Counter(e["Fields"]["mx_Custom_1"] for e in server.ledger()) == {
        "ORD-00001": 1, "ORD-00002": 1, "ORD-00003": 1, "ORD-00004": 1}
    with History(tmp_path / "history.db").open(lock=False) as store:
        assert store.stats()["waiting"] == 0
        assert store.lookup("ORD-00003")["posted"]  # type: ignore[index]


def test_a_schema_1_history_is_upgraded_in_place_keeping_its_keys_and_claims(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
            INSERT INTO meta VALUES ('schema', '1');
            CREATE TABLE runs (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE,
                started INTEGER NOT NULL, finished INTEGER, input TEXT NOT NULL DEFAULT '',
                results TEXT NOT NULL DEFAULT '', exit_code INTEGER, posted INTEGER,
                skipped INTEGER, changed INTEGER);
            CREATE TABLE keys (key TEXT PRIMARY KEY, activity_id TEXT NOT NULL,
                event_code INTEGER, content_hash INTEGER NOT NULL, run INTEGER NOT NULL,
                at INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE claims (key TEXT NOT NULL, content_hash INTEGER NOT NULL,
                event_code INTEGER, run INTEGER NOT NULL, at INTEGER NOT NULL,
                PRIMARY KEY (key, content_hash)) WITHOUT ROWID;
            INSERT INTO runs (run_id, started) VALUES ('night-1', 1);
            INSERT INTO keys VALUES ('ORD-00001', 'act-1', 201, 42, 1, 1);
            INSERT INTO claims VALUES ('ORD-00002', 43, 201, 1, 1);
        """)
    with History(path).open(lock=False) as store:
        assert store.meta("schema") == "2"
        entry = store.lookup("ORD-00001")
        assert entry is not None and entry["activity_id"] == "act-1"
        stats = store.stats()
        assert (stats["posted"], stats["claims"], stats["waiting"]) == (1, 1, 0)


# -- three nights --------------------------------------------------------------------------
# Faults before and after saving, resets, rate limits, and an MX error after the call was
# carried out (``mx-after``: a refusal it does not prove, looked up or, for an update, sent
# again).
NIGHT_FAULTS = {"500-before": 0.04, "500-after": 0.04, "reset-before": 0.04,
                "reset-after": 0.04, "hang-after": 0.02, "429-other": 0.04,
                "ratelimit-200": 0.02, "bulk-partial": 0.1, "mx-after": 0.04}


def _killed_when_updated(server: Any, args: list[str | Path], updates: int) -> None:
    """Run the CLI; the sandbox SIGKILLs it the moment it makes its ``updates``-th update,
    before answering it."""
    run_killed(server, args, lambda kill: server.sandbox.watch_updates(updates, kill),
               f"{updates} updates were made")


def _content(row: list[str]) -> tuple[str, str]:
    """What the activity of an input row must hold: its note and amount."""
    return row[2], row[4]


@pytest.mark.e2e
def test_three_nights_each_key_once_with_the_latest_content(tmp_path: Path,
                                                              make_sandbox: Any) -> None:
    server = make_sandbox(rate="100/1s", bulk_rate=parse_rate("100/1s"), seed=11,
                          latency=(0.0, 0.01), slow_seconds=1.5)
    night_1 = {n: _row(n) for n in range(1, 31)}
    first = run_cli(*_args(_night(tmp_path / "n1.csv", list(night_1.values())),
                           tmp_path / "r1.csv", tmp_path, server.url))
    assert first.code == 0 and first.summary["posted"] == 30, first.stderr
    created = {line["key"]: line["activity_id"]
               for line in read_results(tmp_path / "r1.csv").values()}

    # Night 2: a third of night 1's rows changed, ten new; killed in the middle of its
    # updates under faults, then resumed (the same command) with one attempt each while
    # every answer is lost once the change is saved: what the kill left ends the night
    # failed (it may be done), to be finished by night 3.
    night_2 = dict(night_1)
    night_2.update({n: _row(n, note=f"order {n} shipped", amount=f"{n}.75")
                    for n in range(1, 11)})
    night_2.update({n: _row(n) for n in range(31, 41)})
    server.sandbox.faults = NIGHT_FAULTS
    args = _args(_night(tmp_path / "n2.csv", list(night_2.values())), tmp_path / "r2.csv",
                 tmp_path, server.url, "--on-changed", "update", "--mode", "both",
                 "--bulk-rate", "100/1s", "--timeout", "1", "--workers", "1")
    _killed_when_updated(server, args, 3)
    server.sandbox.faults = {"500-after": 1.0}
    resumed = run_cli(*args, "--max-attempts", "1")
    assert resumed.code == 1, resumed.stderr[-3000:]
    server.sandbox.faults = NIGHT_FAULTS
    night_2_lines = read_results(tmp_path / "r2.csv")
    unfinished = sorted(int(line["key"][4:]) for line in night_2_lines.values()
                        if line["status"] in ("failed", "unknown"))
    assert unfinished and all(night_2_lines[n]["status"] == "failed" for n in unfinished)
    for line in night_2_lines.values():
        if line["status"] == "updated":  # with the Id night 1 created
            assert line["activity_id"] == created[line["key"]]

    # Night 3: the first unfinished row is missing from the export; three rows changed
    # again; five new ones. Faults on; run as a scheduler would until it is done.
    dropped = unfinished[0]
    night_3 = {n: row for n, row in night_2.items() if n != dropped}
    night_3.update({n: _row(n, note=f"order {n} delivered", amount=f"{n}.99")
                    for n in (11, 12, 13)})
    night_3.update({n: _row(n) for n in range(41, 46)})
    args = _args(_night(tmp_path / "n3.csv", list(night_3.values())), tmp_path / "r3.csv",
                 tmp_path, server.url, "--on-changed", "update", "--mode", "both",
                 "--bulk-rate", "100/1s", "--timeout", "1", "--max-attempts", "8")
    carried: list[dict[str, Any]] = []
    for _ in range(3):
        third = run_cli(*args)
        carried += [event for event in _events(third.stderr)
                    if event["event"] == "row.carried_over"]
        if third.code == 0:
            break
    assert third.code == 0, third.stderr[-3000:]

    # The sandbox holds each key's activity once, with the latest night's content; night
    # 1's rows keep the activity night 1 created.
    held = _by_order(server)
    assert sorted(held) == [f"ORD-{n:05d}" for n in range(1, 46)]
    assert all(len(entries) == 1 for entries in held.values())
    latest = {**night_2, **night_3}
    for n, row in latest.items():
        entry = held[f"ORD-{n:05d}"][0]
        assert (entry["ActivityNote"], entry["Fields"]["mx_Custom_2"]) == _content(row), n
        if n <= 30:
            assert entry["Id"] == created[f"ORD-{n:05d}"], n
    for n in (*range(1, 11), 11, 12, 13):
        assert held[f"ORD-{n:05d}"][0].get("Updates"), n  # changed in place
    # The row night 2 left unfinished, missing from night 3's export, was delivered on
    # night 3 as carried over, naming where it came from.
    done = [c for c in carried if c["key"] == f"ORD-{dropped:05d}"
            and c["status"] in ("posted", "updated")]
    assert done and done[-1]["input"].endswith("n2.csv"), carried
    assert done[-1]["row"] == list(night_2).index(dropped) + 1
    with History(tmp_path / "history.db").open(lock=False) as store:
        assert store.stats()["waiting"] == 0


@pytest.mark.e2e
def test_a_row_left_unfinished_never_comes_back_over_newer_content(
        tmp_path: Path, make_sandbox: Any) -> None:
    """Night 2 leaves an update (order 1) and a create (order 3) unfinished; night 3 brings
    newer content of both; night 4's export has neither: nothing older is carried."""
    server = make_sandbox(**QUICK)
    quick = ("--on-changed", "update", "--no-preflight", "--verify-first", "0")
    _first_night(tmp_path, server.url, [_row(1), _row(2)])
    server.sandbox.faults = {"500-before": 1.0}
    night_2 = _night(tmp_path / "n2.csv", [_row(1, note="v1"), _row(2), _row(3, note="v1")])
    second = run_cli(*_args(night_2, tmp_path / "r2.csv", tmp_path, server.url,
                            "--max-attempts", "1", *quick))
    assert second.summary["failed"] == 2, second.stderr
    server.sandbox.faults = {}
    night_3 = _night(tmp_path / "n3.csv", [_row(1, note="v2"), _row(2), _row(3, note="v2")])
    third = run_cli(*_args(night_3, tmp_path / "r3.csv", tmp_path, server.url, *quick))
    assert third.code == 0 and (third.summary["updated"], third.summary["posted"]) == (1, 1)
    night_4 = _night(tmp_path / "n4.csv", [_row(2)])
    fourth = run_cli(*_args(night_4, tmp_path / "r4.csv", tmp_path, server.url, *quick))
    assert fourth.code == 0 and fourth.summary["carried"] == 0, fourth.stderr
    held = _by_order(server)
    assert {order: [e["ActivityNote"] for e in entries] for order, entries in held.items()} == {
        "ORD-00001": ["v2"], "ORD-00002": ["order 2 open"], "ORD-00003": ["v2"]}
    with History(tmp_path / "history.db").open(lock=False) as store:
        # The old update is dropped; the old create stays a claim, to be looked up if that
        # content comes again, but is not waiting to be carried.
        assert store.lookup("ORD-00001")["claims"] == []  # type: ignore[index]
        assert len(store.lookup("ORD-00003")["claims"]) == 1  # type: ignore[index]
        assert store.stats()["waiting"] == 0


@pytest.mark.e2e
def test_a_carried_row_refused_fails_the_night_once_and_says_so(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    quick = ("--on-changed", "update", "--no-preflight", "--verify-first", "0")
    _first_night(tmp_path, server.url, [_row(1), _row(2)])
    gone = read_results(tmp_path / "r1.csv")[1]["activity_id"]
    server.sandbox.faults = {"500-before": 1.0}
    night_2 = _night(tmp_path / "n2.csv", [_row(1, note="shipped"), _row(2)])
    second = run_cli(*_args(night_2, tmp_path / "r2.csv", tmp_path, server.url,
                            "--max-attempts", "1", *quick))
    assert second.summary["failed"] == 1, second.stderr
    server.sandbox.faults = {}

    async def delete() -> None:  # deleted in LeadSquared meanwhile
        server.sandbox.store._by_id.pop(gone)

    server.call(delete())
    night_3 = _night(tmp_path / "n3.csv", [_row(2)])
    third = run_cli(*_args(night_3, tmp_path / "r3.csv", tmp_path, server.url, *quick))
    assert third.code == 1 and (third.summary["carried"], third.summary["carried_rejected"],
                                third.summary["carried_left"]) == (1, 1, 0)
    assert "rows carried over from earlier runs not posted: 1 row refused" in third.stderr
    [carried] = [event for event in _events(third.stderr)
                 if event.get("event") == "row.carried_over"]
    assert carried["status"] == "rejected" and "does not exist" in carried["error"]
    fourth = run_cli(*_args(night_3, tmp_path / "r4.csv", tmp_path, server.url, *quick))
    assert fourth.code == 0 and fourth.summary["carried"] == 0  # refused: not carried again


def test_what_is_carried_follows_the_runs_order_not_the_clock(tmp_path: Path,
                                                              monkeypatch: Any) -> None:
    """Three runs in one second (times have whole seconds): an update claimed after its key
    was posted is carried; a create claim superseded by a later run's post is not."""
    from bulkpost.core.activity import Activity, content_hash

    monkeypatch.setattr("bulkpost.storage.history.database.time.time", lambda: 1_800_000_000.0)
    path = tmp_path / "h.db"

    def item(key: str, note: str) -> Activity:
        body = json.dumps({"RelatedProspectId": LEADS[0], "ActivityEvent": 201,
                           "ActivityNote": note}).encode()
        return Activity(1, key, LEADS[0], body, content_hash(body), 201)

    def run(run_id: str, act: Any) -> None:
        with History(path, run_id).open() as store:
            store.register("export.csv", "results.csv")
            act(store)
            store.commit(store.take())

    run("night-1", lambda s: (s.posted(item("U", "v0"), "act-u"), s.sending(item("C", "v1"))))
    run("night-2", lambda s: s.sending(item("U", "v1"), update_of="act-u"))
    run("night-3", lambda s: s.posted(item("C", "v2"), "act-c"))
    with History(path, "night-4").open() as store:
        carried = store.carried()
        assert [(c.key, c.update_of) for c in carried] == [("U", "act-u")]
        assert store.stats()["waiting"] == 1


# -- a migration loaded without --history, imported, then nightly updates ------------------
def _migrate(tmp_path: Path, url: str, rows: list[list[str]]) -> tuple[Path, dict[str, str]]:
    """The migration: ``rows`` loaded without --history (``mig.csv``, results ``rm.csv``).
    Returns the input and each key's activity Id."""
    migration = _night(tmp_path / "mig.csv", rows)
    args = _args(migration, tmp_path / "rm.csv", tmp_path, url)
    at = args.index("--history")
    done = run_cli(*args[:at], *args[at + 2:])  # the same command, without the history
    assert done.code == 0, done.stderr
    return migration, {line["key"]: line["activity_id"]
                       for line in read_results(tmp_path / "rm.csv").values()}


@pytest.mark.e2e
def test_a_migration_imported_with_its_input_is_updated_in_place_by_nightly_loads(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    migration, created = _migrate(tmp_path, server.url, [_row(n) for n in range(1, 41)])
    history = tmp_path / "history.db"
    imported = run_cli("history", "import", tmp_path / "rm.csv", "--history", history,
                       "--input", migration, "--mapping", tmp_path / "mapping.toml")
    assert imported.code == 0, imported.stderr
    [counts] = imported.summary["imported"]
    assert (counts["posted"], counts["identified"], counts["not_identified"],
            counts["not_matching"]) == (40, 40, 0, 0)
    assert "cannot update" not in imported.stderr
    assert ("40 keys posted, 40 of them with their lead, date-time and event code "
            "(updatable), 0 to look up first") in imported.stderr
    with History(history).open(lock=False) as store:
        assert store.stats()["by_event_code"] == [{"event_code": 201, "keys": 40}]
    # Night 1: 30 orders changed (note and amount), 10 as they were, 5 new.
    rows = [_row(n, note=f"order {n} shipped", amount=f"{n}.75") for n in range(1, 31)]
    rows += [_row(n) for n in range(31, 46)]
    night_1 = _night(tmp_path / "n1.csv", rows)
    first = run_cli(*_args(night_1, tmp_path / "r1.csv", tmp_path, server.url,
                           "--on-changed", "update"))
    assert first.code == 0, first.stderr
    summary = first.summary
    assert (summary["updated"], summary["posted"], summary["skipped"], summary["changed"]) == (
        30, 5, 10, 0)
    assert "history.changed_skipped" not in first.stderr
    results = read_results(tmp_path / "r1.csv")
    for row in range(1, 31):  # updated in place: the migration's activity
        assert (results[row]["status"], results[row]["activity_id"]) == (
            "updated", created[results[row]["key"]])
    held = _by_order(server)
    assert len(held) == 45 and all(len(entries) == 1 for entries in held.values())
    assert {entries[0]["Id"] for order, entries in held.items()
            if order in created} == set(created.values())
    assert held["ORD-00007"][0]["ActivityNote"] == "order 7 shipped"
    assert held["ORD-00007"][0]["Fields"]["mx_Custom_2"] == "7.75"
    assert len(held["ORD-00007"][0]["Updates"]) == 1 and "Updates" not in held["ORD-00035"][0]
    # Night 2: one more change, one more order; the rest as night 1 left them.
    rows[0] = _row(1, note="order 1 delivered", amount="1.75")
    second = run_cli(*_args(_night(tmp_path / "n2.csv", [*rows, _row(46)]), tmp_path / "r2.csv",
                            tmp_path, server.url, "--on-changed", "update"))
    assert second.code == 0, second.stderr
    assert (second.summary["updated"], second.summary["posted"],
            second.summary["skipped"]) == (1, 1, 44)
    held = _by_order(server)
    assert len(held) == 46 and all(len(entries) == 1 for entries in held.values())
    assert held["ORD-00001"][0]["Id"] == created["ORD-00001"]
    assert held["ORD-00001"][0]["ActivityNote"] == "order 1 delivered"
    assert server.stats()["updated"] == 31


@pytest.mark.e2e
def test_an_import_says_what_it_could_not_record_and_which_rows_do_not_match(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    migration, created = _migrate(tmp_path, server.url, [_row(n) for n in range(1, 6)])
    mapping = tmp_path / "mapping.toml"
    # Without the input: imported as before, saying what later updates cannot do and how to
    # fix it.
    bare = run_cli("history", "import", tmp_path / "rm.csv", "--history", tmp_path / "h1.db")
    assert bare.code == 0, bare.stderr
    assert bare.summary["imported"][0]["not_identified"] == 5
    assert ("5 posted keys recorded without their lead, date-time and event code: a later "
            "run with --on-changed update cannot update them") in bare.stderr
    assert "import again with --input and --mapping" in bare.stderr
    # A night that changes a row then skips it, saying why and what post would do.
    rows = [_row(1, note="order 1 shipped"), *[_row(n) for n in range(2, 6)]]
    _night(tmp_path / "n.csv", rows)
    skipped_night = run_cli("run", tmp_path / "n.csv", "--mapping", mapping, "--results",
                            tmp_path / "r1b.csv", "--history", tmp_path / "h1.db", "--host",
                            server.url, "--rate", "100/1s", "--log-format", "json",
                            "--on-changed", "update")
    assert skipped_night.code == 0, skipped_night.stderr
    line = read_results(tmp_path / "r1b.csv")[1]
    assert (line["status"], line["error_type"]) == ("skipped", "changed")
    assert "--input INPUT --mapping MAPPING records them" in line["error"]
    assert "would create a new activity beside the existing one" in line["error"]
    [warning] = [e for e in _events(skipped_night.stderr) if e["level"] == "warning"]
    assert warning["on_changed"] == "update" and "(a second copy)" in warning["next"]
    # With an input that is not quite the one loaded: rows 2 and 4 were edited since.
    edited = [_row(1), _row(2, note="edited"), _row(3), _row(4, amount="9.99"), _row(5)]
    other = _night(tmp_path / "edited.csv", edited)
    checked = run_cli("history", "import", tmp_path / "rm.csv", "--history",
                      tmp_path / "h2.db", "--input", other, "--mapping", mapping)
    assert checked.code == 0, checked.stderr
    counts = checked.summary["imported"][0]
    assert (counts["identified"], counts["not_identified"], counts["not_matching"]) == (3, 2, 2)
    assert [problem.split(":")[0] for problem in counts["rows_not_matching"]] == ["row 2",
                                                                                   "row 4"]
    assert "2 rows recorded posted do not match the input" in checked.stderr
    assert "  row 2: maps to content" in checked.stderr
    assert len(created) == 5
    # --input without --mapping is refused.
    alone = run_cli("history", "import", tmp_path / "rm.csv", "--history", tmp_path / "h3.db",
                    "--input", migration)
    assert alone.code == 2 and "--input and --mapping go together" in alone.stderr
