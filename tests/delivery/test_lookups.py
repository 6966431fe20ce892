"""The run-time proof behind exactly once, end to end: the first rows read back before the
others go (``--verify-first``), look-ups calibrated on a known activity and the calibration
reused, and answers that cannot be trusted leaving rows ``unknown``, never sent again.

Answers the sandbox would not give (a shape not understood, fields hidden, an account that
shows values otherwise) come from a proxy in front of the sandbox that rewrites them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bulkpost.delivery.client import RETRIEVE_PATH
from bulkpost.sandbox.dialect import DIALECTS
from tests.conftest import read_results, run_cli, write_csv

pytestmark = pytest.mark.e2e

MAPPING = """
[activity]
event = 301
lead_id_column = "lead"
note_column = "note"
datetime_column = "when"
key_column = "key"

[fields]
mx_Custom_1 = "key"
"Amount" = "amount"
Channel = "channel"
"""
LEADS = ["3c6ef372-fe94-4f3a-a54f-f53a5f1d36f1", "9e3779b9-7f4a-4c15-b39c-c0605cedc834"]


def _input(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    data = write_csv(tmp_path / "in.csv", ["key", "lead", "note", "when", "amount", "channel"],
                     [[f"K{n}", LEADS[n % 2], f"Café ✓ & n°{n}", f"2024-02-0{1 + n % 9} 10:00",
                       f"{n}.50", "web"] for n in range(1, rows + 1)])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    return data, mapping


def _run(tmp_path: Path, url: str, rows: int, *extra: str) -> Any:
    data, mapping = _input(tmp_path, rows)
    return run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "results.csv",
                   "--host", url, "--rate", "200/1s", "--backoff", "0.01", "--timeout", "2",
                   "--log-format", "json", *extra)


def _once_each(server: Any, rows: int) -> None:
    keys = Counter(e["Fields"]["mx_Custom_1"] for e in server.ledger())
    assert max(keys.values()) == 1, f"created twice: {keys.most_common(3)}"
    assert len(keys) <= rows


def test_the_first_row_read_back_otherwise_stops_the_run_before_any_other(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(rate="200/1s", altered=frozenset({"mx_Custom_2"}))
    done = _run(tmp_path, server.url, 20)
    assert done.code == 3, done.stderr[-2000:]
    assert server.stats()["created"] == 1  # nothing more was sent
    assert done.summary["verify_calls"] == 1
    message = done.summary["aborted"]
    assert "row 1" in message and "column 'amount' (mx_Custom_2 (Amount))" in message
    assert "sent '1.50', stored '1.'" in message


def test_the_first_rows_check_costs_a_read_back_and_a_look_up_and_is_reused(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(rate="200/1s", dialect=DIALECTS["captured"])
    done = _run(tmp_path, server.url, 12, "--verify-first", "2")
    assert done.code == 0, done.stderr[-2000:]
    assert (done.summary["verify_calls"], done.summary["calibration_calls"]) == (2, 1)
    saved = json.loads((tmp_path / "results.csv.learnt.json").read_text())["calibration"]
    assert saved["host"] == server.url and saved["reading"]["calibrated"]
    assert saved["reading"]["created_on"] == "posted"
    _once_each(server, 12)
    # Nothing left to send: no read-back, no look-up; only the preflight's one call.
    calls = server.stats()["calls"]
    again = _run(tmp_path, server.url, 12, "--verify-first", "2")
    assert again.code == 0 and again.summary["skipped"] == 12
    assert (again.summary["verify_calls"], again.summary["calibration_calls"],
            again.summary["lookups"]) == (0, 0, 0)
    assert server.stats()["calls"] == calls + 1


def test_a_row_uncertain_before_calibration_waits_for_it_then_is_found(
        tmp_path: Path, make_sandbox: Any) -> None:
    # The sandbox owes each configured fault to the first call it can strike: the first
    # create is saved, then answered 500. Its look-up waits for the calibration (on the next
    # row created) instead of leaving it unknown.
    server = make_sandbox(rate="200/1s", faults={"500-after": 0.0001}, seed=5,
                          dialect=DIALECTS["arrival"])
    done = _run(tmp_path, server.url, 10)
    assert done.code == 0, done.stderr[-2000:]
    assert done.summary["found_posted"] == 1 and done.summary["posted"] == 10
    assert server.stats()["faults"]["500-after"] == 1
    _once_each(server, 10)
    assert len(server.ledger()) == 10


def test_a_resumed_run_calibrates_on_a_row_its_results_file_holds_as_posted(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox(rate="200/1s")
    # The results file alone (a history would know row 6 posted), so that editing it plays
    # a lost answer; and no history to keep the calibration in.
    assert _run(tmp_path, server.url, 6, "--create-again").code == 0
    (tmp_path / "results.csv.learnt.json").unlink()
    results = tmp_path / "results.csv"
    lines = results.read_text().splitlines()
    # Row 6 was sent and its answer lost: it may have been created.
    lines[-1] = lines[-1].replace(",posted,", ",unknown,", 1)
    results.write_text("\n".join(lines) + "\n")
    again = _run(tmp_path, server.url, 6, "--verify-first", "0", "--create-again")
    assert again.code == 0, again.stderr[-2000:]
    assert again.summary["found_posted"] == 1 and again.summary["calibration_calls"] >= 1
    _once_each(server, 6)


def _proxy(serve_handler: Callable[..., str], upstream: str,
           rewrite: Callable[[dict[str, Any]], Any]) -> str:
    """A server in front of the sandbox whose Retrieve answers go through ``rewrite``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("x-lsq-accesskey", "x-lsq-secretkey", "content-type")}
        async with aiohttp.ClientSession() as session, session.request(
                request.method, upstream + request.path_qs, headers=headers,
                data=await request.read()) as answer:
            body = await answer.read()
            status = answer.status
        if request.path == RETRIEVE_PATH and status == 200:
            return web.json_response(rewrite(json.loads(body)))
        return web.Response(status=status, body=body, content_type="application/json")

    return serve_handler(handler)


