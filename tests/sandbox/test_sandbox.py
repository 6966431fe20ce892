"""The sandbox behaves like the API: auth, strict sliding window, validation, seeded faults."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulkpost.core.allowance import parse_rate
from bulkpost.core.credentials import account_digest
from bulkpost.errors import UsageError
from bulkpost.sandbox.dialect import CHOICES, DIALECTS, Dialect, page, parse_dialect, shown_value
from bulkpost.sandbox.faults import (
    FAULT_KINDS,
    LOOKUP_FAULTS,
    draw_fate,
    parse_faults,
    parse_latency,
    parse_tail,
)
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from bulkpost.sandbox.paths import ACTIVITY_DETAILS, BULK_BY_LEAD_ID, CREATE, RETRIEVE
from bulkpost.sandbox.store import parse_altered
from bulkpost.sandbox.validation import CATALOG
from tests.conftest import cli_command, cli_env, run_cli

pytestmark = pytest.mark.e2e

HEADERS = {"x-LSQ-AccessKey": DEFAULT_ACCESS_KEY, "x-LSQ-SecretKey": DEFAULT_SECRET_KEY}
GOOD = {"RelatedProspectId": "9e3779b9-7f4a-4c15-b39c-c0605cedc834", "ActivityEvent": 201,
        "ActivityNote": "n", "ActivityDateTime": "2024-01-01 10:00:00",
        "Fields": [{"SchemaName": "mx_Custom_1", "Value": "x"}]}


async def _post(url: str, body: Any, headers: dict[str, str] | None = None,
                query: str = "", raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        data = raw if raw is not None else json.dumps(body).encode()
        async with session.post(f"{url}{CREATE}{query}", data=data,
                                headers={"Content-Type": "application/json",
                                         **(HEADERS if headers is None else headers)}) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text.startswith("{") else {"text": text}


def test_auth_by_headers_or_query(make_sandbox: Any) -> None:
    server = make_sandbox()
    assert asyncio.run(_post(server.url, GOOD))[0] == 200
    query = f"?accessKey={DEFAULT_ACCESS_KEY}&secretKey={DEFAULT_SECRET_KEY}"
    assert asyncio.run(_post(server.url, GOOD, headers={}, query=query))[0] == 200
    status, body = asyncio.run(_post(server.url, GOOD, headers={**HEADERS,
                                                                "x-LSQ-SecretKey": "no"}))
    assert status == 401 and body["Status"] == "Error"
    assert server.stats()["created"] == 2


def test_strict_sliding_window(make_sandbox: Any) -> None:
    server = make_sandbox(rate="5/1s")

    async def burst() -> list[int]:
        return [s for s, _ in await asyncio.gather(*(_post(server.url, GOOD) for _ in range(8)))]

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 5 and statuses.count(429) == 3
    status, body = asyncio.run(_post(server.url, GOOD))
    assert status == 429 and body["ExceptionType"] == "MXAPIRateLimitExceededException"
    assert body["ExceptionMessage"] == "API calls exceeded the limit of 5 in 1 second(s)"
    stats = server.stats()
    assert stats["rate_limited"] == 4 and stats["created"] == 5 and stats["max_in_window"] == 9


SAID = "API calls exceeded the limit of 2 in 1 second(s)"


@pytest.mark.parametrize(("answer", "status", "body"), [
    ("429", 429, {"Status": "Error", "ExceptionType": "MXAPIRateLimitExceededException",
                  "ExceptionMessage": SAID}),
    ("403", 403, {"Status": "Error", "ExceptionMessage": SAID}),
    ("200", 200, {"Status": "Error", "ExceptionType": "MXAPIRateLimitExceededException",
                  "ExceptionMessage": SAID}),
    ("403-plain", 403, {"text": SAID}),
])
def test_rate_limiting_is_answered_in_the_form_asked_for(make_sandbox: Any, answer: str,
                                                          status: int, body: Any) -> None:
    server = make_sandbox(rate="2/1s", rate_limit_answer=answer)

    async def burst() -> list[tuple[int, dict[str, Any]]]:
        return await asyncio.gather(*(_post(server.url, GOOD) for _ in range(3)))

    answers = asyncio.run(burst())
    assert answers.count((status, body)) == 1  # the third call of the burst
    assert server.stats()["created"] == 2 and server.stats()["rate_limited"] == 1
    assert server.stats()["rate_limit_answer"] == answer


def test_an_unknown_rate_limit_answer_is_refused() -> None:
    from bulkpost.errors import UsageError
    from bulkpost.sandbox.app import Sandbox

    with pytest.raises(UsageError, match="429, 403, 200, 403-plain"):
        Sandbox(rate_limit_answer="418")


@pytest.mark.parametrize(("change", "message"), [
    ({"RelatedProspectId": "nope"}, "Invalid RelatedProspectId"),
    ({"ActivityEvent": "201"}, "must be an integer"),
    ({"ActivityEvent": 5}, "does not exist"),
    ({"ActivityDateTime": "2024-01-01T10:00:00Z"}, "Invalid ActivityDateTime"),
    ({"Fields": [{"SchemaName": "mx_Custom_99", "Value": "x"}]}, "Invalid field SchemaName"),
    ({"Fields": [{"SchemaName": "mx_Custom_1", "Value": 5}]}, "Value must be a string"),
])
def test_validation_errors_are_mx_exceptions(make_sandbox: Any, change: dict[str, Any],
                                             message: str) -> None:
    server = make_sandbox()
    status, body = asyncio.run(_post(server.url, {**GOOD, **change}))
    assert status == 500 and body["ExceptionType"] == "MXInvalidInputException"
    assert message in body["ExceptionMessage"]
    assert server.stats()["created"] == 0


def test_body_that_is_not_json_is_400(make_sandbox: Any) -> None:
    server = make_sandbox()
    status, body = asyncio.run(_post(server.url, None, raw=b"{nope"))
    assert status == 400 and body["Status"] == "Error"


def test_faults_are_reproducible_by_seed(make_sandbox: Any) -> None:
    faults = {"500-before": 0.3, "429-other": 0.2, "ratelimit-200": 0.2}

    def sequence() -> list[int]:
        server = make_sandbox(faults=faults, seed=42)

        async def calls() -> list[int]:
            return [(await _post(server.url, GOOD))[0] for _ in range(30)]

        return asyncio.run(calls())

    first, second = sequence(), sequence()
    assert first == second
    assert {500, 429, 200} <= set(first)


def test_parse_faults_and_latency() -> None:
    assert parse_faults("500-before:0.1, html:0.2") == {"500-before": 0.1, "html": 0.2}
    for bad in ("boom:0.1", "html:x", "html:2", "html:0.6,500-after:0.6"):
        with pytest.raises(UsageError):
            parse_faults(bad)
    assert parse_latency("0.08:0.6") == (0.08, 0.6)
    assert parse_latency("0.2") == (0.2, 0.2)
    with pytest.raises(UsageError):
        parse_latency("1:0.5")


def test_arrival_delay_comes_before_the_window_and_the_ledger_keeps_the_arrival(
        make_sandbox: Any) -> None:
    """Requests travel before the window counts them; the answer latency comes after."""
    server = make_sandbox(arrival=(0.2, 0.2), latency=(0.1, 0.1), latency_tail=(1.0, 0.3),
                          seed=3)
    sent = time.time()
    status, _ = asyncio.run(_post(server.url, GOOD))
    answered = time.time()
    assert status == 200
    (entry,) = server.ledger()
    arrived = entry["ReceivedAt"]
    assert 0.2 <= arrived - sent < 0.3  # the trip, then counted
    assert 0.1 <= answered - arrived < 0.45  # every answer in the tail: 0.1 .. 0.3 s
    stats = server.stats()
    assert stats["first_created"] == stats["last_created"] == arrived


def test_latency_tail_takes_its_share_of_the_answers() -> None:
    delays = [draw_fate(9, "call", n, latency=(0.0, 0.1), tail=(0.25, 3.0)).latency
              for n in range(2000)]
    tail = [d for d in delays if d > 0.1]
    assert all(0 <= d <= 3.0 for d in delays)
    assert 0.2 < len(tail) / len(delays) < 0.3
    assert max(tail) > 2.5


def test_parse_tail() -> None:
    assert parse_tail("0.03:3") == (0.03, 3.0)
    assert parse_tail("0") == (0.0, 0.0)
    for bad in ("x:1", "2:1", "0.1:-1"):
        with pytest.raises(UsageError, match="--latency-tail"):
            parse_tail(bad)
    with pytest.raises(UsageError, match="--arrival-latency"):
        parse_latency("1:0.5", "--arrival-latency")


# -- dialects: how look-ups show what was stored ------------------------------------------
LEAD = str(GOOD["RelatedProspectId"])
NOTE = "Café 👇 & co\n<b>"
NOTE_ENTITIES = "Caf&#xE9; &#x1F447; & co\n<b>"
ORDER: dict[str, Any] = {"RelatedProspectId": LEAD, "ActivityEvent": 301, "ActivityNote": "o",
         "ActivityDateTime": "2024-01-01 10:00:00",
         "Fields": [{"SchemaName": "mx_Custom_1", "Value": "A-1"},
                    {"SchemaName": "mx_Custom_2", "Value": "12.50"},
                    {"SchemaName": "mx_Custom_3", "Value": "Web"},
                    {"SchemaName": "mx_Custom_4", "Value": "2024-01-05"},
                    {"SchemaName": "mx_Custom_5", "Value": "2024-01-05 10:00:00"},
                    {"SchemaName": "mx_Custom_6", "Value": "Zoë 👇"}]}


async def _call(url: str, method: str, path: str, body: Any = None,
                query: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One call; ``(0, None)`` when the connection is reset or dropped."""
    try:
        async with aiohttp.ClientSession() as session, session.request(
                method, f"{url}{path}", params=query,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Content-Type": "application/json",
                         **(HEADERS if headers is None else headers)}) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text[:1] in ("{", "[") else text
    except aiohttp.ClientError:
        return 0, None


