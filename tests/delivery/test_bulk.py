"""Bulk calls, the pure parts: the bulk answer read item by item, the batch body, and the
queue's batch takes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkpost.core.activity import Activity, bulk_body, by_email
from bulkpost.core.allowance import parse_rate
from bulkpost.core.bulk_response import classify_bulk
from bulkpost.core.options import Mode
from bulkpost.core.response import Verdict
from bulkpost.runner.dispatch import JobQueue
from tests.conftest import CliResult, read_results, run_cli, write_csv

ID = "a1b2c3d4-0000-4000-8000-000000000001"


def js(document: Any) -> bytes:
    return json.dumps(document).encode()


def verdicts(status: int, body: bytes, count: int) -> tuple[Verdict, list[Verdict | None]]:
    call, items = classify_bulk(status, {}, body, count)
    return call.verdict, [None if item is None else item.verdict for item in items]


def test_documented_shape_maps_items_by_row_number() -> None:
    body = js({"Response": [
        {"RowNumber": 2, "ActivityCreated": False, "ExceptionMessage": "Invalid lead"},
        {"RowNumber": 1, "ActivityCreated": True, "ProspectActivityId": ID},
    ]})
    call, items = classify_bulk(200, {}, body, 2)
    assert call.verdict is Verdict.OK
    assert items[0] is not None and items[0].verdict is Verdict.POSTED
    assert items[0].activity_id == ID
    assert items[1] is not None and items[1].verdict is Verdict.REJECTED
    assert items[1].error == "Invalid lead"


ID2 = "a1b2c3d4-0000-4000-8000-000000000002"


@pytest.mark.parametrize("body", [
    js([{"ProspectActivityId": ID}, {"ProspectActivityId": ID2}]),  # a bare list, by position
    js({"Result": [{"ActivityId": ID, "ActivityCreated": "true"},
                   {"Id": ID2, "ActivityCreated": True}]}),  # other names
    js({"Response": [{"RowNumber": "2", "ProspectActivityId": ID2},
                     {"RowNumber": 1.0, "ProspectActivityId": ID}]}),  # numbers as text, float
])
def test_tolerated_shapes(body: bytes) -> None:
    call, items = classify_bulk(200, {}, body, 2)
    assert call.verdict is Verdict.OK
    assert [(i.verdict, i.activity_id) for i in items if i is not None] == [
        (Verdict.POSTED, ID), (Verdict.POSTED, ID2)]


def test_numbered_answer_that_leaves_items_out_leaves_them_uncertain() -> None:
    twice = {"RowNumber": 4, "ProspectActivityId": "D"}
    body = js({"Response": [{"RowNumber": 1, "ProspectActivityId": "A"},
                            {"RowNumber": 2, "ActivityCreated": True},  # created, no Id
                            {"RowNumber": 3},                           # says nothing
                            twice, twice,
                            {"RowNumber": 6, "ProspectActivityId": "F"}]})
    assert verdicts(200, body, 6) == (Verdict.OK, [Verdict.POSTED, None, None, None, None,
                                                   Verdict.POSTED])


@pytest.mark.parametrize("entries", [
    # Unnumbered and fewer than the items: which ones are missing? No way to tell.
    [{"ProspectActivityId": "A"}, {"ProspectActivityId": "C"}],
    # Numbered from 0: off by one, so nothing can be trusted.
    [{"RowNumber": 0, "ActivityCreated": False, "ExceptionMessage": "bad"},
     {"RowNumber": 1, "ProspectActivityId": "B"}, {"RowNumber": 2, "ProspectActivityId": "C"}],
    # Numbered and unnumbered entries mixed.
    [{"RowNumber": 1, "ProspectActivityId": "A"}, {"ProspectActivityId": "B"},
     {"ProspectActivityId": "C"}],
    # Short, and nothing proves it is numbered from 1 (it could be from 0, item 0 left out).
    [{"RowNumber": 1, "ProspectActivityId": "B"}, {"RowNumber": 2, "ProspectActivityId": "C"}],
    # Something that is not an entry among them.
    [None, {"ProspectActivityId": "A"}, {"ProspectActivityId": "B"}],
    # Numbers that are not numbers.
    [{"RowNumber": "³", "ProspectActivityId": "A"}, {"RowNumber": "9" * 5000},
     {"RowNumber": 3, "ProspectActivityId": "C"}],
])
def test_answers_that_cannot_be_matched_safely_leave_every_item_uncertain(
        entries: list[dict[str, Any]]) -> None:
    assert verdicts(200, js({"Response": entries}), 3) == (Verdict.OK, [None, None, None])


def test_one_id_for_two_items_trusts_neither() -> None:
    body = js({"Response": [{"RowNumber": 1, "ProspectActivityId": "X"},
                            {"RowNumber": 2, "ProspectActivityId": "X"},
                            {"RowNumber": 3, "ProspectActivityId": "Y"}]})
    assert verdicts(200, body, 3) == (Verdict.OK, [None, None, Verdict.POSTED])


@pytest.mark.parametrize(("entry", "expected"), [
    ({"RowNumber": 1, "Id": "L", "ExceptionMessage": "Lead not found"}, None),
    ({"RowNumber": 1, "ProspectActivityId": "P", "ExceptionMessage": "Lead not found"}, None),
    ({"RowNumber": 1, "Message": "Activity created"}, None),
    ({"RowNumber": 1, "ActivityCreated": False, "ExceptionMessage": "Lead not found"},
     Verdict.REJECTED),
    ({"RowNumber": 1, "ExceptionType": "MXInvalidInputException"}, Verdict.REJECTED),
    # Contradictions are believed neither way: looked up.
    ({"RowNumber": 1, "ActivityCreated": True, "ExceptionType": "MXInvalidInputException"},
     None),
    ({"RowNumber": 1, "ActivityCreated": False, "ProspectActivityId": "P"}, None),
    ({"RowNumber": 1, "ProspectActivityId": "P",
      "ExceptionType": "MXAPIRateLimitExceededException"}, None),
    ({"RowNumber": 1, "ActivityCreated": 0, "ProspectActivityId": "P"}, None),
    ({"RowNumber": 1, "ActivityCreated": 1, "ProspectActivityId": "P"}, Verdict.POSTED),
])
def test_an_item_is_posted_only_when_the_entry_says_so_without_an_error(
        entry: dict[str, Any], expected: Verdict | None) -> None:
    assert verdicts(200, js({"Response": [entry]}), 1) == (Verdict.OK, [expected])


def test_item_level_rate_limit_and_bare_not_created_are_retried() -> None:
    body = js({"Response": [
        {"RowNumber": 1, "ActivityCreated": False,
         "ExceptionType": "MXAPIRateLimitExceededException"},
        {"RowNumber": 2, "ActivityCreated": False},
    ]})
    assert verdicts(200, body, 2) == (Verdict.OK, [Verdict.RATE_LIMITED, Verdict.RETRY])


@pytest.mark.parametrize(("status", "body", "expected"), [
    (429, b"", Verdict.RATE_LIMITED),
    (200, js({"Status": "Error", "ExceptionType": "MXAPIRateLimitExceededException"}),
     Verdict.RATE_LIMITED),
    (400, js({"Status": "Error", "ExceptionType": "MXInvalidInputException",
              "ExceptionMessage": "At most 25"}), Verdict.REJECTED),
    (500, b"Internal Server Error", Verdict.RETRY),
    (502, b"<html>bad gateway</html>", Verdict.RETRY),
    (200, b"not json", Verdict.RETRY),
    (200, js({"Status": "Success"}), Verdict.RETRY),  # no items at all
    (401, b"", Verdict.FATAL),
])
def test_call_level_answers(status: int, body: bytes, expected: Verdict) -> None:
    call, items = classify_bulk(status, {}, body, 3)
    assert call.verdict is expected and items == []
    if expected is Verdict.RETRY:
        assert call.uncertain  # the server took it: items may exist


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["Response", "RowNumber", "Id",
                                                       "ActivityCreated", "ExceptionMessage",
                                                       "ProspectActivityId"]), inner,
                                      max_size=4), max_leaves=20),
       st.integers(1, 25))
def test_any_answer_is_classified_without_raising(document: Any, count: int) -> None:
    call, items = classify_bulk(200, {}, js(document), count)
    assert call.verdict in (Verdict.OK, Verdict.RETRY, Verdict.REJECTED, Verdict.RATE_LIMITED)
    assert items == [] or len(items) == count


def _activity(row: int, lead: str, body: dict[str, Any]) -> Activity:
    data = json.dumps(body, separators=(",", ":")).encode()
    return Activity(row, f"k{row}", lead, data, f"{row:016x}")


def test_bulk_body_by_id_and_by_email() -> None:
    by_id = [_activity(n, ID, {"RelatedProspectId": ID, "ActivityEvent": 201, "ActivityNote": n})
             for n in (1, 2)]
    assert json.loads(bulk_body(by_id)) == [json.loads(a.body) for a in by_id]
    mail = [_activity(3, "a@b.co", {"EmailAddress": "a@b.co", "ActivityEvent": 201})]
    assert by_email(mail[0]) and not by_email(by_id[0])
    assert json.loads(bulk_body(mail)) == [{"SearchByValue": "a@b.co", "ActivityEvent": 201}]


def test_batch_takes_one_kind_and_leaves_the_others_in_place() -> None:
    async def scenario() -> tuple[list[list[str]], list[str | None]]:
        queue: JobQueue[str] = JobQueue(low_water=100)
        for job in ["id1", "mail1", "id2", "alone", "id3", "mail2"]:
            queue.put(job)
        queue.close()

        def kind(job: str) -> str | None:
            return None if job == "alone" else job.rstrip("0123456789")

        batches = [await queue.get_batch(2, kind) for _ in range(4)]
        rest = [await queue.get(), await queue.get()]
        return batches, rest

    batches, rest = asyncio.run(scenario())
    assert batches == [["id1", "id2"], ["mail1", "mail2"], ["alone"], ["id3"]]
    assert rest == [None, None]


def test_feeder_waits_for_room_and_consumers_wait_for_jobs() -> None:
    async def scenario() -> list[str]:
        queue: JobQueue[int] = JobQueue(low_water=2)
        events: list[str] = []

        async def feeder() -> None:
            for batch in ([1, 2, 3, 4, 5], [6, 7]):
                await queue.wait_for_room()
                events.append(f"put {len(batch)} at {len(queue)}")
                for job in batch:
                    queue.put(job)
            queue.close()

        async def consumer() -> None:
            while (job := await queue.get()) is not None:
                events.append(f"got {job}")
                await asyncio.sleep(0)

        await asyncio.gather(consumer(), feeder())
        return events

    events = asyncio.run(scenario())
    assert events[0] == "put 5 at 0"
    assert "put 2 at 2" in events  # waited until the queue drained to the low-water mark
    assert [e for e in events if e.startswith("got")] == [f"got {n}" for n in range(1, 8)]


# -- end to end, against the sandbox ---------------------------------------------------------
LEADS = ["9e3779b9-7f4a-4c15-b39c-c0605cedc834", "3c6ef372-fe94-4f3a-a54f-f53a5f1d36f1"]
MAPPING = """
[activity]
event = 201
lead_id_column = "lead"
lead_email_column = "email"
note_column = "note"
key_column = "key"