@pytest.mark.parametrize(("rewrite", "reason"), [
    # A shape we do not know: never read as "nothing found".
    (lambda doc: {"Status": "Success", "List": doc["ProspectActivities"]}, "not understood"),
    # Custom fields not shown: rows cannot be told apart, so the look-up is distrusted.
    (lambda doc: {**doc, "ProspectActivities": [
        {k: v for k, v in item.items() if k != "Data"} for item in doc["ProspectActivities"]]},
     "cannot be trusted"),
    # The note shown otherwise than sent (another account's encoding we do not know).
    (lambda doc: {**doc, "ProspectActivities": [
        {**item, "Data": {**item["Data"], "ActivityEvent_Note": "?"}}
        for item in doc["ProspectActivities"]]}, "cannot be trusted"),
], ids=["shape", "no-fields", "note"])
def test_answers_that_cannot_be_trusted_leave_rows_unknown_never_sent_again(
        tmp_path: Path, make_sandbox: Any, serve_handler: Callable[..., str],
        rewrite: Callable[[dict[str, Any]], Any], reason: str) -> None:
    # Every create is saved, then its answer lost half the time: rows must be looked up.
    server = make_sandbox(rate="500/1s", faults={"500-after": 0.5}, seed=11)
    url = _proxy(serve_handler, server.url, rewrite)
    done = _run(tmp_path, url, 16, "--max-attempts", "3")
    assert done.code == 1, done.stderr[-2000:]
    rows = read_results(tmp_path / "results.csv")
    unknown = [r for r in rows.values() if r["status"] == "unknown"]
    assert unknown and all(reason in r["error"] for r in unknown), unknown[0]["error"]
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    warned, = [e for e in events if e["event"] == "rows.unknown"]  # and how to resolve it
    assert warned["unknown"] == len(unknown) and warned["level"] == "warning"
    assert "rows may have been created" in warned["message"]
    assert "run the same command again" in warned["message"]
    _once_each(server, 16)
    assert len(server.ledger()) == 16  # every row created once: none sent again


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_update_log_rows_are_neither_copies_nor_matches_nor_a_calibration_failure(
        tmp_path: Path, make_sandbox: Any, dialect: str) -> None:
    """Another integration updated every activity after the load (to the same values), so
    the lead's look-up lists each Id twice: the activity, and newer, its update-log row. A
    resumed run calibrates on a posted row and finds a row whose answer was lost, through
    two pages, without creating anything again."""
    import asyncio

    from bulkpost.sandbox import paths
    from bulkpost.sandbox.dialect import parse_dialect
    from tests.sandbox.test_sandbox import _call

    server = make_sandbox(rate="200/1s", dialect=parse_dialect(f"{dialect},update_log=true"))
    rows = 14
    data = write_csv(tmp_path / "in.csv", ["key", "lead", "note", "when", "amount", "channel"],
                     [[f"K{n}", LEADS[0], f"Café ✓ n°{n}", f"2024-02-01 10:{n:02d}",
                       f"{n}.50", "web"] for n in range(1, rows + 1)])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    results = tmp_path / "results.csv"

    def run(*extra: str) -> Any:
        return run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                       server.url, "--rate", "200/1s", "--backoff", "0.01", "--timeout", "2",
                       "--log-format", "json", "--create-again", *extra)

    assert run().code == 0
    for entry in server.ledger():
        status, answer = asyncio.run(_call(server.url, "POST", paths.UPDATE, {
            "ProspectActivityId": entry["Id"], "ActivityEvent": 301,
            "ActivityNote": entry["ActivityNote"], "Fields": [
                {"SchemaName": "mx_Custom_1", "Value": entry["Fields"]["mx_Custom_1"]}]}))
        assert status == 200, answer
    (tmp_path / "results.csv.learnt.json").unlink()  # calibrate again, among the log rows
    lines = results.read_text().splitlines()
    lines[-1] = lines[-1].replace(",posted,", ",unknown,", 1)  # its answer was lost
    results.write_text("\n".join(lines) + "\n")
    again = run("--verify-first", "0")
    assert again.code == 0, again.stderr[-2000:]
    assert again.summary["found_posted"] == 1 and again.summary["calibration_calls"] >= 2
    assert "lookup.distrusted" not in again.stderr
    _once_each(server, rows)
    assert len(server.ledger()) == rows
    assert read_results(results)[rows]["status"] == "posted"
