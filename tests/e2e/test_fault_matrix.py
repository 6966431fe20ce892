"""The fault matrix: every fault the sandbox can inject, SIGKILL with rows in flight, resume,
in every dialect the sandbox speaks (where fields sit, entity-encoded notes, ``CreatedOn``
posted or stamped on arrival, ``Offset`` in rows or in pages from 0 or 1, typed values shown
in another form).

Nothing here is left to chance or to the clock: every configured fault kind is owed to one of
the first calls (the sandbox's schedule), so each strikes in the first run; each run is killed
by the sandbox itself the moment its ledger reaches a count planned from the seed, and the
sandbox goes down with it: the call that created that activity is never answered, so every
kill leaves a created row unknown to the client, and every other call in flight is dropped
without effect (its fate given back), so the ledger holds exactly the planned count and the
kills replay; and each call's fate comes from its own seeded stream.

What a run does after a kill cannot be made to replay with several workers, by any sandbox:
which rows the client had recorded when it was killed is a cut through its workers' progress,
set by the clock to the millisecond. Rows left unknown are looked up first in the next run (a
look-up more or less, and later identical look-ups meet other fates) and, in bulk mode, go
alone instead of in a batch (other bulk calls, other fates); in ``both`` mode, which rows go
by single call and which in bulk is a race between the workers even without a kill. What does
replay with concurrent workers is checked by ``test_fault_matrix_a_concurrent_pair_replays``:
the kills, and in single mode the faults on creates kind by kind (each row's creates meet its
own fates in order until one creates, whichever run sends them). With one worker, a seed
replays everything (``test_a_seed_replays_the_same_faults_and_ids``).

The input is built to be hard on reconciliation: two leads with many activities each (so
look-ups page), identical rows for the same lead (which must be counted, not merged), rows
without a date-time (matched by when they were sent), notes with non-ASCII characters and
``&``, and half the rows of a typed activity type (a Number and a Dropdown field, sent in
another case). After the kills and a final run, the sandbox's ledger must hold every row
exactly once, no row may be left ``unknown``, and the results file's Ids must be the
ledger's.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulkpost.core.allowance import parse_rate
from bulkpost.sandbox.dialect import DIALECTS
from bulkpost.sandbox.faults import LOOKUP_FAULTS
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from bulkpost.sandbox.paths import CREATE
from bulkpost.storage.history.database import History
from tests.conftest import (
    SandboxServer,
    read_results,
    read_results_log,
    run_cli,
    run_killed,
)

pytestmark = pytest.mark.e2e

FAULTS = {"500-before": 0.03, "500-after": 0.03, "html": 0.02, "reset-before": 0.02,
          "reset-after": 0.02, "hang-after": 0.02, "429-other": 0.02, "ratelimit-200": 0.02,
          "mx-after": 0.02}
RATE = "50/0.2s"
BULK_RATE = "5/0.2s"
KILLS = 4
KILL_STEP = (25, 50)  # each run is killed this many activities after the ledger it found
MAPPING = """
[activity]
event_column = "event"
lead_id_column = "lead"
note_column = "note"
datetime_column = "when"
empty_datetime = "now"  # every 5th row has none: sent so, stamped on arrival
key_column = "key"

