"""End to end: the account's history, kept by default, so that the same rows loaded again
under another results file are not created a second time (issue: "the same rows under
another results file")."""

from __future__ import annotations

import os
import stat
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import bulkpost
from bulkpost.core.credentials import account_digest
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from bulkpost.storage.history.accounts import account_history_path
from bulkpost.storage.history.database import History
from tests.conftest import KEYED_MAPPING, CliResult, run_cli, write_csv

pytestmark = pytest.mark.e2e

UNKEYED_MAPPING = KEYED_MAPPING.replace('key_column = "key"\n', "")


def _lead(n: int) -> str:
    return str(uuid.UUID(int=(n + 7) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128, version=4))


def _export(tmp_path: Path, count: int, name: str = "in.csv", first: int = 1) -> Path:
    rows = [[f"K{n:05d}", _lead(n % 11), f"call {n}",
             f"2023-05-{1 + n % 28:02d} 10:{n % 60:02d}:00", f"v{n}"]
            for n in range(first, first + count)]
    return write_csv(tmp_path / name, ["key", "lead", "note", "when", "value"], rows)


def _mapping(tmp_path: Path, text: str = KEYED_MAPPING) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    return path


def _load(data: Path, mapping: Path, results: Path, url: str, *extra: str) -> CliResult:
    return run_cli("run", data, "--mapping", mapping, "--results", results, "--host", url,
                   "--rate", "100/1s", "--log-format", "json", *extra)


def _creates(server: Any) -> Counter[str]:
    return Counter(entry["Fields"]["mx_Custom_1"] for entry in server.ledger())


def test_a_second_results_file_creates_nothing_again(tmp_path: Path, make_sandbox: Any,
                                                    account_data: Path) -> None:
    server = make_sandbox()
    data, mapping = _export(tmp_path, 30), _mapping(tmp_path)
    first = _load(data, mapping, tmp_path / "results-2026-12-05.csv", server.url)
    assert first.code == 0, first.stderr
    assert first.summary["posted"] == 30 and first.summary["created_before"] == 0
    # The next night, cron names the results file after the date: the same export again.
    again = _load(data, mapping, tmp_path / "results-2026-12-06.csv", server.url)
    assert again.code == 0, again.stderr
    assert again.summary["posted"] == 0
    assert again.summary["skipped"] == again.summary["created_before"] == 30
    assert set(_creates(server).values()) == {1} and len(_creates(server)) == 30
    assert "nothing sent: this account's history shows all 30 rows created before" in again.stderr
    assert "--create-again" in again.stderr
    # Where it lives: the data directory, one file per host and access key (a digest).
    history = Path(again.summary["history"])
    assert history == account_history_path(server.url, DEFAULT_ACCESS_KEY)
    assert history.parent == account_data / "accounts" and history.is_file()
    assert account_digest(DEFAULT_ACCESS_KEY) in history.name
    assert DEFAULT_ACCESS_KEY not in history.name and DEFAULT_SECRET_KEY not in history.name
    assert stat.S_IMODE(os.stat(history.parent).st_mode) == 0o700
    assert DEFAULT_SECRET_KEY.encode() not in history.read_bytes()