def _create(url: str, body: Any) -> tuple[int, Any]:
    return asyncio.run(_call(url, "POST", CREATE, body))


def _retrieve(url: str, offset: int = 0, count: int = 25,
              event: int | None = None) -> dict[str, Any]:
    query: dict[str, Any] = {"Paging": {"Offset": str(offset), "RowCount": str(count)},
                             "Parameter": {} if event is None else {"ActivityEvent": event}}
    status, answer = asyncio.run(_call(url, "POST", RETRIEVE, query, {"leadId": LEAD}))
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


def _details(url: str, activity_id: str,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return asyncio.run(_call(url, "GET", ACTIVITY_DETAILS, query={
        "activityId": activity_id}, headers=headers))


def _pairs(data: list[dict[str, str]]) -> dict[str, str]:
    return {pair["Key"]: pair["Value"] for pair in data}


def _one_item(server: Any, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = _create(server.url, body)
    assert status == 200, answer
    (item,) = _retrieve(server.url)["ProspectActivities"]
    assert item["Id"] == answer["Message"]["Id"]
    assert item["RelatedProspectId"] == LEAD and item["ModifiedOn"] == item["CreatedOn"]
    shown: dict[str, Any] = item
    return shown


NOTED: dict[str, Any] = {**GOOD, "ActivityNote": NOTE,
         "Fields": [{"SchemaName": "mx_Custom_1", "Value": "Zoë"},
                    {"SchemaName": "mx_Custom_2", "Value": "plain"}]}


def test_classic_shows_data_as_an_object_of_the_values_as_sent(make_sandbox: Any) -> None:
    server = make_sandbox()
    item = _one_item(server, NOTED)
    assert item["Data"] == {"ActivityEvent_Note": NOTE, "mx_Custom_1": "Zoë",
                            "mx_Custom_2": "plain"}
    assert "ActivityFields" not in item
    assert (item["EventCode"], item["EventName"]) == (201, "Event 201")
    assert item["CreatedOn"] == "2024-01-01 10:00:00"
    assert server.stats()["dialect"] == "classic"


def test_captured_shows_activity_fields_and_a_key_value_data_list(make_sandbox: Any) -> None:
    server = make_sandbox(dialect=DIALECTS["captured"])
    item = _one_item(server, NOTED)
    assert item["CreatedOn"] == "2024-01-01 10:00:00"
    fields = item["ActivityFields"]
    assert fields["ActivityEvent_Note"] == NOTE_ENTITIES
    assert (fields["mx_Custom_1"], fields["mx_Custom_2"]) == ("Zo&#xEB;", "plain")
    assert fields["CreatedOn"] == fields["ModifiedOn"] == "1/1/2024 10:00:00 AM"
    assert fields["ProspectActivityAutoId"].isdigit()
    assert {"CreatedBy", "Status", "Owner"} <= fields.keys()
    assert [pair["Key"] for pair in item["Data"]] == [
        "CreatedByName", "EventName", "NotableEventDescription", "HasAttachments"]
    assert _pairs(item["Data"])["NotableEventDescription"] == NOTE_ENTITIES


def test_pages_shows_note_and_fields_in_a_data_list_without_activity_fields(
        make_sandbox: Any) -> None:
    server = make_sandbox(dialect=DIALECTS["pages"])
    item = _one_item(server, NOTED)
    assert "ActivityFields" not in item
    assert _pairs(item["Data"]) == {"NotableEventDescription": NOTE, "mx_Custom_1": "Zoë",
                                    "mx_Custom_2": "plain"}


@pytest.mark.parametrize(("preset", "posted_shown"), [
    ("classic", True), ("captured", True), ("arrival", False), ("pages", False)])
def test_created_on_is_the_posted_time_or_the_arrival(make_sandbox: Any, preset: str,
                                                      posted_shown: bool) -> None:
    server = make_sandbox(dialect=DIALECTS[preset])
    timeless = {k: v for k, v in GOOD.items() if k != "ActivityDateTime"}
    for body in (GOOD, timeless):
        assert _create(server.url, body)[0] == 200
    first_page = 1 if preset == "arrival" else 0  # arrival counts pages from 1
    untimed, timed = _retrieve(server.url, first_page)["ProspectActivities"]  # newest first
    arrivals = [time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["ReceivedAt"]))
                for e in server.ledger()]
    assert arrivals[0] != GOOD["ActivityDateTime"]
    assert timed["CreatedOn"] == (GOOD["ActivityDateTime"] if posted_shown else arrivals[0])
    assert untimed["CreatedOn"] == arrivals[1]