[fields]
mx_Custom_1 = "amount"
"""


def _bulk_input(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    """Rows by lead Id, every 4th by e-mail instead; row 7 names a lead that does not exist."""
    data = [["key", "lead", "email", "note", "amount"]]
    for n in range(1, rows + 1):
        lead = "" if n % 4 == 0 else LEADS[n % 2]
        if n == 7:
            lead = "00000000-0000-4000-8000-000000000007"
        data.append([f"K{n}", lead, f"person{n % 3}@example.com", f"note {n}", f"{n}.5"])
    path = write_csv(tmp_path / "in.csv", data[0], data[1:])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    return path, mapping


def _run_bulk(tmp_path: Path, make_sandbox: Any, rows: int, *, mode: str = "bulk",
              rate: str = "50/1s", bulk_rate: str = "10/1s", verify: tuple[str, ...] = (
                  "--verify-first", "0"),
              **sandbox: Any) -> tuple[CliResult, Any, dict[int, dict[str, str]]]:
    """Run the CLI over ``_bulk_input`` against a sandbox with both limits; return the run,
    the sandbox and the results file's rows. The first row is not sent alone (``verify``),
    so that every call counted here is a bulk one."""
    data, mapping = _bulk_input(tmp_path, rows)
    server = make_sandbox(rate=rate, bulk_rate=parse_rate(bulk_rate), **sandbox)
    results = tmp_path / "results.csv"
    done = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                   server.url, "--rate", rate, "--mode", mode, "--bulk-rate", bulk_rate,
                   "--log-format", "json", *verify)
    return done, server, read_results(results)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["bulk", "both"])
def test_bulk_modes_post_every_row_once(tmp_path: Path, make_sandbox: Any, mode: str) -> None:
    done, server, rows = _run_bulk(tmp_path, make_sandbox, 120, mode=mode, rate="20/1s",
                                   bulk_rate="4/1s")
    assert done.code == 1, done.stderr[-2000:]  # row 7 is rejected
    assert rows[7]["status"] == "rejected" and "does not exist" in rows[7]["error"]
    posted = {n: r for n, r in rows.items() if r["status"] == "posted"}
    assert len(posted) == 119 and len(rows) == 120
    ledger = server.ledger()
    assert sorted(e["Id"] for e in ledger) == sorted(r["activity_id"] for r in posted.values())
    by_id = {e["Id"]: e for e in ledger}
    for n, row in posted.items():
        entry = by_id[row["activity_id"]]
        assert entry["ActivityNote"] == f"note {n}" and entry["Fields"]["mx_Custom_1"] == f"{n}.5"
        if n % 4 == 0:
            assert entry["EmailAddress"] == f"person{n % 3}@example.com"
    stats = server.stats()
    assert stats["bulk_rate_limited"] == 0 and stats["rate_limited"] == 0
    bulk_rows = sum(1 for e in ledger if e["Bulk"])
    if mode == "bulk":
        # 89 rows by Id (one rejected) and 30 by e-mail, in calls of at most 25.
        assert bulk_rows == 119 and stats["bulk_calls"] == 4 + 2
    else:
        assert 0 < bulk_rows < 119
    assert done.summary["posted"] == 119 and done.summary["rejected"] == 1


@pytest.mark.e2e
def test_a_bulk_answer_that_leaves_items_out_is_reconciled_not_resent(
        tmp_path: Path, make_sandbox: Any) -> None:
    done, server, rows = _run_bulk(tmp_path, make_sandbox, 40, verify=(),  # calibrates
                                   faults={"bulk-partial": 1.0}, seed=1)
    assert done.code == 1, done.stderr[-2000:]
    posted = [r for r in rows.values() if r["status"] == "posted"]
    assert len(posted) == 39
    ledger = server.ledger()
    assert len(ledger) == 39  # nothing created twice
    assert {r["activity_id"] for r in posted} == {e["Id"] for e in ledger}
    # Half of each call's items were left out of its answer: those were looked up.
    assert done.summary["reconciled"] >= 15 and done.summary["found_posted"] >= 15
    assert any(r["error_type"] == "reconciled" for r in posted)


@pytest.mark.e2e
def test_a_bulk_call_refused_as_a_whole_sends_its_rows_one_by_one(
        tmp_path: Path, serve_handler: Any) -> None:
    created: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        if "/Bulk/" in request.path:
            return web.json_response({"Status": "Error",
                                      "ExceptionType": "MXInvalidInputException",
                                      "ExceptionMessage": "Bulk API not enabled"}, status=400)
        body = await request.json()
        if body.get("RelatedProspectId", "").startswith("00000000-"):
            return web.json_response({"Status": "Error",
                                      "ExceptionType": "MXInvalidInputException",
                                      "ExceptionMessage": "no such lead"}, status=500)
        created.append(body)
        return web.json_response({"Status": "Success",
                                  "Message": {"Id": f"id-{len(created)}"}})

    url = serve_handler(handler)
    data, mapping = _bulk_input(tmp_path, 10)
    results = tmp_path / "results.csv"
    done = run_cli("run", data, "--mapping", mapping, "--results", results, "--host", url,
                   "--mode", "bulk", "--bulk-rate", "10/1s", "--no-preflight",
                   "--verify-first", "0", "--log-format", "json")
    assert done.code == 1, done.stderr[-2000:]
    rows = read_results(results)
    assert rows[7]["status"] == "rejected"
    assert sum(r["status"] == "posted" for r in rows.values()) == 9 and len(created) == 9
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    refused = [e for e in events if e["event"] == "bulk.refused"]
    assert refused and all("one by one" in e["message"] for e in refused)


@pytest.mark.parametrize(("mode", "single", "bulk", "per_second"), [
    ("single", 20, 0, 4.9),
    ("bulk", 0, 2, 4.9),        # one call of 25 in each 5.1 s window
    ("both", 13, 2, 9.8),
])
def test_modes_size_the_pools_and_add_the_allowances(tmp_path: Path, mode: Mode, single: int,
                                                      bulk: int, per_second: float) -> None:
    from bulkpost.core.mapping import parse_mapping
    from bulkpost.core.options import RunOptions
    from bulkpost.runner.pipeline import Run

    options = RunOptions(input=tmp_path / "in.csv", results=tmp_path / "r.csv", mode=mode,
                         mapping=parse_mapping({"activity": {"event": 201,
                                                             "lead_id_column": "lead"}}),
                         rate=parse_rate("25/5s"), bulk_rate=parse_rate("1/5s"))
    assert options.worker_count() == single and options.bulk_worker_count() == bulk
    assert Run(options).activities_per_second() == pytest.approx(per_second, rel=0.01)


@pytest.mark.parametrize(("change", "message"), [
    ({"mode": "fast"}, "expected single, bulk or both"),
    ({"batch_size": 26}, "1 to 25"),
    ({"batch_size": 0}, "1 to 25"),
])
def test_python_api_checks_the_bulk_options(tmp_path: Path, change: dict[str, Any],
                                            message: str) -> None:
    import bulkpost
    from bulkpost.errors import UsageError

    with pytest.raises(UsageError, match=message):
        bulkpost.run(tmp_path / "in.csv", {"activity": {"event": 201, "lead_id_column": "l"}},
                     tmp_path / "r.csv", dry_run=True, bulk_rate="5/5s", **change)


@pytest.mark.e2e
def test_a_bulk_call_failing_with_an_mx_error_after_saving_is_looked_up_not_resent(
        tmp_path: Path, make_sandbox: Any) -> None:
    """A 5xx refusal does not prove nothing was created: its rows are never sent blindly
    again. Here every answer is an error, so no row is ever known to be created and the
    look-ups cannot be calibrated: the rows stay unknown, each created once."""
    done, server, rows = _run_bulk(tmp_path, make_sandbox, 30, faults={"mx-after": 1.0},
                                   seed=1)
    ledger = server.ledger()
    assert len(ledger) == 29  # every valid row once; row 7 refused; nothing re-sent
    assert done.code == 1 and done.summary["found_posted"] == 0, done.stderr[-2000:]
    unknown = [r for n, r in rows.items() if n != 7]
    assert {r["status"] for r in unknown} == {"unknown"} and len(unknown) == 29
    assert all("not calibrated" in r["error"] for r in unknown)


@pytest.mark.e2e
def test_items_answered_rate_limited_are_sent_again_without_spending_attempts(
        tmp_path: Path, serve_handler: Any) -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        items = await request.json()
        calls.append(len(items))
        if len(calls) == 1:  # the first call: every item rate limited
            return web.json_response({"Response": [
                {"RowNumber": n, "ActivityCreated": False,
                 "ExceptionType": "MXAPIRateLimitExceededException"}
                for n in range(1, len(items) + 1)]})
        return web.json_response({"Response": [
            {"RowNumber": n, "ActivityCreated": True, "ProspectActivityId": f"id-{len(calls)}-{n}"}
            for n in range(1, len(items) + 1)]})

    url = serve_handler(handler)
    data, mapping = _bulk_input(tmp_path, 6)  # rows 1-3, 5-6 by Id; row 4 by e-mail
    results = tmp_path / "results.csv"
    done = run_cli("run", data, "--mapping", mapping, "--results", results, "--host", url,
                   "--mode", "bulk", "--bulk-rate", "20/1s", "--no-preflight",
                   "--max-attempts", "1", "--verify-first", "0", "--log-format", "json")
    assert done.code == 0, done.stderr[-2000:]
    rows = read_results(results)
    assert {r["status"] for r in rows.values()} == {"posted"}
    assert {r["attempts"] for r in rows.values()} == {"1"}
    assert done.summary["rate_limited"] >= 1