def test_rows_without_a_key_column_are_known_by_their_content(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data, mapping = _export(tmp_path, 12), _mapping(tmp_path, UNKEYED_MAPPING)
    assert _load(data, mapping, tmp_path / "a.csv", server.url).summary["posted"] == 12
    # The same rows, with two new ones, from an export under another name.
    bigger = _export(tmp_path, 14, name="export-2.csv")
    again = _load(bigger, mapping, tmp_path / "b.csv", server.url)
    assert again.code == 0, again.stderr
    assert (again.summary["posted"], again.summary["created_before"]) == (2, 12)
    assert len(server.ledger()) == 14 and set(_creates(server).values()) == {1}


def test_create_again_is_asked_for_by_name(tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data, mapping = _export(tmp_path, 5), _mapping(tmp_path)
    assert _load(data, mapping, tmp_path / "a.csv", server.url).code == 0
    again = _load(data, mapping, tmp_path / "b.csv", server.url, "--create-again")
    assert again.code == 0, again.stderr
    assert again.summary["posted"] == 5 and "history" not in again.summary
    assert set(_creates(server).values()) == {2}  # what the user asked for, by name
    for extra in (("--history", str(tmp_path / "h.db")), ("--on-changed", "update")):
        refused = _load(data, mapping, tmp_path / "c.csv", server.url, "--create-again", *extra)
        assert refused.code == 2 and "--create-again runs without a history" in refused.stderr
    assert len(server.ledger()) == 10


def test_the_dry_run_says_which_rows_were_created_before(tmp_path: Path,
                                                         make_sandbox: Any) -> None:
    server = make_sandbox()
    mapping = _mapping(tmp_path)
    assert _load(_export(tmp_path, 8), mapping, tmp_path / "a.csv", server.url).code == 0
    tonight = _export(tmp_path, 10, name="tonight.csv", first=5)  # rows 5..8 known, 9..14 new
    dry = _load(tonight, mapping, tmp_path / "b.csv", server.url, "--dry-run")
    assert dry.code == 0, dry.stderr
    assert dry.summary["to_send"] == 6 and dry.summary["created_before"] == 4
    assert "dry run: 6 rows to send, 0 invalid" in dry.stderr
    assert "4 rows not to send: created before from the same rows" in dry.stderr
    assert len(server.ledger()) == 8
    real = _load(tonight, mapping, tmp_path / "b.csv", server.url)
    assert (real.summary["posted"], real.summary["created_before"]) == (6, 4)
    assert len(server.ledger()) == 14 and set(_creates(server).values()) == {1}


def test_a_rehearsal_on_a_sandbox_never_mixes_with_another_host(tmp_path: Path,
                                                                 make_sandbox: Any) -> None:
    rehearsal, account = make_sandbox(), make_sandbox()
    data, mapping = _export(tmp_path, 6), _mapping(tmp_path)
    assert _load(data, mapping, tmp_path / "a.csv", rehearsal.url).summary["posted"] == 6
    real = _load(data, mapping, tmp_path / "b.csv", account.url)
    assert real.summary["posted"] == 6 and len(account.ledger()) == 6
    assert (account_history_path(rehearsal.url, DEFAULT_ACCESS_KEY)
            != account_history_path(account.url, DEFAULT_ACCESS_KEY))


def test_history_where_and_stats_find_the_accounts_history(tmp_path: Path,
                                                           make_sandbox: Any) -> None:
    server = make_sandbox()
    data, mapping = _export(tmp_path, 7), _mapping(tmp_path)
    loaded = _load(data, mapping, tmp_path / "a.csv", server.url)
    where = run_cli("history", "where", "--host", server.url)
    assert where.code == 0 and where.stdout.strip() == loaded.summary["history"]
    stats = run_cli("history", "stats", "--host", server.url, "--json")
    assert stats.code == 0, stats.stderr
    assert stats.summary["posted"] == 7 and stats.summary["history"] == where.stdout.strip()
    elsewhere = make_sandbox()
    none = run_cli("history", "stats", "--host", elsewhere.url)
    assert none.code == 2 and "no such history" in none.stderr


def test_the_python_api_keeps_the_accounts_history_too(tmp_path: Path,
                                                       make_sandbox: Any) -> None:
    server = make_sandbox()
    data, mapping = _export(tmp_path, 9), _mapping(tmp_path)
    keys = {"host": server.url, "access_key": DEFAULT_ACCESS_KEY,
            "secret_key": DEFAULT_SECRET_KEY, "rate": "100/1s"}
    first = bulkpost.run(data, mapping, tmp_path / "a.csv", **keys)
    second = bulkpost.run(data, mapping, tmp_path / "b.csv", **keys)
    assert (first.posted, second.posted, second.created_before) == (9, 0, 9)
    assert len(server.ledger()) == 9
    with pytest.raises(bulkpost.UsageError, match="create_again= runs without a history"):
        bulkpost.run(data, mapping, tmp_path / "c.csv", create_again=True,
                     history=tmp_path / "h.db", **keys)


def test_a_second_run_on_the_account_at_once_is_refused_naming_what_to_do(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data, mapping = _export(tmp_path, 3), _mapping(tmp_path)
    path = account_history_path(server.url, DEFAULT_ACCESS_KEY)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = History(path, "another-run").open()  # another load on the account, running
    try:
        refused = _load(data, mapping, tmp_path / "r.csv", server.url)
    finally:
        holder.close()
    assert refused.code == 2, refused.stderr
    assert f"another bulkpost run is using this history database (pid {os.getpid()}" \
        in refused.stderr
    assert "this account's history" in refused.stderr and "--history FILE" in refused.stderr
    assert server.ledger() == [] and not (tmp_path / "r.csv").exists()
    assert _load(data, mapping, tmp_path / "r.csv", server.url).summary["posted"] == 3


def test_an_unwritable_data_directory_says_what_to_do(tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    data, mapping = _export(tmp_path, 2), _mapping(tmp_path)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the data directory should be")
    refused = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                      "--host", server.url, "--rate", "100/1s",
                      BULKPOST_DATA_DIR=str(blocked / "data"))
    assert refused.code == 2, refused.stderr
    assert "cannot keep this account's history there" in refused.stderr
    assert "BULKPOST_DATA_DIR" in refused.stderr and "--create-again" in refused.stderr
    assert "Traceback" not in refused.stderr and server.ledger() == []


def test_a_default_port_names_the_same_history() -> None:
    assert account_history_path("https://api-in21.leadsquared.com:443", "k") \
        == account_history_path("api-in21.leadsquared.com", "k")
    assert account_history_path("http://127.0.0.1:8750", "k") \
        != account_history_path("http://127.0.0.1:8751", "k")
