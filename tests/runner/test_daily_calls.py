"""End to end: a day's budget of calls (``--daily-calls``) and a share of the rate limit
(``--share``), against the sandbox."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.credentials import Credentials
from bulkpost.runner.limits import account_tag
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from bulkpost.storage.budget import meta_name
from bulkpost.storage.history.accounts import account_history_path
from tests.conftest import (
    KEYED_MAPPING,
    CliResult,
    read_results,
    run_cli,
    run_cli_process,
    write_csv,
)

pytestmark = pytest.mark.e2e

BUDGET_SPENT = 4


def _lead(n: int) -> str:
    return str(uuid.UUID(int=(n + 7) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128, version=4))


def _inputs(tmp_path: Path, count: int) -> tuple[Path, Path]:
    rows = [[f"K{n:05d}", _lead(n % 11), f"call {n}",
             f"2023-05-{1 + n % 28:02d} 10:{n % 60:02d}:00", f"v{n}"]
            for n in range(1, count + 1)]
    data = write_csv(tmp_path / "in.csv", ["key", "lead", "note", "when", "value"], rows)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(KEYED_MAPPING)
    return data, mapping


def _load(data: Path, mapping: Path, results: Path, url: str, *extra: str) -> CliResult:
    return run_cli("run", data, "--mapping", mapping, "--results", results, "--host", url,
                   "--rate", "100/1s", "--log-format", "json", *extra)


def _account() -> str:
    return account_tag(Credentials(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY))


def _today(zone: str = "UTC") -> date:
    from zoneinfo import ZoneInfo

    return datetime.now(UTC).astimezone(ZoneInfo(zone)).date()


def test_a_spent_budget_stops_cleanly_and_a_new_day_resumes(tmp_path: Path,
                                                            make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 50)
    server = make_sandbox(latency=(0.01, 0.05))
    results = tmp_path / "r.csv"
    # In a process of its own: a run stopped with its input read in part exits cleanly.
    first = run_cli_process("run", data, "--mapping", mapping, "--results", results,
                            "--host", server.url, "--rate", "100/1s", "--log-format",
                            "json", "--daily-calls", "20")
    assert first.code == BUDGET_SPENT, first.stderr
    assert f"bulkpost run {data} --mapping {mapping} --results {results}" in first.stderr
    summary = first.summary
    assert server.stats()["calls"] <= 20  # the zone's question included
    assert summary["calls_today"] == summary["calls"] == server.stats()["calls"]
    assert summary["daily_calls"] == 20 and summary["budget_spent"] is True
    assert summary["exit_code"] == BUDGET_SPENT and "aborted" not in summary
    assert "budget of 20 calls (--daily-calls) is spent" in first.stderr
    assert "renews at the account's midnight" in first.stderr and " UTC (" in first.stderr
    # Every row the run finished is recorded as what happened; the rest wait, untouched.
    recorded = read_results(results)
    created = {entry["Fields"]["mx_Custom_1"] for entry in server.ledger()}
    posted = {r["row"] for r in recorded.values() if r["status"] == "posted"}
    assert 0 < len(posted) == summary["posted"] == len(server.ledger())
    assert all(r["status"] == "posted" and r["activity_id"] for r in recorded.values())
    assert summary["pending"] == 50 - len(posted) and summary["unknown"] == 0
    assert len(created) == len(posted)

    # The same day: spent already, nothing is sent.
    calls_before = server.stats()["calls"]
    again = _load(data, mapping, results, server.url, "--daily-calls", "20")
    assert again.code == BUDGET_SPENT, again.stderr
    assert server.stats()["calls"] == calls_before and again.summary["calls"] == 0
    assert again.summary["calls_today"] == 20

    # The next day (the history's count moved to yesterday): the run resumes.
    history = account_history_path(server.url, DEFAULT_ACCESS_KEY)
    today = _today()
    with sqlite3.connect(history) as db:
        db.execute("UPDATE meta SET name = ? WHERE name = ?",
                   (meta_name(_account(), today - timedelta(days=1)),
                    meta_name(_account(), today)))
    resumed = _load(data, mapping, results, server.url, "--daily-calls", "1000")
    assert resumed.code == 0, resumed.stderr
    assert resumed.summary["posted"] == 50 - len(posted)
    assert resumed.summary["calls_today"] == resumed.summary["calls"]
    assert len(server.ledger()) == 50  # nothing twice
    with sqlite3.connect(history) as db:
        names = [row[0] for row in db.execute("SELECT name FROM meta WHERE name LIKE "
                                              "'daily_calls %'")]
    assert names == [meta_name(_account(), today)]  # yesterday's count is let go


def test_the_day_is_the_account_s_and_its_zone_is_asked_once(tmp_path: Path,
                                                            make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 5)
    server = make_sandbox(time_zone="Pacific/Kiritimati")  # UTC+14: often another day
    result = _load(data, mapping, tmp_path / "r.csv", server.url, "--daily-calls", "500")
    assert result.code == 0, result.stderr
    assert result.summary["day"] == _today("Pacific/Kiritimati").isoformat()
    assert "Pacific/Kiritimati" in result.stderr  # the account.zone line
    asked = server.stats()["calls"]
    again = _load(data, mapping, tmp_path / "r2.csv", server.url, "--daily-calls", "500")
    assert again.code == 0, again.stderr
    # The zone came from the history: the second run asked nothing but its own rows' way.
    assert again.summary["calls_today"] == result.summary["calls"] + again.summary["calls"]
    assert server.stats()["calls"] == asked + again.summary["calls"]


@pytest.mark.parametrize("zone", ["(UTC+05:30) Chennai, Kolkata", ""])
def test_a_zone_that_cannot_be_read_refuses_the_schedule(tmp_path: Path, make_sandbox: Any,
                                                         zone: str) -> None:
    data, mapping = _inputs(tmp_path, 5)
    server = make_sandbox(time_zone=zone)
    refused = _load(data, mapping, tmp_path / "r.csv", server.url,
                    "--share", "09:00-19:00=40%,100%")
    assert refused.code == 2, refused.stderr
    assert "--timezone" in refused.stderr and not server.ledger()
    given = _load(data, mapping, tmp_path / "r.csv", server.url,
                  "--share", "09:00-19:00=40%,100%", "--timezone", "Asia/Kolkata")
    assert given.code == 0, given.stderr
    assert given.summary["share"] == "09:00-19:00=40%,100%"
    # A plain share needs no time zone.
    plain = _load(data, mapping, tmp_path / "r3.csv", server.url, "--share", "60%")
    assert plain.code == 0, plain.stderr


def test_a_share_never_takes_more_than_its_part_of_the_window(tmp_path: Path,
                                                             make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 40)
    server = make_sandbox(rate="10/1s", latency=(0.01, 0.2))
    # In a process of its own: the window is timed at the server, which shares no
    # interpreter (and no GIL) with the client.
    result = run_cli_process("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                             "--host", server.url, "--rate", "20/1s", "--share", "50%",
                     "--log-format", "json")
    assert result.code == 0, result.stderr
    stats = server.stats()
    assert stats["rate_limited"] == 0 and stats["max_in_window"] <= 10
    assert result.summary["share"] == "50%" and result.summary["posted"] == 40


@pytest.mark.parametrize(("args", "says"), [
    (("--share", "0%"), "more than 0%"),
    (("--share", "09:00-19:00=40%,12:00-13:00=10%"), "overlap"),
    (("--timezone", "Mars/Olympus"), "not a time zone name"),
    (("--daily-calls", "0"), "0"),
])
def test_bad_share_and_budget_options_are_refused_before_sending(
        tmp_path: Path, make_sandbox: Any, args: tuple[str, ...], says: str) -> None:
    data, mapping = _inputs(tmp_path, 3)
    server = make_sandbox()
    refused = _load(data, mapping, tmp_path / "r.csv", server.url, *args)
    assert refused.code == 2 and says in refused.stderr
    assert server.stats()["calls"] == 0


def test_verify_takes_its_share_too_and_reads_a_schedule_in_the_account_zone(
        tmp_path: Path, make_sandbox: Any) -> None:
    """A read-back spends the account's limit as a run does: --share holds it to its part,
    and a schedule's hours are the account's (read from UserByAccessKey.Get)."""
    data, mapping = _inputs(tmp_path, 30)
    server = make_sandbox(rate="10/1s", latency=(0.01, 0.05), time_zone="Asia/Kolkata")
    results = tmp_path / "r.csv"
    # In processes of their own: the window is timed at the server, which shares no
    # interpreter (and no GIL) with the client.
    loaded = run_cli_process("run", data, "--mapping", mapping, "--results", results,
                             "--host", server.url, "--rate", "5/1s")  # at most 5 a second
    assert loaded.code == 0, loaded.stderr
    # One call per activity: 30 read-backs, at most 5 of them in any second (without the
    # share, 10: the window would hold more than the load ever put in it).
    checked = run_cli_process("verify", results, "--input", data, "--mapping", mapping,
                              "--host", server.url, "--all", "--rate", "10/1s", "--share",
                              "50%", "--one-per-activity", "--log-format", "json")
    assert checked.code == 0, checked.stderr
    stats = server.stats()
    assert stats["rate_limited"] == 0 and stats["details"] >= 30
    assert stats["max_in_window"] == 5
    # A schedule: the account's zone is asked once, then the hours read in it.
    zone_calls = server.stats()["calls"]
    timed = run_cli("verify", results, "--input", data, "--mapping", mapping,
                    "--host", server.url, "--sample", "3", "--rate", "10/1s",
                    "--share", "00:00-12:00=50%,50%", "--one-per-activity")
    assert timed.code == 0, timed.stderr
    assert server.stats()["calls"] - zone_calls >= 4  # the zone, then the read-backs
    refused = run_cli("verify", results, "--input", data, "--mapping", mapping,
                      "--host", server.url, "--all", "--share", "150%")
    assert refused.code == 2 and "--share" in refused.stderr



def test_a_dry_run_reads_a_schedule_in_the_account_zone(tmp_path: Path,
                                                        make_sandbox: Any) -> None:
    """The dry run's estimate follows the schedule in the account's hours, as the run
    will: read from UserByAccessKey.Get, as a run reads it (not UTC)."""
    from zoneinfo import ZoneInfo

    data, mapping = _inputs(tmp_path, 40)
    server = make_sandbox(time_zone="Asia/Kolkata")
    here = datetime.now(ZoneInfo("Asia/Kolkata"))
    # 10% for the two hours around now in Kolkata: five and a half hours away in UTC.
    hours = f"{here - timedelta(hours=1):%H:%M}-{here + timedelta(hours=1):%H:%M}=10%,100%"

    def estimate(*extra: str) -> float:
        name = "-".join(extra).replace("/", "_") or "account"
        done = _load(data, mapping, tmp_path / f"r-{name}.csv", server.url, "--dry-run",
                     "--rate", "10/1s", "--share", hours, *extra)
        assert done.code == 0, done.stderr
        return float(done.summary["estimated_s"])

    calls = server.stats()["calls"]
    read = estimate()
    assert server.stats()["calls"] > calls  # the zone was asked for
    assert read == pytest.approx(estimate("--timezone", "Asia/Kolkata"), rel=0.05)
    assert read > 5 * estimate("--timezone", "UTC")  # at 10%, not 100%