def _thirty(server: Any) -> list[str]:
    """30 activities on one lead, one by one; their Ids newest first."""
    async def create() -> None:
        for number in range(30):
            status, _ = await _call(server.url, "POST", CREATE,
                                    {**GOOD, "ActivityNote": f"n{number}"})
            assert status == 200
    asyncio.run(create())
    return [e["Id"] for e in reversed(server.ledger())]


@pytest.mark.parametrize(("rule", "offsets"), [
    ("rows", (0, 25)), ("pages0", (0, 1)), ("pages1", (1, 2))])
def test_each_offset_rule_pages_through_thirty(make_sandbox: Any, rule: str,
                                               offsets: tuple[int, int]) -> None:
    server = make_sandbox(dialect=parse_dialect(f"offset={rule}"))
    ids = _thirty(server)
    first, second = (_retrieve(server.url, offset) for offset in offsets)
    assert [a["Id"] for a in first["ProspectActivities"]] == ids[:25]
    assert [a["Id"] for a in second["ProspectActivities"]] == ids[25:]
    assert first["RecordCount"] == second["RecordCount"] == 30
    assert [a["Data"]["ActivityEvent_Note"] for a in first["ProspectActivities"]] == [
        f"n{n}" for n in range(29, 4, -1)]
    zero = _retrieve(server.url, 0)
    assert [a["Id"] for a in zero["ProspectActivities"]] == (
        [] if rule == "pages1" else ids[:25])
    assert zero["RecordCount"] == 30


