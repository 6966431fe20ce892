"""The sandbox behaves like the API: auth, strict sliding window, validation, seeded faults."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from bulkpost.errors import UsageError
from bulkpost.sandbox import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    Sandbox,
    parse_faults,
    parse_latency,
    parse_tail,
)

pytestmark = pytest.mark.e2e

HEADERS = {"x-LSQ-AccessKey": DEFAULT_ACCESS_KEY, "x-LSQ-SecretKey": DEFAULT_SECRET_KEY}
GOOD = {"RelatedProspectId": "9e3779b9-7f4a-4c15-b39c-c0605cedc834", "ActivityEvent": 201,
        "ActivityNote": "n", "ActivityDateTime": "2024-01-01 10:00:00",
        "Fields": [{"SchemaName": "mx_Custom_1", "Value": "x"}]}


async def _post(url: str, body: Any, headers: dict[str, str] | None = None,
                query: str = "", raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        data = raw if raw is not None else json.dumps(body).encode()
        async with session.post(f"{url}/v2/ProspectActivity.svc/Create{query}", data=data,
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
    fake = Sandbox(latency=(0.0, 0.1), latency_tail=(0.25, 3.0), seed=9)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    async def draw() -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(asyncio, "sleep", sleep)
            for _ in range(2000):
                await fake._latency()

    asyncio.run(draw())
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