[fields]
mx_Custom_1 = "order"
mx_Custom_2 = "amount"
mx_Custom_3 = "channel"
"""
NOTES = ["note", "Café & co", "naïve 👇", "a\xa0b", "plain", "x & y", "über"]


def _input(path: Path, rows: int, seed: int) -> list[tuple[str, ...]]:
    """Rows over 2 leads and 2 events, one of them typed (75 a look-up: 3 pages); every 9th
    repeats the row before it; every 5th has no date-time."""
    rng = random.Random(seed)
    leads = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2)]
    contents: list[tuple[str, ...]] = []
    for n in range(1, rows + 1):
        if n % 9 == 0:
            contents.append(contents[-1])  # identical content, same lead
            continue
        when = "" if n % 5 == 0 else f"2024-0{1 + n % 9}-1{n % 10} 0{n % 10}:{n % 60:02d}:00"
        contents.append((leads[n % 2], ("201", "301")[(n // 2) % 2], NOTES[n % 7], when,
                         f"O-{n % 13}", f"{n % 13}.50", rng.choice(["web", "phone"])))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "lead", "event", "note", "when", "order", "amount", "channel"])
        for n, content in enumerate(contents, start=1):
            writer.writerow([f"K{n:04d}", *content])
    return contents


def _ledger_content(entry: dict[str, Any]) -> tuple[str, ...]:
    fields = entry["Fields"]
    return (entry["RelatedProspectId"], str(entry["ActivityEvent"]), entry["ActivityNote"],
            entry["ActivityDateTime"] or "", fields["mx_Custom_1"], fields["mx_Custom_2"],
            fields["mx_Custom_3"])


def _input_content(row: tuple[str, ...]) -> tuple[str, ...]:
    lead, event, note, when, order, amount, channel = row
    if event == "301":  # a Dropdown there: the preflight sends the option's spelling
        channel = channel.title()
    return (lead, event, note, when, order, amount, channel)  # `when` is already UTC, ISO


@dataclass(frozen=True)
class Kill:
    """A run killed by the sandbox: the ledger count planned and the one it was killed at,
    the entry whose storing fired it (its call never answered), the faults struck by the
    run's calls, and the calls dropped by the sandbox so far (in flight when it went down)."""

    planned: int
    ledger: int
    entry: dict[str, Any]
    faults: dict[str, int]
    dropped: int


def _run_killed_at(server: SandboxServer, args: tuple[Any, ...], planned: int) -> Kill:
    """Start a run; the moment its ledger holds ``planned`` entries, the sandbox goes down
    and SIGKILLs it; it comes up again once the run is dead."""
    entry, ledger = run_killed(server, args,
                               lambda kill: server.sandbox.go_down_at(planned, kill),
                               f"the ledger reached {planned}")
    stats = server.stats()
    server.call(server.sandbox.come_up())
    # Down with the run: nothing it had in flight took effect after the kill.
    assert len(server.ledger()) == planned
    return Kill(planned, ledger, entry, stats["faults"], stats["dropped"])


MODES = ["single", "bulk", "both", "both+history"]
# Every dialect in two modes and every mode in two dialects, within the suite's time; the
# whole product on demand (BULKPOST_MATRIX_FULL=1), with more seeds
# (BULKPOST_MATRIX_SEEDS="1 2 3"), and each run's figures appended as JSON lines to
# BULKPOST_MATRIX_FIGURES.
PAIRS = [("single", "classic"), ("both+history", "classic"), ("bulk", "captured"),
         ("both", "captured"), ("single", "arrival"), ("both", "arrival"),
         ("bulk", "pages"), ("both+history", "pages")]
if os.environ.get("BULKPOST_MATRIX_FULL"):
    PAIRS = [(mode, dialect) for mode in MODES for dialect in DIALECTS]
SEEDS = [7, *map(int, os.environ.get("BULKPOST_MATRIX_SEEDS", "").split())]


def test_the_pairs_cover_every_mode_and_every_dialect() -> None:
    assert {mode for mode, _ in PAIRS} == set(MODES)
    assert {dialect for _, dialect in PAIRS} == set(DIALECTS)


# Run twice at once by test_fault_matrix_a_concurrent_pair_replays, so not by the matrix test.
REPLAYED = ("single", "classic")


@pytest.mark.parametrize(("mode", "dialect"), [pair for pair in PAIRS if pair != REPLAYED])
@pytest.mark.parametrize("seed", SEEDS)
def test_fault_matrix_every_row_exactly_once(tmp_path: Path, make_sandbox: Any,
                                             seed: int, mode: str, dialect: str) -> None:
    _matrix_load(tmp_path, make_sandbox, seed, mode, dialect)