def test_pages1_offset_zero_is_an_empty_page_and_record_count_can_count_the_page(
        make_sandbox: Any) -> None:
    server = make_sandbox(dialect=DIALECTS["arrival"])  # pages1, record_count=page
    ids = _thirty(server)
    empty = _retrieve(server.url, 0)
    assert empty == {"RecordCount": 0, "ProspectActivities": []}
    second = _retrieve(server.url, 2)
    assert [a["Id"] for a in second["ProspectActivities"]] == ids[25:]
    assert second["RecordCount"] == 5
    assert _retrieve(server.url, 1)["RecordCount"] == 25
    assert _retrieve(server.url, 3) == {"RecordCount": 0, "ProspectActivities": []}


def test_rows_offset_with_record_count_per_page(make_sandbox: Any) -> None:
    server = make_sandbox(dialect=parse_dialect("record_count=page"))
    _thirty(server)
    assert _retrieve(server.url, 10, 25)["RecordCount"] == 20
    assert _retrieve(server.url, 0, 7)["RecordCount"] == 7
    assert _retrieve(server.url, 30)["RecordCount"] == 0


def test_typed_dialect_shows_typed_values_in_the_api_form(make_sandbox: Any) -> None:
    server = make_sandbox(dialect=parse_dialect("typed=true"))
    order = {**ORDER, "Fields": [*ORDER["Fields"][:2],
                                 {"SchemaName": "mx_Custom_3", "Value": "pHONE"},
                                 *ORDER["Fields"][3:]]}
    item = _one_item(server, order)
    assert item["EventName"] == "Order"
    assert item["Data"] == {"ActivityEvent_Note": "o", "mx_Custom_1": "A-1",
                            "mx_Custom_2": "12.5", "mx_Custom_3": "Phone",
                            "mx_Custom_4": "2024-01-05 00:00:00",
                            "mx_Custom_5": "1/5/2024 10:00:00 AM", "mx_Custom_6": "Zoë 👇"}
    (entry,) = server.ledger()
    assert entry["Fields"]["mx_Custom_2"] == "12.50"  # stored as sent; shown normalised
    assert entry["Fields"]["mx_Custom_3"] == "Phone"  # stored as the option
    assert entry["Sent"]["mx_Custom_3"] == "pHONE"


def test_a_dropdown_in_another_case_is_refused_when_not_typed(make_sandbox: Any) -> None:
    server = make_sandbox()
    order = {**ORDER, "Fields": [*ORDER["Fields"][:2],
                                 {"SchemaName": "mx_Custom_3", "Value": "web"}]}
    status, answer = _create(server.url, order)
    assert status == 500 and answer["ExceptionMessage"] == (
        "Channel: 'web' is not one of the options")
    assert _create(server.url, ORDER)[0] == 200
    (entry,) = server.ledger()
    assert entry["Fields"] == {f["SchemaName"]: f["Value"] for f in ORDER["Fields"]}
    assert "Sent" not in entry


