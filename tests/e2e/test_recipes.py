"""The scheduler recipes of docs/NIGHTLY.md, run as written against the sandbox: the cron
script and the Airflow task's function, with what each exit code triggers, orders updated in
place (``--on-changed update``), and rows carried over from an earlier night."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from bulkpost.storage.history.database import History
from tests.conftest import ROOT, SECRET, cli_env, read_results, write_csv
from tests.storage.test_history import HEADER, QUICK, _mapping_file, _row

pytestmark = pytest.mark.e2e

RECIPES = ROOT / "docs" / "recipes"
NO_LEAD = "00000000-0000-4000-8000-000000000000"  # the sandbox refuses this lead


def _export(path: Path, numbers: list[int], refused: tuple[int, ...] = ()) -> Path:
    rows = [_row(n) for n in numbers]
    for row in rows:
        if int(row[0][4:]) in refused:
            row[1] = NO_LEAD
    return write_csv(path, HEADER, rows)


def _orders(server: Any) -> Counter[str]:
    return Counter(entry["Fields"]["mx_Custom_1"] for entry in server.ledger())


def _changed_orders(path: Path) -> Path:
    """Orders 1-4 the night after orders 1-3 were posted: order 1's amount changed (an update
    changes it), order 2 moved to another date-time (an update cannot), order 3 is as it was,
    order 4 is new."""
    rows = [_row(n) for n in (1, 2, 3, 4)]
    rows[0][4] = "1.75"
    rows[1][3] = "2025-07-01 09:00:00"
    return write_csv(path, HEADER, rows)


def _held(server: Any) -> dict[str, dict[str, Any]]:
    return {entry["Fields"]["mx_Custom_1"]: entry for entry in server.ledger()}


# Every call fails with an HTTP 500 while this is the sandbox's fault; quick to give up.
FAILING = {"500-before": 1.0}
GIVE_UP = "--rate 100/1s --backoff 0.01 --max-attempts 2 --no-preflight"


# -- cron ------------------------------------------------------------------------------------
def _nightly(tmp_path: Path, export: Path, url: str,
             **env: str) -> subprocess.CompletedProcess[str]:
    mapping = _mapping_file(tmp_path)
    notify = tmp_path / "notify.sh"
    notify.write_text('#!/bin/sh\n{ echo "SUBJECT: $1"; cat; } >> "$(dirname "$0")/alerts"\n')
    notify.chmod(0o755)
    settings = {"EXPORT": str(export), "MAPPING": str(mapping),
                "STATE_DIR": str(tmp_path / "state"), "LSQ_HOST": url, "RETRIES": "2",
                "RETRY_DELAY": "0", "NOTIFY": str(notify),
                "BULKPOST": str(Path(sys.executable).with_name("bulkpost")),
                "BULKPOST_ARGS": "--rate 100/1s --backoff 0.05", **env}
    done = subprocess.run(["bash", str(RECIPES / "nightly.sh")], capture_output=True,
                          text=True, timeout=180, env=cli_env(**settings), cwd=tmp_path,
                          check=False)
    assert SECRET not in done.stdout + done.stderr
    return done


def _alerts(tmp_path: Path) -> str:
    path = tmp_path / "alerts"
    return path.read_text() if path.exists() else ""


def test_cron_nights_overlap_and_each_key_is_posted_once(tmp_path: Path,
                                                         make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    first = _nightly(tmp_path, _export(tmp_path / "activities-2026-11-25.csv",
                                       list(range(1, 31))), server.url)
    second = _nightly(tmp_path, _export(tmp_path / "activities-2026-11-26.csv",
                                        list(range(21, 51))), server.url)
    assert (first.returncode, second.returncode) == (0, 0), second.stderr[-2000:]
    orders = _orders(server)
    assert len(orders) == 50 and max(orders.values()) == 1
    state = tmp_path / "state"
    assert sorted(p.name for p in state.glob("results-*.csv")) == [
        "results-activities-2026-11-25.csv", "results-activities-2026-11-26.csv"]
    assert '"skipped": 10' in (state / "summary-activities-2026-11-26.json").read_text()
    assert _alerts(tmp_path) == ""
    # A night whose export changed an order already posted: done (exit 0), with a warning.
    changed = _export(tmp_path / "activities-2026-11-27.csv", [50, 51])
    changed.write_text(changed.read_text().replace("50.50", "55.00"))
    third = _nightly(tmp_path, changed, server.url)
    assert third.returncode == 0
    alerts = _alerts(tmp_path)
    assert "SUBJECT: activities-2026-11-27: 1 rows skipped: their key was posted before with " \
           "other content" in alerts
    assert "run this night again with ON_CHANGED=post, update or fail" in alerts
    assert len(_orders(server)) == 51 and max(_orders(server).values()) == 1


def test_cron_on_changed_update_updates_changed_orders_in_place(tmp_path: Path,
                                                                make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    first = _nightly(tmp_path, _export(tmp_path / "orders-2026-11-25.csv", [1, 2, 3]),
                     server.url, ON_CHANGED="update")
    assert first.returncode == 0, first.stderr[-2000:]
    second = _nightly(tmp_path, _changed_orders(tmp_path / "orders-2026-11-26.csv"),
                      server.url, ON_CHANGED="update")
    assert second.returncode == 0, second.stderr[-2000:]
    state = tmp_path / "state"
    summary = json.loads((state / "summary-orders-2026-11-26.json").read_text())
    assert (summary["updated"], summary["posted"], summary["skipped"], summary["changed"]) == (
        1, 1, 2, 1)
    # Order 1's activity holds the new amount: updated, not posted again.
    held = _held(server)
    assert len(server.ledger()) == 4
    assert held["ORD-00001"]["Fields"]["mx_Custom_2"] == "1.75"
    assert len(held["ORD-00001"]["Updates"]) == 1 and "Updates" not in held["ORD-00003"]
    results = read_results(state / "results-orders-2026-11-26.csv")
    assert results[1]["status"] == "updated"
    # Order 2's date-time moved: not updated, and a person is told why and what to do.
    assert (results[2]["status"], results[2]["error_type"]) == ("skipped", "changed")
    assert "its lead or date-time changed" in results[2]["error"]
    alerts = _alerts(tmp_path)
    assert "SUBJECT: orders-2026-11-26: 1 rows skipped: their key was posted before with " \
           "other content" in alerts
    assert "ON_CHANGED=post, update or fail" in alerts


def test_cron_resumes_while_rows_carried_over_from_an_earlier_night_are_unfinished(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(rate="100/1s", latency=(0.0, 0.01))
    assert _nightly(tmp_path, _export(tmp_path / "night-1.csv", [1]), server.url,
                    BULKPOST_ARGS=GIVE_UP).returncode == 0
    # Night 2: every call fails, so order 2 is left unfinished.
    server.sandbox.faults = FAILING
    assert _nightly(tmp_path, _export(tmp_path / "night-2.csv", [2]), server.url,
                    BULKPOST_ARGS=GIVE_UP, RETRIES="0").returncode == 1
    # Night 3's export no longer has order 2, and calls still fail: the row carried over is
    # unfinished, so the script resumes, then alerts, naming it.
    night_3 = _export(tmp_path / "night-3.csv", [1])
    third = _nightly(tmp_path, night_3, server.url, BULKPOST_ARGS=GIVE_UP)
    assert third.returncode == 1
    assert third.stderr.count("resuming in") == 2
    summary = json.loads((tmp_path / "state" / "summary-night-3.json").read_text())
    assert (summary["failed"], summary["unknown"], summary["carried_left"]) == (0, 0, 1)
    alerts = _alerts(tmp_path)
    assert "SUBJECT: night-3: not finished after 3 runs (exit 1)" in alerts
    assert "1 rows carried over from earlier nights are still unfinished" in alerts
    # Calls go through again: the same night, run again, finishes it; order 2 exists once.
    server.sandbox.faults = {}
    again = _nightly(tmp_path, night_3, server.url, BULKPOST_ARGS=GIVE_UP)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _orders(server) == {"ORD-00001": 1, "ORD-00002": 1}


def test_cron_exit_1_with_refused_rows_alerts_with_the_rows_to_fix_and_does_not_retry(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    done = _nightly(tmp_path, _export(tmp_path / "night.csv", list(range(1, 11)),
                                      refused=(4, 7)), server.url)
    assert done.returncode == 1
    assert "resuming in" not in done.stderr  # no retry: a rerun would not change them
    alerts = _alerts(tmp_path)
    assert "SUBJECT: night: rows not posted" in alerts and "rejected" in alerts
    fix = read_results(tmp_path / "state" / "results-night.csv")
    assert Counter(r["status"] for r in fix.values()) == {"posted": 8, "rejected": 2}
    to_fix = (tmp_path / "state" / "to-fix-night.csv").read_text().splitlines()
    assert len(to_fix) == 3 and all(NO_LEAD in line for line in to_fix[1:])


def test_cron_exit_1_with_rows_to_retry_resumes_then_alerts(tmp_path: Path,
                                                            make_sandbox: Any) -> None:
    server = make_sandbox(rate="100/1s", latency=(0.0, 0.01), faults={"500-before": 1.0})
    done = _nightly(tmp_path, _export(tmp_path / "night.csv", [1, 2, 3]), server.url,
                    BULKPOST_ARGS="--rate 100/1s --backoff 0.01 --max-attempts 2 "
                                  "--no-preflight")
    assert done.returncode == 1
    assert done.stderr.count("resuming in") == 2  # RETRIES=2, then the alert
    assert "SUBJECT: night: not finished after 3 runs (exit 1)" in _alerts(tmp_path)
    to_fix = (tmp_path / "state" / "to-fix-night.csv").read_text().splitlines()
    # Failed, then unknown once the resumes' look-ups failed too (every call fails here).
    assert len(to_fix) == 4 and all(",failed," in line or ",unknown," in line
                                    for line in to_fix[1:])


def test_cron_exit_2_when_another_run_holds_the_history(tmp_path: Path,
                                                        make_sandbox: Any) -> None:
    server = make_sandbox()
    (tmp_path / "state").mkdir()
    holder = History(tmp_path / "state" / "history.db").open()
    try:
        done = _nightly(tmp_path, _export(tmp_path / "night.csv", [1]), server.url)
    finally:
        holder.close()
    assert done.returncode == 2 and "resuming in" not in done.stderr
    alerts = _alerts(tmp_path)
    assert "refused before any request (exit 2)" in alerts
    assert "another bulkpost run is using this history database" in alerts
    assert server.create_calls() == 0


def test_cron_exit_3_resumes_up_to_retries_then_alerts(tmp_path: Path,
                                                       make_sandbox: Any) -> None:
    server = make_sandbox()
    done = _nightly(tmp_path, _export(tmp_path / "night.csv", [1, 2]), server.url,
                    LSQ_SECRET_KEY="not-the-" + DEFAULT_SECRET_KEY)
    assert done.returncode == 3
    assert done.stderr.count("resuming in") == 2
    alerts = _alerts(tmp_path)
    assert "not finished after 3 runs (exit 3)" in alerts and "401" in alerts
    assert "not-the-" not in alerts + done.stderr  # the key, even a wrong one, never shows


def _next_day(history: Path) -> None:
    """The account's midnight has passed: the calls counted today become yesterday's."""
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from bulkpost.core.credentials import Credentials
    from bulkpost.runner.limits import account_tag
    from bulkpost.storage.budget import meta_name

    account = account_tag(Credentials(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY))
    today = datetime.now(UTC).date()  # the sandbox's account is on UTC
    with sqlite3.connect(history) as db:
        db.execute("UPDATE meta SET name = ? WHERE name = ?",
                   (meta_name(account, today - timedelta(days=1)), meta_name(account, today)))


def test_cron_a_spent_budget_is_resumed_by_the_next_night_first(tmp_path: Path,
                                                                make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    first = _nightly(tmp_path, _export(tmp_path / "a-2026-11-25.csv", list(range(1, 31))),
                     server.url, DAILY_CALLS="15")
    assert first.returncode == 4, first.stderr[-2000:]
    assert "the day's budget of calls is spent (exit 4)" in first.stderr
    assert "resuming in" not in first.stderr and _alerts(tmp_path) == ""  # nothing wrong
    state = tmp_path / "state"
    assert (state / "unfinished-exports").read_text() == f"{tmp_path / 'a-2026-11-25.csv'}\n"
    posted = len(_orders(server))
    assert 0 < posted < 30
    # The same day, the next export: the budget is spent, both wait.
    again = _nightly(tmp_path, _export(tmp_path / "a-2026-11-26.csv", [31, 32]), server.url,
                     DAILY_CALLS="15")
    assert again.returncode == 4 and len(_orders(server)) == posted
    assert (state / "unfinished-exports").read_text().splitlines() == [
        str(tmp_path / "a-2026-11-25.csv"), str(tmp_path / "a-2026-11-26.csv")]
    _next_day(state / "history.db")
    done = _nightly(tmp_path, _export(tmp_path / "a-2026-11-27.csv", [33]), server.url,
                    DAILY_CALLS="1000")
    assert done.returncode == 0, done.stderr[-2000:]
    orders = _orders(server)
    assert len(orders) == 33 and max(orders.values()) == 1
    assert not (state / "unfinished-exports").exists()


# -- Airflow ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    """docs/recipes/airflow_dag.py as a DAG folder would import it (Airflow absent here)."""
    spec = importlib.util.spec_from_file_location("airflow_dag", RECIPES / "airflow_dag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DAG is None
    return module


def _load(recipe: ModuleType, tmp_path: Path, export: Path, url: str, **options: Any) -> Any:
    mapping = _mapping_file(tmp_path)
    keys = {"host": url, "access_key": DEFAULT_ACCESS_KEY, "secret_key": DEFAULT_SECRET_KEY,
            "rate": "100/1s", "backoff": 0.05}
    return recipe.load_export(str(export), str(mapping), tmp_path / "state",
                              **{**keys, **options})


def test_airflow_task_succeeds_and_returns_the_summary(recipe: ModuleType, tmp_path: Path,
                                                       make_sandbox: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = make_sandbox(**QUICK)
    first = _load(recipe, tmp_path, _export(tmp_path / "a-2026-11-25.csv",
                                            list(range(1, 21))), server.url)
    second = _load(recipe, tmp_path, _export(tmp_path / "a-2026-11-26.csv",
                                             list(range(11, 31))), server.url)
    assert first["exit_code"] == second["exit_code"] == 0
    assert (second["posted"], second["skipped"]) == (10, 10)
    assert second["history"].endswith("history.db") and second["run_id"]
    assert max(_orders(server).values()) == 1 and len(_orders(server)) == 30
    # Tonight's export changed an order already posted: skipped, and said so in the log.
    changed = _export(tmp_path / "a-2026-11-27.csv", [30, 31])
    changed.write_text(changed.read_text().replace("30.50", "31.00"))
    with caplog.at_level("WARNING", logger="airflow_dag"):
        third = _load(recipe, tmp_path, changed, server.url)
    assert (third["posted"], third["skipped"], third["changed"]) == (1, 1, 1)
    assert "1 rows skipped: their key was posted before with other content" in caplog.text


def test_airflow_task_updates_changed_orders_in_place(recipe: ModuleType, tmp_path: Path,
                                                      make_sandbox: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    server = make_sandbox(**QUICK)
    first = _load(recipe, tmp_path, _export(tmp_path / "orders-2026-11-25.csv", [1, 2, 3]),
                  server.url, on_changed="update")
    assert first["posted"] == 3
    with caplog.at_level("WARNING", logger="airflow_dag"):
        second = _load(recipe, tmp_path, _changed_orders(tmp_path / "orders-2026-11-26.csv"),
                       server.url, on_changed="update")
    assert (second["updated"], second["posted"], second["skipped"], second["changed"],
            second["exit_code"]) == (1, 1, 2, 1, 0)
    held = _held(server)
    assert len(server.ledger()) == 4 and held["ORD-00001"]["Fields"]["mx_Custom_2"] == "1.75"
    # Order 2's date-time moved, which an update cannot change: skipped, and said so.
    assert "1 rows skipped: their key was posted before with other content" in caplog.text
    assert "on_changed='post', 'update' or 'fail'" in caplog.text


def test_airflow_task_is_retried_while_rows_carried_over_are_unfinished(
        recipe: ModuleType, tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(rate="100/1s", latency=(0.0, 0.01))
    give_up = {"preflight": False, "max_attempts": 2, "backoff": 0.01}
    assert _load(recipe, tmp_path, _export(tmp_path / "a-1.csv", [1]), server.url,
                 **give_up)["posted"] == 1
    server.sandbox.faults = FAILING  # night 2 leaves order 2 unfinished
    with pytest.raises(recipe.RunAgain):
        _load(recipe, tmp_path, _export(tmp_path / "a-2.csv", [2]), server.url, **give_up)
    # Night 3's export no longer has order 2, which still cannot be delivered: retried, not
    # failed for a person (its rows are all done).
    night_3 = _export(tmp_path / "a-3.csv", [1])
    with pytest.raises(recipe.RunAgain, match="rows left to retry"):
        _load(recipe, tmp_path, night_3, server.url, **give_up)
    server.sandbox.faults = {}
    done = _load(recipe, tmp_path, night_3, server.url, **give_up)  # the retry
    assert (done["carried"], done["carried_done"], done["carried_left"],
            done["exit_code"]) == (1, 1, 0, 0)
    assert _orders(server) == {"ORD-00001": 1, "ORD-00002": 1}


def test_airflow_task_fails_without_retry_on_refused_rows_and_bad_settings(
        recipe: ModuleType, tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    export = _export(tmp_path / "night.csv", list(range(1, 6)), refused=(2,))
    with pytest.raises(recipe.AirflowFailException, match="rows not posted") as refused:
        _load(recipe, tmp_path, export, server.url)
    assert "rejected" in str(refused.value) and "Lead with Id" in str(refused.value)
    with pytest.raises(recipe.AirflowFailException, match="column"):
        _load(recipe, tmp_path, write_csv(tmp_path / "bad.csv", ["order"], [["1"]]),
              server.url)


def test_airflow_task_is_retried_when_a_later_attempt_can_finish(
        recipe: ModuleType, tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(**QUICK)
    export = _export(tmp_path / "night.csv", list(range(1, 6)))
    with pytest.raises(recipe.RunAgain, match="401"):  # keys refused: aborted
        _load(recipe, tmp_path, export, server.url, secret_key="wrong-" + DEFAULT_SECRET_KEY)
    (tmp_path / "state").mkdir(exist_ok=True)
    holder = History(tmp_path / "state" / "history.db").open()
    try:
        with pytest.raises(recipe.RunAgain, match="another bulkpost run"):
            _load(recipe, tmp_path, export, server.url)
    finally:
        holder.close()
    done = _load(recipe, tmp_path, export, server.url)  # the retry
    assert done["posted"] == 5 and done["exit_code"] == 0


def test_airflow_a_spent_budget_succeeds_and_the_next_night_resumes_it(
        recipe: ModuleType, tmp_path: Path, make_sandbox: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    server = make_sandbox(**QUICK)
    night = _export(tmp_path / "a-2026-11-25.csv", list(range(1, 31)))
    with caplog.at_level("WARNING", logger="airflow_dag"):
        first = _load(recipe, tmp_path, night, server.url, daily_calls=15)
    assert first["exit_code"] == 4 and first["budget_spent"] and first["calls_today"] == 15
    assert "the day's budget of calls is spent" in caplog.text
    posted = len(_orders(server))
    _next_day(tmp_path / "state" / "history.db")
    second = _load(recipe, tmp_path, _export(tmp_path / "a-2026-11-26.csv", [31]),
                   server.url, daily_calls=1000)
    assert second["exit_code"] == 0 and second["posted"] == 1
    orders = _orders(server)
    assert len(orders) == 31 > posted and max(orders.values()) == 1
    assert not (tmp_path / "state" / "unfinished-exports").exists()