@pytest.mark.parametrize("seed", SEEDS)
def test_fault_matrix_a_concurrent_pair_replays(tmp_path: Path, make_sandbox: Any,
                                                seed: int) -> None:
    """One pair loaded twice at once with one seed (64 workers each at this rate), every run
    of both checked like any pair's: the same kills, and the same faults on creates, kind by
    kind. Each row's creates meet its own fates in order until one creates, whether a call
    was answered or dropped by a kill; the kinds owed to creates go to the first rows, which
    go one at a time (--verify-first). The faults on look-ups depend on which rows each kill
    left unknown: see the module's docstring."""
    with ThreadPoolExecutor(2) as pool:
        first, again = pool.map(
            lambda name: _matrix_load(tmp_path / name, make_sandbox, seed, *REPLAYED),
            ("a", "b"))
    assert first["killed_at"] == again["killed_at"]
    assert first["faults_on"]["single"] == again["faults_on"]["single"], (
        first["faults_on"]["single"], again["faults_on"]["single"])
    # Not a comparison of zeros: the kinds that only creates can take struck them.
    assert all(first["faults_on"]["single"][kind] > 0 for kind in FAULTS
               if kind not in LOOKUP_FAULTS)


def _matrix_load(tmp_path: Path, make_sandbox: Any, seed: int, mode: str,
                 dialect: str) -> dict[str, Any]:
    """The load of one pair: killed KILLS times, then finished; every row must be posted
    exactly once. Returns its figures."""
    tmp_path.mkdir(exist_ok=True)
    # "+history": the same with --history, whose claims ride on the results file's commits.
    mode, _, with_history = mode.partition("+")
    rng = random.Random(seed)
    data = tmp_path / "in.csv"
    contents = _input(data, 300, seed)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    results = tmp_path / "results.csv"
    # Bulk calls are fewer (5 rows a call here): faults are drawn a little more often, so
    # that every kind strikes in every run.
    faults = FAULTS if mode == "single" else {
        **{kind: 1.5 * p for kind, p in FAULTS.items()}, "bulk-partial": 0.05}
    server = make_sandbox(rate=RATE, bulk_rate=parse_rate(BULK_RATE), faults=faults,
                          seed=seed, slow_seconds=1.5, latency=(0.0, 0.03),
                          dialect=DIALECTS[dialect])
    args = ("run", data, "--mapping", mapping, "--results", results, "--host", server.url,
            "--rate", RATE, "--timeout", "1", "--backoff", "0.05", "--max-attempts", "8",
            "--log-format", "json", "--mode", mode, "--bulk-rate", BULK_RATE,
            "--batch-size", "5",
            *(("--history", str(tmp_path / "history.db")) if with_history else ()))
    kills: list[Kill] = []
    for _ in range(KILLS):
        kill = _run_killed_at(server, args, len(server.ledger()) + rng.randint(*KILL_STEP))
        # Killed at the planned count, with the call that created the last entry still
        # unanswered: its row is in flight, recorded nowhere in the results file.
        assert kill.ledger == kill.planned
        assert kill.entry["Id"] not in results.read_text(encoding="utf-8")
        kills.append(kill)
    # The schedule: every configured kind was owed to one of the first calls, and struck in
    # the first run.
    assert all(kills[0].faults[kind] > 0 for kind in faults), kills[0].faults
    unknown_before = Counter(read_results_log(results).values())["unknown"]
    final = run_cli(*args)
    summary = final.summary
    ledger = server.ledger()
    rows = read_results(results)
    # Never twice: no content is in the ledger more often than in the input, and every
    # posted row holds the Id of an activity with its own content, held by no other row.
    created, wanted = Counter(map(_ledger_content, ledger)), Counter(map(_input_content,
                                                                          contents))
    assert not created - wanted, f"created twice: {created - wanted}"
    by_id = {e["Id"]: _ledger_content(e) for e in ledger}
    posted = {n: r for n, r in rows.items() if r["status"] == "posted"}
    assert len({r["activity_id"] for r in posted.values()}) == len(posted)
    for n, row in posted.items():
        assert by_id[row["activity_id"]] == _input_content(contents[n - 1])
    assert len(rows) == 300 and {r["status"] for r in rows.values()} <= {"posted", "unknown"}
    left = [r["error"] for r in rows.values() if r["status"] == "unknown"]
    assert not left, f"{len(left)} rows left unknown after the final run: {left[0]}"
    assert final.code == 0, final.stderr[-3000:]
    # Every row exactly once: identical rows count, so compare content multisets.
    assert created == wanted
    ids = [r["activity_id"] for r in rows.values()]
    assert len(set(ids)) == 300 and set(ids) == {e["Id"] for e in ledger}

    stats = server.stats()
    figures = {"seed": seed, "mode": mode, "dialect": dialect, "kills": len(kills),
               "killed_at": [kill.ledger for kill in kills],
               "faults_at_kills": [kill.faults for kill in kills],
               "dropped_at_kills": [kill.dropped for kill in kills],
               "faults": stats["faults"], "faults_on": stats["faults_on"],
               "bulk_calls": stats["bulk_calls"],
               "calls": stats["calls"], "lookups": stats["lookups"],
               "unknown_before_final_run": unknown_before,
               "final_run": {k: summary[k] for k in (
                   "reconciled", "found_posted", "lookups", "calibration_calls",
                   "verify_calls", "retries", "rate_limited", "posted", "skipped")}}
    if with_history:  # every key posted there, with the activity the results file holds
        store = History(tmp_path / "history.db").open()
        assert store.stats()["posted"] == 300 and store.stats()["claims"] == 0
        assert all(store.lookup(r["key"])["activity_id"] == r["activity_id"]  # type: ignore[index]
                   for r in rows.values())
        store.close()
    print("fault matrix:", json.dumps(figures))
    if os.environ.get("BULKPOST_MATRIX_FIGURES"):
        with open(os.environ["BULKPOST_MATRIX_FIGURES"], "a", encoding="utf-8") as out:
            out.write(json.dumps(figures) + "\n")
    assert all(stats["faults"][kind] > 0 for kind in faults)
    if mode != "single":
        assert stats["bulk_calls"] > 0 and any(entry["Bulk"] for entry in ledger)
    if mode == "both":
        assert not all(entry["Bulk"] for entry in ledger)
    return figures