@pytest.mark.parametrize(("kind", "sent", "shown"), [
    ("Number", "12.50", "12.5"), ("Number", "007", "7"), ("Number", "3.0", "3"),
    ("Number", "100", "100"), ("Number", "-0.250", "-0.25"), ("Number", "1e3", "1000"),
    ("Date", "2024-01-05", "2024-01-05 00:00:00"),
    ("DateTime", "2024-01-05 10:00:00", "1/5/2024 10:00:00 AM"),
    ("DateTime", "2024-11-25 15:04:05", "11/25/2024 3:04:05 PM"),
    ("DateTime", "2024-01-05 00:30:00", "1/5/2024 12:30:00 AM"),
    ("DateTime", "2024-01-05 12:00:00", "1/5/2024 12:00:00 PM"),
    ("Date", "2024-", "2024-"),  # an altered value is shown as it is stored
    ("String", "Zoë", "Zoë"),
])
def test_typed_forms(kind: str, sent: str, shown: str) -> None:
    typed = parse_dialect("typed=true")
    assert shown_value(sent, {"DataType": kind}, typed) == shown
    assert shown_value(sent, {"DataType": kind}, DIALECTS["classic"]) == sent


def test_entities_apply_to_string_values_only() -> None:
    captured = DIALECTS["captured"]
    assert shown_value("Café 👇 & co", {"DataType": "String"}, captured) == (
        "Caf&#xE9; &#x1F447; & co")
    assert shown_value("Café", None, captured) == "Caf&#xE9;"
    assert shown_value("Café", {"DataType": "Dropdown"}, captured) == "Café"


def test_details_answer_every_field_of_the_type(make_sandbox: Any) -> None:
    server = make_sandbox(dialect=DIALECTS["arrival"])  # entities and typed
    status, answer = _create(server.url, {**ORDER, "Fields": [
        *ORDER["Fields"][:2], {"SchemaName": "mx_Custom_3", "Value": "STORE"},
        *ORDER["Fields"][3:]]})
    assert status == 200
    status, details = _details(server.url, answer["Message"]["Id"])
    assert status == 200
    assert (details["ID"], details["Name"], details["DisplayName"]) == (
        answer["Message"]["Id"], "Order", "Order")
    fields = details["Fields"]
    assert [f["SchemaName"] for f in fields] == [f["SchemaName"] for f in CATALOG[301]["Fields"]]
    assert [f["Sequence"] for f in fields] == list(range(1, 9))
    assert {f["SchemaName"]: f["Value"] for f in fields} == {
        "mx_Custom_1": "A-1", "mx_Custom_2": "12.5", "mx_Custom_3": "Store",
        "mx_Custom_4": "2024-01-05 00:00:00", "mx_Custom_5": "1/5/2024 10:00:00 AM",
        "mx_Custom_6": "Zo&#xEB; &#x1F447;", "mx_Custom_7": "", "mx_Custom_8": ""}
    first, _, channel = fields[:3]
    assert (first["DisplayName"], first["DataType"], first["IsMandatory"]) == (
        "Order No", "String", True)
    assert all(f["ShowInForm"] is True for f in fields)
    assert json.loads(channel["OptionSet"])[2]["Value"] == "Store"
    stats = server.stats()
    assert stats["details"] == stats["lookups"] == 1


def test_details_of_an_unknown_or_foreign_activity_is_the_unknown_activity_error(
        make_sandbox: Any) -> None:
    server = make_sandbox(keys={DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY, "other": "secret"})
    status, answer = _create(server.url, GOOD)
    assert status == 200
    activity_id = answer["Message"]["Id"]
    assert _details(server.url, activity_id.upper())[0] == 200
    foreign = _details(server.url, activity_id,
                       headers={"x-LSQ-AccessKey": "other", "x-LSQ-SecretKey": "secret"})
    unknown = _details(server.url, "6f1c2a9e-0000-4000-8000-000000000000")
    for status, body in (foreign, unknown):
        # As a real account answers an unknown or deleted Id, the same on every retry.
        assert status == 500 and body == {"Status": "Error",
                                          "ExceptionType": "MXUnknownProspectActivityException",
                                          "ExceptionMessage": "Activity does not exist"}
    field = _details(server.url, activity_id)[1]["Fields"][0]
    assert (field["SchemaName"], field["Value"]) == ("mx_Custom_1", "x")
    assert server.stats()["details"] == 4


def test_altered_fields_are_stored_as_their_first_half(make_sandbox: Any) -> None:
    server = make_sandbox(altered=frozenset({"mx_Custom_2", "mx_Custom_3", "mx_Custom_8"}))
    item = _one_item(server, ORDER)
    assert (item["Data"]["mx_Custom_2"], item["Data"]["mx_Custom_3"]) == ("12", "W")
    assert item["Data"]["mx_Custom_1"] == "A-1"
    (entry,) = server.ledger()
    assert entry["Fields"]["mx_Custom_2"] == "12" and entry["Fields"]["mx_Custom_3"] == "W"
    assert entry["Sent"] == {f["SchemaName"]: f["Value"] for f in ORDER["Fields"]}
    assert _create(server.url, GOOD)[0] == 200  # no altered field sent: nothing differs
    assert "Sent" not in server.ledger()[1]


