"""The clients bulkpost is measured against in ``make bench``, each run as its own process.

``python -m benchmarks.clients KIND URL INPUT MAPPING [--options]`` posts the rows of INPUT
and prints one JSON line: rows posted, 429s seen, and the CPU seconds of the posting phase
(building the request bodies comes first and is not counted). The kinds:

- ``sequential``: what public LeadSquared clients do: one call at a time, sleeping 220 ms
  between calls; a rate-limited row is sent again after the same sleep;
- ``gather``: the naive asyncio script: every row at once under
  ``aiolimiter.AsyncLimiter(N, T)``, a rate-limited row re-queued behind the limiter;
- ``bare``: the floor the HTTP stack allows: pre-built bodies posted by ``--concurrency``
  tasks on one aiohttp session, no limit, no results file;
- ``other``: a second client on the same account, spending ``--rate`` for ``--seconds``
  (calls started on a fixed beat, whatever the answers; nothing is re-sent).

Bodies are built by bulkpost's own mapping code, so every client sends the same requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

from bulkpost.core.activity import Activity, RowMapper
from bulkpost.core.allowance import parse_rate
from bulkpost.reading.mapping_file import load_mapping
from bulkpost.reading.source import open_source

HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
SLEEP = 0.22  # between calls, as in the public LeadSquared clients


def build_bodies(data: Path, mapping_path: Path) -> list[bytes]:
    """Every valid row's request body, in input order."""
    mapping = load_mapping(mapping_path)
    source = open_source(data, mapping.used_columns())
    mapper = RowMapper(mapping, source.utc_columns, source.typed_columns, None)
    bodies: list[bytes] = []
    while (batch := source.next_batch()) is not None:
        bodies.extend(item.body for item in mapper.map_batch(batch.rows, batch.columns)
                      if isinstance(item, Activity))
    return bodies


def _session() -> aiohttp.ClientSession:
    headers = {**HEADERS, "x-LSQ-AccessKey": os.environ["LSQ_ACCESS_KEY"],
               "x-LSQ-SecretKey": os.environ["LSQ_SECRET_KEY"]}
    return aiohttp.ClientSession(headers=headers,
                                 connector=aiohttp.TCPConnector(limit=0))


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    """One call; True if created, False if rate limited. Anything else is a bench bug."""
    async with session.post(url, data=body) as answer:
        document = await answer.json(content_type=None)
    if answer.status == 200 and document.get("Status") == "Success":
        return True
    if answer.status == 429:
        return False
    raise RuntimeError(f"unexpected answer {answer.status}: {document}")


async def sequential(url: str, bodies: list[bytes]) -> dict[str, Any]:
    posted = limited = 0
    async with _session() as session:
        for body in bodies:
            while not await _post(session, url, body):
                limited += 1
                await asyncio.sleep(SLEEP)
            posted += 1
            await asyncio.sleep(SLEEP)
    return {"posted": posted, "rate_limited": limited}


async def gather(url: str, bodies: list[bytes], rate: str) -> dict[str, Any]:
    spec = parse_rate(rate)
    limiter = AsyncLimiter(spec.calls, spec.period)
    limited = 0

    async def one(session: aiohttp.ClientSession, body: bytes) -> None:
        nonlocal limited
        while True:
            async with limiter:
                if await _post(session, url, body):
                    return
            limited += 1

    async with _session() as session:
        await asyncio.gather(*(one(session, body) for body in bodies))
    return {"posted": len(bodies), "rate_limited": limited}


async def bare(url: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    pending = iter(bodies)
    posted = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal posted
        for body in pending:
            if not await _post(session, url, body):
                raise RuntimeError("rate limited: the bare loop needs the limit lifted")
            posted += 1

    async with _session() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"posted": posted, "rate_limited": 0}


async def other(url: str, bodies: list[bytes], rate: str, seconds: float) -> dict[str, Any]:
    spec = parse_rate(rate)
    beat = 1 / spec.per_second
    outcomes: list[bool] = []
    tasks: list[asyncio.Task[None]] = []
    started = time.time()

    async def one(session: aiohttp.ClientSession, body: bytes) -> None:
        outcomes.append(await _post(session, url, body))

    async with _session() as session:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for n, body in enumerate(bodies):
            if n * beat >= seconds:
                break
            await asyncio.sleep(max(0.0, begin + n * beat - loop.time()))
            tasks.append(asyncio.create_task(one(session, body)))
        await asyncio.gather(*tasks)
    return {"posted": sum(outcomes), "rate_limited": outcomes.count(False),
            "started_at": started, "stopped_at": started + len(tasks) * beat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["sequential", "gather", "bare", "other"])
    parser.add_argument("url")
    parser.add_argument("input", type=Path)
    parser.add_argument("mapping", type=Path)
    parser.add_argument("--rate", default="25/5s")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    bodies = build_bodies(args.input, args.mapping)
    url = args.url.rstrip("/") + "/v2/ProspectActivity.svc/Create"
    cpu, wall = time.process_time(), time.monotonic()
    if args.kind == "sequential":
        outcome = asyncio.run(sequential(url, bodies))
    elif args.kind == "gather":
        outcome = asyncio.run(gather(url, bodies, args.rate))
    elif args.kind == "bare":
        outcome = asyncio.run(bare(url, bodies, args.concurrency))
    else:
        outcome = asyncio.run(other(url, bodies, args.rate, args.seconds))
    print(json.dumps({**outcome, "cpu_s": time.process_time() - cpu,
                      "wall_s": time.monotonic() - wall}), flush=True)


if __name__ == "__main__":
    main()