def _killed_load(tmp_path: Path, make_sandbox: Any, seed: int) -> dict[str, Any]:
    """A single-mode load of 60 rows with one worker (so the calls come in one order),
    killed twice at seeded ledger counts, then finished: what the sandbox saw."""
    rng = random.Random(seed)
    tmp_path.mkdir()
    data = tmp_path / "in.csv"
    _input(data, 60, seed)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    server = make_sandbox(rate=RATE, faults=FAULTS, seed=seed, slow_seconds=1.5,
                          latency=(0.0, 0.03), dialect=DIALECTS["classic"])
    args = ("run", data, "--mapping", mapping, "--results", tmp_path / "results.csv",
            "--host", server.url, "--rate", RATE, "--timeout", "1", "--backoff", "0.05",
            "--max-attempts", "8", "--log-format", "json", "--workers", "1")
    kills = [_run_killed_at(server, args, len(server.ledger()) + rng.randint(10, 20))
             for _ in range(2)]
    final = run_cli(*args)
    assert final.code == 0, final.stderr[-3000:]
    return {"faults_at_kills": [kill.faults for kill in kills],
            "killed_by": [kill.entry["Id"] for kill in kills],
            "faults": server.stats()["faults"],
            "ledger": [(e["Id"], _ledger_content(e)) for e in server.ledger()]}


def test_a_seed_replays_the_same_faults_and_ids(tmp_path: Path, make_sandbox: Any) -> None:
    """Each call's fate comes from the seed and the call itself: with the calls in one order,
    a seed gives the same faults, kills and activity Ids twice (that another seed gives
    others is test_sandbox's)."""
    with ThreadPoolExecutor(2) as pool:  # at once: neither load's calls touch the other's
        first, again = pool.map(lambda name: _killed_load(tmp_path / name, make_sandbox, 7),
                                ("a", "b"))
    assert all(first["faults"][kind] > 0 for kind in FAULTS), first["faults"]
    assert len(first["ledger"]) == 60
    assert first == again