def test_parse_altered() -> None:
    assert parse_altered(" mx_Custom_2, mx_Custom_3 ,") == {"mx_Custom_2", "mx_Custom_3"}
    assert parse_altered("") == frozenset()
    with pytest.raises(UsageError, match="Amount"):
        parse_altered("mx_Custom_2,Amount")


def test_parse_dialect_presets_and_overrides() -> None:
    for name, preset in DIALECTS.items():
        assert parse_dialect(name) is preset
    assert parse_dialect("") is DIALECTS["classic"]
    changed = parse_dialect("captured, offset=pages0, entities=False")
    assert changed == Dialect("captured,offset=pages0,entities=false", "activity-fields",
                              entities=False, created_on="posted", offset="pages0",
                              record_count="total", typed=False, update_log=True)
    alone = parse_dialect("typed=true,created-on=arrival")
    assert (alone.name, alone.fields, alone.typed, alone.created_on) == (
        "classic,typed=true,created_on=arrival", "data", True, "arrival")


@pytest.mark.parametrize(("spec", "listed"), [
    ("nope", "classic, captured, arrival, pages"),
    ("captured,offset=pages2", "rows, pages0, pages1"),
    ("captured,colour=red",
     "fields, entities, created_on, offset, record_count, typed, update_log"),
    ("captured,offset", "KEY=VALUE"),
    ("captured,pages", "KEY=VALUE"),
    ("typed=maybe", "true, false"),
])
def test_parse_dialect_errors_list_what_is_known(spec: str, listed: str) -> None:
    with pytest.raises(UsageError, match="--dialect") as caught:
        parse_dialect(spec)
    assert listed in str(caught.value)


def test_the_presets_cover_every_variant_of_every_trait() -> None:
    for key, values in CHOICES.items():
        seen = {str(getattr(d, key)).lower() for d in DIALECTS.values()}
        # Pages without custom fields are an override only: look-ups never calibrate there.
        assert seen == set(values) - {"note-only"}, key
    classic = DIALECTS["classic"]
    assert (classic.fields, classic.entities, classic.created_on, classic.offset,
            classic.record_count, classic.typed) == ("data", False, "posted", "rows",
                                                     "total", False)
    with pytest.raises(ValueError, match="offset"):
        Dialect("bad", "data", entities=False, created_on="posted", offset="pages",
                record_count="total", typed=False)


def test_page_is_a_pure_function_of_the_rule() -> None:
    rows = list(range(30))
    assert page(rows, 5, 10, DIALECTS["classic"]) == (list(range(5, 15)), 30)
    assert page(rows, 2, 10, DIALECTS["pages"]) == (list(range(20, 30)), 30)
    assert page(rows, 3, 10, DIALECTS["arrival"]) == (list(range(20, 30)), 10)
    assert page(rows, 0, 10, DIALECTS["arrival"]) == ([], 0)
    assert page(rows, 0, 10, parse_dialect("offset=pages1")) == ([], 30)


# -- faults: counted when they strike; every configured kind strikes early -----------------
def _bulk(url: str, count: int) -> tuple[int, Any]:
    items = [{**GOOD, "ActivityNote": f"b{n}"} for n in range(count)]
    return asyncio.run(_call(url, "POST", BULK_BY_LEAD_ID, items))


def test_faults_are_counted_when_they_take_effect(make_sandbox: Any) -> None:
    server = make_sandbox(faults={"500-after": 0.5, "bulk-partial": 0.5}, seed=5)
    for _ in range(6):  # look-ups create nothing: neither fault can strike them
        assert _retrieve(server.url)["ProspectActivities"] == []
    assert server.stats()["faults"] == dict.fromkeys(FAULT_KINDS, 0)
    status, _ = _create(server.url, {**GOOD, "ActivityEvent": 5})
    assert status == 500 and server.stats()["faults"]["500-after"] == 0  # refused first
    assert _create(server.url, GOOD) == (500, "Internal Server Error")  # owed: strikes now
    assert server.stats()["faults"]["500-after"] == 1 and len(server.ledger()) == 1
    statuses = [_create(server.url, GOOD)[0] for _ in range(20)]
    faults = server.stats()["faults"]
    assert faults["500-after"] == 1 + statuses.count(500)
    assert faults["bulk-partial"] == 0  # drawn for single creates, never struck
    assert 200 in statuses and 500 in statuses
    status, answer = _bulk(server.url, 4)
    assert status == 200 and [a["RowNumber"] for a in answer["Response"]] == [1, 2]
    assert server.stats()["faults"]["bulk-partial"] == 1 and len(server.ledger()) == 25


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_configured_kind_takes_effect_within_the_first_calls(make_sandbox: Any,
                                                                    seed: int) -> None:
    """One look-up, nine creates and a bulk call: each of the eleven kinds strikes once."""
    def run() -> list[int]:
        server = make_sandbox(faults=dict.fromkeys(FAULT_KINDS, 0.05), seed=seed,
                              slow_seconds=0.01)

        async def calls() -> list[int]:
            query = {"Paging": {"Offset": "0", "RowCount": "25"}}
            statuses = [(await _call(server.url, "POST", RETRIEVE, query,
                                     {"leadId": LEAD}))[0]]
            for _ in range(9):
                statuses.append((await _call(server.url, "POST", CREATE, GOOD))[0])
            return statuses

        statuses = asyncio.run(calls())
        statuses.append(_bulk(server.url, 4)[0])
        assert server.stats()["faults"] == dict.fromkeys(FAULT_KINDS, 1)
        return statuses

    first = run()
    assert first == run()  # the seed picks the same order
    assert 0 in first and 502 in first and 429 in first


def test_a_lookup_is_struck_only_by_faults_that_strike_before_creating(
        make_sandbox: Any) -> None:
    after = [k for k in FAULT_KINDS if k not in LOOKUP_FAULTS]
    server = make_sandbox(faults={**dict.fromkeys(after, 0.1), "html": 0.1}, seed=11)
    statuses = [asyncio.run(_call(server.url, "GET", ACTIVITY_DETAILS,
                                  query={"activityId": "x"}))[0] for _ in range(30)]
    faults = server.stats()["faults"]
    assert statuses[0] == 502 and faults["html"] == statuses.count(502) >= 1
    assert all(faults[k] == 0 for k in after)
    assert set(statuses) <= {500, 502}
    assert server.stats()["details"] == statuses.count(500)


# -- fates: each call's own seeded stream, so that a seed replays a run -------------------
def _drive(server: Any) -> list[tuple[int, Any]]:
    """Thirty calls, one after the other: creates (some identical), look-ups, bulk calls."""
    async def calls() -> list[tuple[int, Any]]:
        answers = []
        for n in range(30):
            if n % 6 == 5:
                answers.append(await _call(server.url, "POST", RETRIEVE, {
                    "Paging": {"Offset": "0", "RowCount": "25"}}, {"leadId": LEAD}))
            elif n % 8 == 7:
                answers.append(await _call(server.url, "POST", BULK_BY_LEAD_ID, [
                    {**GOOD, "ActivityNote": f"b{n}-{item}"} for item in range(3)]))
            else:
                answers.append(await _call(server.url, "POST", CREATE,
                                           {**GOOD, "ActivityNote": f"n{n % 4}"}))
        return answers

    return asyncio.run(calls())


def test_a_seed_replays_the_fates_and_the_fault_counts(make_sandbox: Any) -> None:
    def run(seed: int) -> tuple[list[tuple[int, Any]], list[str], dict[str, int]]:
        server = make_sandbox(faults=dict.fromkeys(FAULT_KINDS, 0.06), seed=seed,
                              slow_seconds=0.01, bulk_rate=parse_rate("100/1s"),
                              latency=(0.0, 0.002))
        answers = _drive(server)
        return answers, [e["Id"] for e in server.ledger()], server.stats()["faults"]

    first, again, other = run(5), run(5), run(6)
    assert first == again  # every answer, every Id created, every fault
    answers, ids, faults = first
    assert all(count >= 1 for count in faults.values())  # every kind owed, and struck
    assert len(set(ids)) == len(ids) and sum(faults.values()) > len(FAULT_KINDS)
    assert other[1] != ids and [a[0] for a in other[0]] != [a[0] for a in answers]


def test_a_calls_fate_is_its_own_whatever_came_before(make_sandbox: Any) -> None:
    """Concurrent calls arrive in any order: that changes no call's fate."""
    bodies = [{**GOOD, "ActivityNote": f"n{n}"} for n in range(12)]

    def ids(order: list[int]) -> dict[str, str]:
        server = make_sandbox(seed=8)
        for n in order:
            assert _create(server.url, bodies[n])[0] == 200
        return {e["ActivityNote"]: e["Id"] for e in server.ledger()}

    assert ids(list(range(12))) == ids(list(range(11, -1, -1)))
    fate = draw_fate(8, "call", 0, arrival=(0.1, 0.2), latency=(0.0, 1.0))
    same = draw_fate(8, "call", 0, arrival=(0.1, 0.2), latency=(0.0, 1.0))
    assert (fate.arrival, fate.latency, fate.draw, fate.new_id()) == (
        same.arrival, same.latency, same.draw, same.new_id())
    assert 0.1 <= fate.arrival <= 0.2 and 0 <= fate.draw < 1
    assert draw_fate(8, "call", 1).draw != fate.draw  # the next identical call: its own
    assert draw_fate(9, "call", 0).draw != fate.draw