# -- the sandbox's part: going down with the client, and fates kept for calls without effect
def _creates(url: str, bodies: list[dict[str, Any]]) -> list[int]:
    """Creates sent all at once; the status of each (0: the connection was reset)."""
    async def one(session: aiohttp.ClientSession, body: dict[str, Any]) -> int:
        try:
            async with session.post(f"{url}{CREATE}", json=body, headers={
                    "x-LSQ-AccessKey": DEFAULT_ACCESS_KEY,
                    "x-LSQ-SecretKey": DEFAULT_SECRET_KEY}) as answer:
                await answer.read()
                return answer.status
        except aiohttp.ClientError:
            return 0

    async def all_at_once() -> list[int]:
        async with aiohttp.ClientSession() as session:
            return list(await asyncio.gather(*(one(session, body) for body in bodies)))

    return asyncio.run(all_at_once())


def _ids(server: SandboxServer) -> dict[str, str]:
    return {entry["ActivityNote"]: entry["Id"] for entry in server.ledger()}


BODIES = [{"RelatedProspectId": "9e3779b9-7f4a-4c15-b39c-c0605cedc834", "ActivityEvent": 201,
           "ActivityNote": f"n{n}", "ActivityDateTime": "2024-01-01 10:00:00",
           "Fields": [{"SchemaName": "mx_Custom_1", "Value": "x"}]} for n in range(8)]


def test_the_sandbox_goes_down_with_the_client_and_calls_without_effect_keep_their_fates(
        make_sandbox: Any) -> None:
    """Down at a ledger count with calls in flight: the ledger keeps that count, the call
    that stored the last entry is not answered, the others are reset without effect and
    count no fault; sent again once it is up, each meets the fate it would have met."""
    options: dict[str, Any] = {"seed": 4, "latency": (0.05, 0.05), "faults": {"500-after": 1.0}}
    alone = make_sandbox(**options)
    for body in BODIES:
        assert _creates(alone.url, [body]) == [500]  # created, then the fault
    server = make_sandbox(**options)
    fired: list[dict[str, Any]] = []

    async def down_at_one() -> None:
        server.sandbox.go_down_at(1, fired.append)

    server.call(down_at_one())
    assert _creates(server.url, BODIES) == [0] * 8  # all in flight: one stored, none answered
    [entry] = server.ledger()
    assert fired == [entry]
    assert _creates(server.url, BODIES[:1]) == [0]  # down: it comes to nothing
    stats = server.stats()
    assert stats["dropped"] == 8 and stats["faults"]["500-after"] == 1  # the one that stored
    server.call(server.sandbox.come_up(settle=0))
    rest = [body for body in BODIES if body["ActivityNote"] != entry["ActivityNote"]]
    assert _creates(server.url, rest) == [500] * 7
    assert _ids(server) == _ids(alone)  # the same Ids: each call met the fate it had
    stats = server.stats()
    assert stats["faults"]["500-after"] == 8 and stats["faults_on"]["single"]["500-after"] == 8
    assert len(server.ledger()) == 8


def test_a_call_refused_by_the_window_keeps_its_fate(make_sandbox: Any) -> None:
    """The window's 429 is the clock's, not the call's fate: the call sent again meets the
    fate it would have met."""
    alone = make_sandbox(seed=5)
    assert _creates(alone.url, BODIES[:1]) + _creates(alone.url, BODIES[1:2]) == [200, 200]
    server = make_sandbox(rate="1/0.5s", seed=5)
    assert _creates(server.url, BODIES[:1]) + _creates(server.url, BODIES[1:2]) == [200, 429]
    time.sleep(0.55)
    assert _creates(server.url, BODIES[1:2]) == [200]
    assert _ids(server) == _ids(alone)