def test_cli_sandbox_announces_its_dialect() -> None:
    done = subprocess.run(cli_command("sandbox", "--help"), capture_output=True, text=True,
                          env=cli_env(), timeout=60, check=False)
    assert done.returncode == 0
    usage = "".join(done.stdout.split())  # click wraps lines, even at hyphens
    for word in [*DIALECTS, *(f"{k}={'|'.join(v)}" for k, v in CHOICES.items()),
                 "--alter-stored"]:
        assert word in usage
    wrong = run_cli("sandbox", "--dialect", "captured,offset=sideways")
    assert wrong.code == 2 and "rows, pages0, pages1" in wrong.stderr
    process = subprocess.Popen(
        cli_command("sandbox", "--port", "0", "--dialect", "arrival,offset=rows",
                    "--alter-stored", "mx_Custom_2"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env())
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert announced["dialect"] == "arrival,offset=rows"
    assert announced["sandbox"].startswith("http://127.0.0.1:")


@pytest.mark.e2e
def test_the_ledger_names_the_account_by_a_digest_never_by_its_access_key(
        tmp_path: Path, make_sandbox: Any) -> None:
    path = tmp_path / "ledger.jsonl"
    server = make_sandbox(ledger=path)
    data = tmp_path / "in.csv"
    data.write_text("lead,note\n3f2504e0-4f89-41d3-9a0c-0305e82c3301,hello\n")
    mapping = tmp_path / "m.toml"
    mapping.write_text('[activity]\nevent = 201\nlead_id_column = "lead"\n'
                       'note_column = "note"\n')
    done = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                   "--host", server.url, "--rate", "100/1s")
    assert done.code == 0, done.stderr
    with urllib.request.urlopen(server.url + "/_sandbox/ledger") as answer:
        served = json.loads(answer.read())
    written = [json.loads(line) for line in path.read_text().splitlines()]
    for entries, text in ((written, path.read_text()), (served, json.dumps(served))):
        assert DEFAULT_ACCESS_KEY not in text and DEFAULT_SECRET_KEY not in text
        assert [entry["Account"] for entry in entries] == [account_digest(DEFAULT_ACCESS_KEY)]
        assert entries[0]["ActivityNote"] == "hello"


@pytest.mark.parametrize("fields", ["data", "activity-fields", "data-list"])
def test_an_update_adds_an_update_log_row_newest_first_when_the_dialect_says(
        make_sandbox: Any, fields: str) -> None:
    from bulkpost.sandbox.paths import UPDATE

    server = make_sandbox(dialect=parse_dialect(f"fields={fields},update_log=true"))
    first = _create(server.url, ORDER)[1]["Message"]["Id"]
    second = _create(server.url, {**ORDER, "ActivityNote": "p"})[1]["Message"]["Id"]
    status, _ = asyncio.run(_call(server.url, "POST", UPDATE, {
        "ProspectActivityId": first, "ActivityNote": "o2",
        "Fields": [{"SchemaName": "mx_Custom_1", "Value": "A-2"}]}))
    assert status == 200
    answer = _retrieve(server.url, event=301)  # listed whatever event is asked for
    assert answer["RecordCount"] == 3
    log, newer, updated = answer["ProspectActivities"]
    assert (log["Id"], newer["Id"], updated["Id"]) == (first, second, first)
    assert (log["EventCode"], log["Type"], updated["EventCode"]) == (3011, "Logs", 301)
    assert "ActivityFields" not in log
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", log["CreatedOn"])
    data = log["Data"] if fields == "data" else _pairs(log["Data"])
    assert data["Event"] == "Update"
    assert json.loads(data["OldData"]) == {"ActivityEvent_Note": "o", "mx_Custom_1": "A-1"}
    assert json.loads(data["NewData"]) == {"ActivityEvent_Note": "o2", "mx_Custom_1": "A-2"}
    # The activity keeps its CreatedOn; its ModifiedOn moves to the update's.
    assert updated["CreatedOn"] == "2024-01-01 10:00:00"
    assert updated["ModifiedOn"] == log["CreatedOn"][:19] != updated["CreatedOn"]
    plain = make_sandbox(dialect=parse_dialect(f"fields={fields}"))
    created = _create(plain.url, ORDER)[1]["Message"]["Id"]
    asyncio.run(_call(plain.url, "POST", UPDATE, {"ProspectActivityId": created,
                                                  "ActivityNote": "o2", "Fields": [
                                                      {"SchemaName": "mx_Custom_1",
                                                       "Value": "A-2"}]}))
    assert _retrieve(plain.url)["RecordCount"] == 1  # without it: no log row
