"""``make bench``: the benchmarks, written to docs/BENCHMARKS.md. Not run by CI.

Everything runs as separate processes on 127.0.0.1: the real CLI, the competitors of
``benchmarks/clients.py``, and one sandbox process per client (a strict sliding window
per account). Two phases:

1. rate-bound, all at once (each client has its own sandbox, and they use a few percent of
   the CPU): allowance use at 25/5s and 10/5s for bulkpost, the sleeping loop and the naive
   gather; the recovery scenario (a second client spends half the allowance for 20 s);
   bulkpost's three modes (single, bulk, both) at two plan settings; and updates in place,
   single and bulk, beside creates;
2. CPU-bound, one at a time: overhead against a bare aiohttp loop with the limit lifted,
   peak memory of real runs at 20k and 200k rows, dry runs over a million rows, and
   planning a resume from a results file of a million lines.
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import csv
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bulkpost.storage.history.accounts import DATA_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent
BULKPOST = [sys.executable, "-m", "bulkpost"]
CLIENTS = [sys.executable, "-m", "benchmarks.clients"]
KEYS = {"LSQ_ACCESS_KEY": "demo-access-key", "LSQ_SECRET_KEY": "demo-secret-key"}
MAPPING = ROOT / "samples" / "mapping.toml"
HEADER = ["source_id", "lead_id", "occurred", "note", "order_no", "amount", "quantity",
          "channel", "reference"]
# Answers mostly 80-600 ms, 3% of them up to 3 s; requests take 10-50 ms to arrive.
LATENCY = ("--latency", "0.08:0.6", "--latency-tail", "0.03:3", "--arrival-latency",
           "0.01:0.05")
UNLIMITED = "1000000/1s"
WORKERS = 64  # bulkpost's pool at an unlimited rate (RunOptions.worker_count)
OTHER_NOTE = "posted by the other client"


def make_csv(path: Path, rows: int, note: str = "", first: int = 1,
             lead_count: int = 1000) -> Path:
    """A CSV shaped like samples/activities.csv, ``rows`` long (keys from ``first``) over
    ``lead_count`` leads in turn, deterministic."""
    rng = random.Random(rows)
    leads = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(lead_count)]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for n in range(first, first + rows):
            writer.writerow([f"ACT-{n:07d}", leads[n % lead_count],
                             f"{n % 28 + 1:02d}/03/2024 10:{n % 60:02d}",
                             note or ("Called, no answer" if n % 3 else "Visit\nscheduled"),
                             f"{n % 99999:05d}", f"{n % 5000}.{n % 100:02d}", str(n % 20),
                             "web", str(10**19 + n)])
    return path


class SandboxProcess:
    """``bulkpost sandbox`` in its own process, with a ledger file."""

    def __init__(self, workdir: Path, *options: str) -> None:
        self.ledger = workdir / f"ledger-{time.monotonic_ns()}.jsonl"
        self.process = subprocess.Popen(
            [*BULKPOST, "sandbox", "--port", "0", "--ledger", str(self.ledger), *options],
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        self.url = json.loads(self.process.stdout.readline())["sandbox"]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_sandbox/stats") as answer:
            data: dict[str, Any] = json.load(answer)
            return data

    def entries(self) -> list[dict[str, Any]]:
        """The created activities, by arrival."""
        entries = (json.loads(line) for line in self.ledger.read_text().splitlines())
        return sorted((e for e in entries if "UpdateOf" not in e), key=lambda e: e["ReceivedAt"])

    def updates(self) -> list[dict[str, Any]]:
        """The updates, by arrival (each names its activity in ``UpdateOf``)."""
        entries = (json.loads(line) for line in self.ledger.read_text().splitlines())
        return sorted((e for e in entries if "UpdateOf" in e), key=lambda e: e["ReceivedAt"])

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Measured:
    """A finished child process: its stdout, wall seconds, CPU seconds, peak RSS (MB)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        started = time.monotonic()
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True, env={**os.environ, **KEYS, **(env or {})},
                                   cwd=ROOT)
        assert process.stdout is not None
        self.stdout = process.stdout.read()
        # wait4 gives this child's own resource use, not the largest of all children so far.
        _pid, status, usage = os.wait4(process.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self.wall = time.monotonic() - started
        self.cpu = usage.ru_utime + usage.ru_stime
        self.peak_mb = usage.ru_maxrss / 1024
        if self.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(args[:4])} exited {self.returncode}")

    def last_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout.strip().splitlines()[-1])
        return data


def run_cli(*args: str) -> Measured:
    return Measured([*BULKPOST, *args, "--log-format", "json"])


def run_bulkpost(data: Path, url: str, rate: str | None, results: Path,
                 *options: str) -> Measured:
    """``bulkpost run``; ``rate`` None: no ``--rate`` (the limit is learnt)."""
    given = () if rate is None else ("--rate", rate)
    return run_cli("run", str(data), "--mapping", str(MAPPING), "--results", str(results),
                   "--host", url, *given, *options)


def run_client(kind: str, url: str, data: Path, *options: str) -> Measured:
    return Measured([*CLIENTS, kind, url, str(data), str(MAPPING), *options])


def most_in_window(times: list[float], period: float) -> int:
    """The most arrivals in any half-open window of ``period`` seconds."""
    most = 0
    for i, start in enumerate(times):
        most = max(most, bisect.bisect_left(times, start + period) - i)
    return most


def _rate(rate: str) -> tuple[int, float]:
    calls, period = rate.rstrip("s").split("/")
    return int(calls), float(period)


# -- 1. allowance ------------------------------------------------------------------------
PLANS = {"25/5s": "1/5s", "10/5s": "5/5s"}  # single-call limit: the plan's bulk limit


def bench_allowance(workdir: Path, data: Path, client: str, rate: str, rows: int,
                    mode: str = "single") -> dict[str, Any]:
    """One client's run against a sandbox with the plan's two limits (bulkpost in ``mode``)."""
    calls, period = _rate(rate)
    bulk_rate = PLANS[rate]
    sandbox = SandboxProcess(workdir, "--rate", rate, "--bulk-rate", bulk_rate, *LATENCY,
                             "--seed", "1")
    try:
        if client == "bulkpost":
            run = run_bulkpost(data, sandbox.url, rate,
                               workdir / f"allowance-{mode}-{rate.replace('/', '-')}.csv",
                               "--mode", mode, "--bulk-rate", bulk_rate)
        else:
            run = run_client(client, sandbox.url, data, "--rate", rate)
        arrivals = [e["ReceivedAt"] for e in sandbox.entries()]
        stats = sandbox.stats()
    finally:
        sandbox.close()
    # A bulk call's activities share its arrival: count the last call's out of the span.
    last = sum(1 for t in arrivals if t == arrivals[-1])
    server_rate = (len(arrivals) - last) / (arrivals[-1] - arrivals[0])
    return {"client": client, "mode": mode, "rate": rate, "bulk_rate": bulk_rate,
            "rows": rows, "posted": run.last_json()["posted"], "created": len(arrivals),
            "server_calls_per_s": server_rate, "fraction": server_rate / (calls / period),
            "end_to_end_rows_per_s": rows / run.wall, "rate_limited": stats["rate_limited"],
            "most_created_in_window": most_in_window(arrivals, period),
            "most_arrivals_in_window": stats["max_in_window"],
            "bulk_calls": stats["bulk_calls"]}


# -- 8. updates ---------------------------------------------------------------------------
def bench_updates(workdir: Path, rate: str, rows: int) -> list[dict[str, Any]]:
    """Creates and updates side by side at one plan's limits, against one sandbox with the
    latency of section 1, sharing one history: ``rows`` created (single calls), then every
    row changed and updated in place (single calls), changed again and updated in bulk, and
    ``rows`` new ones created in bulk."""
    bulk_rate = PLANS[rate]
    tag = rate.replace("/", "-")
    history = workdir / f"updates-{tag}.db"
    sandbox = SandboxProcess(workdir, "--rate", rate, "--bulk-rate", bulk_rate, *LATENCY,
                             "--seed", "1")
    steps = [("create", "single", make_csv(workdir / f"u1-{tag}.csv", rows)),
             ("update", "single", make_csv(workdir / f"u2-{tag}.csv", rows, "Called back")),
             ("update", "bulk", make_csv(workdir / f"u3-{tag}.csv", rows, "Closed")),
             ("create", "bulk", make_csv(workdir / f"u4-{tag}.csv", rows, first=rows + 1))]
    measured = []
    try:
        for kind, mode, data in steps:
            time.sleep(max(_rate(rate)[1], _rate(bulk_rate)[1]))  # each run, fresh windows
            created, updated = len(sandbox.entries()), len(sandbox.updates())
            limited = sandbox.stats()["rate_limited"]
            run = run_bulkpost(data, sandbox.url, rate, workdir / f"u-{kind}-{mode}-{tag}.csv",
                               "--mode", mode, "--bulk-rate", bulk_rate, "--history",
                               str(history), "--on-changed", "update")
            times = ([e["ReceivedAt"] for e in sandbox.entries()[created:]] if kind == "create"
                     else [u["ReceivedAt"] for u in sandbox.updates()[updated:]])
            summary = run.last_json()
            last = sum(1 for t in times if t == times[-1])  # a bulk call's rows arrive together
            measured.append({
                "rate": rate, "bulk_rate": bulk_rate, "kind": kind, "mode": mode, "rows": rows,
                "done": summary["posted"] if kind == "create" else summary["updated"],
                "server_per_s": (len(times) - last) / (times[-1] - times[0]),
                "end_to_end_rows_per_s": rows / run.wall,
                "rate_limited": sandbox.stats()["rate_limited"] - limited,
                "exit_code": summary["exit_code"]})
    finally:
        sandbox.close()
    return measured


# -- 9. the plan's limit, learnt -----------------------------------------------------------
# About two minutes of calls each; 72/5s: a plan above the documented maximum (a live
# answer named it), 1,200 rows, about 90 s at its limit.
LEARNING_ROWS = {"10/5s": 240, "2/5s": 60, "72/5s": 1200}
LIES = "25/5s"  # what the docs print in every 429 text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bench_learning(workdir: Path, rate: str, given: str | None,
                   said: str | None = None) -> dict[str, Any]:
    """bulkpost against an account allowing ``rate``: with ``--rate given`` (None: learnt,
    then a second run of new rows that starts from what the first learnt). ``said``: the
    limit the 429 texts name instead of the real one. Each run meets a sandbox of its own on
    the same host and port (the account's window empty, as the next night), and the
    allowance used is every call the window let through, look-ups included, first to last."""
    calls, period = _rate(rate)
    rows = LEARNING_ROWS[rate]
    tag = f"{rate}-{given}-{said}".replace("/", "-")
    port, history = _free_port(), workdir / f"learn-{tag}.db"
    measured: dict[str, Any] = {"rate": rate, "given": given, "said": said, "rows": rows}
    for run_index in (1, 2) if given is None else (1,):
        data = make_csv(workdir / f"learn-{tag}-{run_index}.csv", rows,
                        first=1 + (run_index - 1) * rows)
        sandbox = SandboxProcess(workdir, "--rate", rate, *LATENCY, "--seed", "3",
                                 "--port", str(port), *(("--rate-text", said) if said else ()))
        try:
            run = run_bulkpost(data, sandbox.url, given, workdir / f"learn-{tag}-{run_index}.r",
                               "--history", str(history))
            stats = sandbox.stats()
        finally:
            sandbox.close()
        summary = run.last_json()
        span = stats["last_accepted"] - stats["first_accepted"]
        created = stats["second_created"], stats["last_created"]
        measured[f"run{run_index}"] = {
            "posted": summary["posted"], "rate_limited": stats["rate_limited"],
            "fraction": (stats["accepted"] - 1) / span / (calls / period),
            "from_second": (stats["created"] - 2) / (created[1] - created[0]) / (calls / period),
            "most_in_window": stats["max_in_window"], "limit": summary.get("rate", {}),
            "wall_s": run.wall}
    return measured


# -- 2. recovery -------------------------------------------------------------------------
def bench_recovery(workdir: Path, data: Path, rows: int,
                   other_seconds: float) -> dict[str, Any]:
    rate = "25/5s"
    calls, period = _rate(rate)
    other_data = make_csv(workdir / "other.csv", 1000, note=OTHER_NOTE)
    sandbox = SandboxProcess(workdir, "--rate", rate, *LATENCY, "--seed", "2")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ours = pool.submit(run_bulkpost, data, sandbox.url, None,
                               workdir / "recovery-results.csv")
            while sandbox.stats()["created"] < rows // 2:
                time.sleep(0.05)
            other = run_client("other", sandbox.url, other_data, "--rate",
                               f"{calls}/{2 * period:g}s", "--seconds", str(other_seconds))
            run = ours.result()
        entries = sandbox.entries()
    finally:
        sandbox.close()
    summary, theirs = run.last_json(), other.last_json()
    mine = [e for e in entries if e["ActivityNote"] != OTHER_NOTE]
    foreign = [e["ReceivedAt"] for e in entries if e["ActivityNote"] == OTHER_NOTE]
    times = [e["ReceivedAt"] for e in mine]
    distinct = {e["Fields"]["mx_Custom_1"] for e in mine}
    began, stopped = theirs["started_at"], max([theirs["stopped_at"], *foreign])
    # Recovered: the first window, starting at or after the other client's last call, in
    # which bulkpost alone made at least 96% of the allowance.
    recovered = next((t for t in times if t >= stopped
                      and bisect.bisect_left(times, t + period) - bisect.bisect_left(times, t)
                      >= 0.96 * calls), None)
    during = [t for t in times if began <= t < stopped]
    after = [t for t in times if t >= stopped + period]
    left = calls / period - len(foreign) / max(stopped - began, 1e-9)
    return {
        "rows": rows, "posted": summary["posted"], "in_ledger": len(mine),
        "distinct_in_ledger": len(distinct), "rate_limited": summary["rate_limited"],
        "other_seconds": round(stopped - began, 1), "other_created": len(foreign),
        "other_rate_limited": theirs["rate_limited"],
        "during_fraction_of_left": len(during) / max(stopped - began, 1e-9) / left,
        "recovery_s": None if recovered is None else recovered - stopped,
        "after_fraction": ((len(after) - 1) / (after[-1] - after[0]) / (calls / period)
                           if len(after) > 1 else None),
    }


def make_parquet(path: Path, rows: int) -> Path:
    """The CSV's typed twin: a zoned timestamp, floats, ints, a dictionary column."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(rows)
    leads = np.array([str(uuid.UUID(int=rng.getrandbits(128), version=4))
                      for _ in range(1000)], dtype=object)
    n = np.arange(1, rows + 1)
    table = pa.table({
        "source_id": pa.array(np.char.add("ACT-", n.astype(str))),
        "lead_id": pa.array(leads[n % 1000]),
        "occurred": pa.array((np.datetime64("2024-03-01T10:00") + (n % 40000).astype(
            "timedelta64[m]")).astype("datetime64[s]"), pa.timestamp("s")).cast(
            pa.timestamp("s", tz="Asia/Kolkata")),
        "note": pa.array(np.where(n % 3 == 0, "Visit\nscheduled", "Called, no answer")),
        "order_no": pa.array(np.char.zfill((n % 99999).astype(str), 5)),
        "amount": pa.array((n % 500000) / 100.0),
        "quantity": pa.array(n % 20, pa.int64(), mask=(n % 7 == 0)),  # nulls every 7th
        "channel": pa.array(np.where(n % 2 == 0, "web", "phone")).dictionary_encode(),
        "reference": pa.array(n + 10**15, pa.int64()),
    })
    pq.write_table(table, path)
    return path


def bench_dry_run(workdir: Path, rows: int, kind: str = "csv") -> dict[str, Any]:
    if kind == "parquet":
        data = workdir / f"dry-{rows}.parquet"
        # Made in a child process: Linux keeps a process's peak RSS across fork and exec,
        # so a bench process holding the table would inflate the measured run's peak.
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from benchmarks.bench import make_parquet; "
                        "make_parquet(Path(sys.argv[1]), int(sys.argv[2]))", str(data),
                        str(rows)], check=True, cwd=ROOT)
        mapping = ROOT / "samples" / "mapping-parquet.toml"
    else:
        data, mapping = make_csv(workdir / f"dry-{rows}.csv", rows), MAPPING
    run = run_cli("run", str(data), "--mapping", str(mapping), "--results",
                  str(workdir / f"dry-{rows}-{kind}-results.csv"), "--dry-run",
                  "--no-preflight")
    return {"kind": kind, "rows": rows, "wall_s": run.wall, "rows_per_s": rows / run.wall,
            "peak_rss_mb": run.peak_mb, "to_send": run.last_json()["to_send"]}


# -- 3 and 4. overhead and memory ----------------------------------------------------------
def bench_unlimited(workdir: Path, client: str, rows: int) -> dict[str, Any]:
    """One run with the limit lifted and the sandbox answering at once."""
    data = make_csv(workdir / f"unlimited-{rows}.csv", rows)
    sandbox = SandboxProcess(workdir, "--rate", UNLIMITED, "--latency", "0")
    try:
        if client.startswith("bulkpost"):
            results = workdir / f"unlimited-{rows}-{time.monotonic_ns()}.out.csv"
            # By default a run keeps the account's history (a new one: each sandbox is
            # another host); --create-again keeps none.
            extra = ("--create-again",) if client == "bulkpost-no-history" else ()
            run = run_bulkpost(data, sandbox.url, UNLIMITED, results, *extra)
            posted, cpu = run.last_json()["posted"], run.cpu  # the whole process
        else:
            run = run_client("bare", sandbox.url, data, "--concurrency", str(WORKERS))
            posted, cpu = run.last_json()["posted"], run.last_json()["cpu_s"]  # posting only
        stats = sandbox.stats()
    finally:
        sandbox.close()
    span = stats["last_created"] - stats["first_created"]
    return {"client": client, "rows": rows, "posted": posted, "created": stats["created"],
            "rows_per_s": (stats["created"] - 1) / span, "cpu_s": cpu,
            "peak_rss_mb": run.peak_mb, "wall_s": run.wall}


def alternating(workdir: Path, clients: tuple[str, str], rows: int,
                pairs: int) -> list[tuple[dict[str, Any], ...]]:
    """Lifted-limit runs of two clients taken in turn, so that each pair shares the
    machine's moment (its speed varies by tens of percent from minute to minute)."""
    done = []
    for _ in range(pairs):
        pair = tuple(bench_unlimited(workdir, client, rows) for client in clients)
        done.append(pair)
        print(json.dumps(pair), flush=True)
    return done


# -- 5. resume -----------------------------------------------------------------------------
RESUME_SCRIPT = """
import json, resource, sys, time
started = time.monotonic()
from bulkpost.storage.results import ResultsLog
from bulkpost.core.statuses import Status
imported = time.monotonic()
log = ResultsLog(sys.argv[1]).open()
loaded = time.monotonic()
posted = sum(1 for row in range(1, int(sys.argv[2]) + 1)
             if (p := log.recorded(row)) is not None and p.status is Status.POSTED)
planned = time.monotonic()
log.close()
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported,
                  "lookups_s": planned - loaded, "posted": posted}))
"""


def make_results(path: Path, rows: int) -> Path:
    """A compacted results file of ``rows`` posted rows, keyed like make_csv's rows."""
    rng = random.Random(rows)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("row,key,status,activity_id,http_status,error_type,error,attempts,"
                     "updated_at,content_hash\n")
        for n in range(1, rows + 1):
            handle.write(f"{n},ACT-{n:07d},posted,{uuid.UUID(int=rng.getrandbits(128))},"
                         f"200,,,1,2026-11-26T10:00:00Z,{rng.getrandbits(64):016x}\n")
    return path


def bench_resume(workdir: Path, rows: int) -> dict[str, Any]:
    results = make_results(workdir / f"resume-{rows}.csv", rows)
    run = Measured([sys.executable, "-c", RESUME_SCRIPT, str(results), str(rows)])
    timings = run.last_json()
    return {"rows": rows, "file_mb": results.stat().st_size / 1e6, **timings,
            "plan_s": timings["load_s"] + timings["lookups_s"], "wall_s": run.wall,
            "peak_rss_mb": run.peak_mb}


# -- 7. history ----------------------------------------------------------------------------
HISTORY_BUILD = """
import json, os, random, sys, time, uuid
from bulkpost.storage.history.database import History
from bulkpost.storage.history.schema import POSTED as _POSTED
path, keys, nights = sys.argv[1], int(sys.argv[2]), 365
rng = random.Random(keys)
history = History(path, "bench").open()
db = history.db
# Set-up only: a bulk build, with more cache and without fsyncs (a run commits with both).
db.execute("PRAGMA synchronous = OFF")
db.execute("PRAGMA cache_size = -1048576")
started = time.monotonic()
per_night = keys // nights
for night in range(nights):  # a year of nights, each its share of new keys, as its run
    db.execute("INSERT INTO runs (run_id, started) VALUES (?, ?)", (f"night-{night}", night))
    run = db.execute("SELECT last_insert_rowid()").fetchone()[0]
    first = night * per_night
    last = keys if night == nights - 1 else first + per_night
    db.execute("BEGIN")
    db.executemany(_POSTED, ((f"ORD-{n:010d}", str(uuid.UUID(int=rng.getrandbits(128))),
                              201 + n % 5, rng.getrandbits(64) - (1 << 63), run,
                              1_760_000_000 + night * 86400, rng.getrandbits(64) - (1 << 63))
                             for n in range(first, last)))
    db.execute("COMMIT")
built = time.monotonic() - started
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
history.close()
wal = path + "-wal"
size = os.path.getsize(path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)
print(json.dumps({"keys": keys, "build_s": built, "bytes": size}))
"""
HISTORY_SCRIPT = """
import json, random, sys, time, uuid
from bulkpost.core.activity import Activity
from bulkpost.storage.history.database import History
path, keys = sys.argv[1], int(sys.argv[2])
rng = random.Random(keys + 1)
# Tonight: 200,000 rows in batches of 4,096 (the feeder's way): half of them keys of
# earlier nights (anywhere in the year), half new.
history = History(path, "tonight-" + sys.argv[3]).open()
rows = []
for row in range(1, 200_001):
    n = rng.randrange(keys) if row % 2 else keys + row
    lead = str(uuid.UUID(int=rng.getrandbits(128)))
    body = (f'{{"RelatedProspectId":"{lead}","ActivityEvent":201,"ActivityNote":"Called, '
            f'no answer","ActivityDateTime":"2024-03-01 04:40:00","Fields":[{{"SchemaName":'
            f'"mx_Custom_1","Value":"{n:05d}"}},{{"SchemaName":"mx_Custom_2","Value":"17.50"}},'
            f'{{"SchemaName":"mx_Custom_3","Value":"3"}},{{"SchemaName":"mx_Custom_4","Value":'
            f'"web"}},{{"SchemaName":"mx_Custom_5","Value":"{10**19 + n}"}}]}}').encode()
    rows.append(Activity(row, f"ORD-{n:010d}", lead, body, f"{rng.getrandbits(64):016x}", 201))
started = time.monotonic()
found = 0
for start in range(0, len(rows), 4096):
    found += len(history.screen(rows[start:start + 4096]))
screened = time.monotonic() - started
# Group commits of 64 claims, as a run makes them before sending (an fsync each).
history.register("bench", "bench")
commits = []
for start in range(0, 64 * 200, 64):
    for item in rows[start:start + 64]:
        history.sending(item)
    began = time.perf_counter()
    history.commit(history.take())
    commits.append(time.perf_counter() - began)
commits.sort()
history.close()
print(json.dumps({"screened": len(rows), "found": found, "screen_s": screened,
                  "commit_ms_median": 1000 * commits[len(commits) // 2],
                  "commit_ms_p95": 1000 * commits[int(len(commits) * 0.95)]}))
"""


# -- 10. the account's history, kept by default ---------------------------------------------
ACCOUNT_SCRIPT = """
import json, os, resource, sys, time, uuid
from bulkpost.core.activity import Activity, content_hash
from bulkpost.storage.history.database import History
path, rows, step = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def batches():  # a migration's rows, made a batch of 4,096 at a time (the feeder's way)
    for start in range(1, rows + 1, 4096):
        batch = []
        for row in range(start, min(start + 4096, rows + 1)):
            lead = str(uuid.UUID(int=row * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128))
            body = (f'{{"RelatedProspectId":"{lead}","ActivityEvent":201,"ActivityNote":'
                    f'"Called, no answer","ActivityDateTime":"2024-03-01 04:40:00","Fields":['
                    f'{{"SchemaName":"mx_Custom_1","Value":"CALL-{row:08d}"}},{{"SchemaName":'
                    f'"mx_Custom_2","Value":"17.50"}}]}}').encode()
            batch.append(Activity(row, f"CALL-{row:08d}", lead, body, content_hash(body), 201))
        yield batch

history = History(path, step).open()
history.register("export.csv", "results-" + step + ".csv")
screen_s = write_s = 0.0
found = commits = 0
single = []
for batch in batches():
    began = time.perf_counter()
    found += len(history.screen(batch))
    screen_s += time.perf_counter() - began
    if step != "first":
        continue
    # Each row claimed before it is sent and marked posted after, in group commits of 64
    # (an fsync each): the most a busy run puts in one, the fewest commits per row.
    for start in range(0, len(batch), 64):
        began = time.perf_counter()
        for item in batch[start:start + 64]:
            history.sending(item)
        history.commit(history.take())
        for item in batch[start:start + 64]:
            history.posted(item, str(uuid.UUID(int=item.row)))
        history.commit(history.take())
        write_s += time.perf_counter() - began
        commits += 2
if step == "first":  # at 25 calls per 5 s a commit holds one row: its claim, then its mark
    extra = list(next(batches()))[:200]
    for item in extra:
        item = Activity(item.row + rows, "NEW-" + item.key, item.lead, item.body,
                        item.content_hash, 201)
        began = time.perf_counter()
        history.sending(item)
        history.commit(history.take())
        history.posted(item, "x")
        history.commit(history.take())
        single.append(time.perf_counter() - began)
history.finish(0, rows, 0, 0, 0)
history.close()
single.sort()
wal = path + "-wal"
size = os.path.getsize(path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)
print(json.dumps({"step": step, "rows": rows, "found": found, "screen_s": screen_s,
                  "write_s": write_s, "commits": commits, "bytes": size,
                  "one_row_ms": 1000 * single[len(single) // 2] if single else None}))
"""


def bench_account_history(workdir: Path, rows: int) -> list[dict[str, Any]]:
    """A migration's rows through the history a run keeps by default: the first load
    (each row screened, claimed and marked posted), then the same rows loaded again under
    another results file (each screened, and found)."""
    path = workdir / f"account-{rows}.sqlite"
    done = []
    for step in ("first", "again"):
        run = Measured([sys.executable, "-c", ACCOUNT_SCRIPT, str(path), str(rows), step])
        done.append({**run.last_json(), "peak_rss_mb": run.peak_mb, "wall_s": run.wall,
                     "cpu_s": run.cpu})
    return done


def _drop_page_cache() -> bool:
    """Empty the kernel's page cache, where allowed (root, outside most containers)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def bench_history(workdir: Path, keys: int) -> dict[str, Any]:
    path = workdir / f"history-{keys}.db"
    built = Measured([sys.executable, "-c", HISTORY_BUILD, str(path), str(keys)]).last_json()
    cold = None
    if _drop_page_cache():  # first from disk, as the first night after a reboot
        cold = Measured([sys.executable, "-c", HISTORY_SCRIPT, str(path), str(keys),
                         "cold"]).last_json()
    run = Measured([sys.executable, "-c", HISTORY_SCRIPT, str(path), str(keys), "warm"])
    figures = {**built, **run.last_json()}
    return {**figures, "lookups_per_s": figures["screened"] / figures["screen_s"],
            "cold_lookups_per_s": cold["screened"] / cold["screen_s"] if cold else None,
            "bytes_per_key": figures["bytes"] / keys, "peak_rss_mb": run.peak_mb,
            "wall_s": run.wall}


# -- 11. verify by lead page ---------------------------------------------------------------
def _edit_in_crm(url: str, activity_id: str, amount: str | None, note: str | None) -> None:
    """Someone changes an activity in the CRM after the load ("Update an Activity")."""
    body: dict[str, Any] = {"ProspectActivityId": activity_id, "ActivityEvent": 201,
                            "Fields": [] if amount is None else [
                                {"SchemaName": "mx_Custom_2", "Value": amount}]}
    if note is not None:
        body["ActivityNote"] = note
    request = urllib.request.Request(
        url + "/v2/ProspectActivity.svc/CustomActivity/Update", json.dumps(body).encode(),
        {"Content-Type": "application/json", "x-LSQ-AccessKey": KEYS["LSQ_ACCESS_KEY"],
         "x-LSQ-SecretKey": KEYS["LSQ_SECRET_KEY"]}, method="POST")
    with urllib.request.urlopen(request) as answer:
        assert json.load(answer)["Status"] == "Success"


def _differences(path: Path) -> set[tuple[str, ...]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {(r["row"], r["field"], r["sent"], r["stored"]) for r in csv.DictReader(handle)}


def bench_verify(workdir: Path, rows: int, per_lead: int, dialect: str) -> dict[str, Any]:
    """``verify --all`` of a load whose leads hold ``per_lead`` activities each, by lead
    page (the run's calibration kept beside the results file) and one call per activity
    (``--one-per-activity``), after the CRM changed some amounts and notes (and the
    update-log rows of the dialects that list them): calls per verified activity as the
    server counted them (the activity type's schema included), and the differences each
    way found."""
    tag = f"{dialect}-{rows}"
    data = make_csv(workdir / f"verify-{tag}.csv", rows, lead_count=rows // per_lead)
    results = workdir / f"verify-{tag}.results.csv"
    sandbox = SandboxProcess(workdir, "--rate", UNLIMITED, "--dialect", dialect, "--seed", "1")
    try:
        loaded = run_bulkpost(data, sandbox.url, UNLIMITED, results).last_json()
        with open(results, newline="", encoding="utf-8") as handle:
            ids = {int(r["row"]): r["activity_id"] for r in csv.DictReader(handle)}
        edited = 0
        for row, activity_id in sorted(ids.items()):
            amount = "0.01" if row % 40 == 0 else None
            note = "changed in the CRM" if row % 55 == 0 else None
            if amount is not None or note is not None:
                _edit_in_crm(sandbox.url, activity_id, amount, note)
                edited += 1
        measured: dict[str, Any] = {"dialect": dialect, "rows": rows, "per_lead": per_lead,
                                    "posted": loaded["posted"], "edited": edited}
        for way in ("page", "single"):
            before = sandbox.stats()
            found = workdir / f"verify-{tag}-{way}.csv"
            summary = run_cli("verify", str(results), "--input", str(data), "--mapping",
                              str(MAPPING), "--host", sandbox.url, "--rate", UNLIMITED,
                              "--all", "--differences", str(found),
                              *(("--one-per-activity",) if way == "single" else ())
                              ).last_json()
            after = sandbox.stats()
            measured[way] = {"checked": summary["checked"], "differ": summary["differ"],
                             "read": summary["read"], "calls": after["calls"] - before["calls"],
                             "differences": sorted(_differences(found))}
    finally:
        sandbox.close()
    page, single = measured["page"], measured["single"]
    fields = [d for d in page["differences"] if d[1] != "ActivityNote"]
    measured["same_field_differences"] = fields == single["differences"]
    measured["note_differences"] = len(page["differences"]) - len(fields)
    return measured


def _verify_section(measured: list[dict[str, Any]]) -> list[str]:
    lines = [
        "", "## 11. Verify by lead page", "",
        "`bulkpost verify --all` of a load whose leads hold 20 activities each, after the "
        "CRM changed some of them (\"Update an Activity\": every 40th row's amount, every "
        "55th row's note). **by lead page**: the run's calibrated look-ups kept beside the "
        "results file, so the activities are read by their leads' pages; **one per "
        "activity**: `--one-per-activity`. Calls: as the server counted them, the "
        "activity type's schema included; limit lifted.", ""]
    rows = []
    for m in measured:
        for way, name in (("page", "by lead page"), ("single", "one per activity")):
            read = m[way]
            notes = m["note_differences"] if way == "page" else 0
            fields = len(read["differences"]) - notes
            rows.append([m["dialect"], f"{m['rows']:,}", name, f"{read['checked']:,}",
                         f"{read['calls']:,}", f"{read['calls'] / read['checked']:.3f}",
                         str(fields), str(notes) if way == "page" else "not shown",
                         ("yes" if m["same_field_differences"] else "**no**")
                         if way == "page" else "-"])
    lines += _table(["dialect", "rows", "read", "verified", "calls", "calls per activity",
                     "field differences", "note differences", "same field differences"],
                    rows)
    return lines


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def render(results: dict[str, Any], command: str, minutes: float) -> str:
    allowance, recovery = results["allowance"], results["recovery"]
    dry, resume = results["dry"], results["resume"]
    lines = [
        "# Benchmarks", "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} in {minutes:.1f} minutes; "
        f"machine: {machine()}. Each client and each sandbox is its own process on "
        "127.0.0.1; the sandbox enforces a strict sliding window per account.", "",
        "## 1. Allowance use", "",
        "Latency as a real account sees it: answers mostly take 80-600 ms, 3% of them up to "
        "3 s, and each request takes 10-50 ms to arrive (so arrivals are jittered and "
        "reordered, as on a network). Calls per second are the server's view (first to last "
        "created activity) as a fraction of the allowance N/T; 429s are the server's "
        "rate-limit answers; a window is any T seconds. The rate-bound runs of sections 1 "
        "and 2 run at the same time, each against its own sandbox (together they use a few "
        "percent of the CPU).", "",
        "- **sequential**: one call at a time with a 220 ms sleep between calls, as the "
        "public LeadSquared clients do;",
        "- **gather**: `asyncio.gather` over every row under `AsyncLimiter(N, T)`, a "
        "rate-limited row queued again;",
        "- **bulkpost**: `bulkpost run --rate N/T`, the plan's limit given (without "
        "`--rate` it is learnt: section 9).", "",
    ]
    lines += _table(
        ["allowance", "client", "rows", "posted", "server calls/s", "of allowance", "429s",
         "most created in a window", "most calls in a window", "end-to-end rows/s"],
        [[r["rate"], f"**{r['client']}**" if r["client"] == "bulkpost" else r["client"],
          str(r["rows"]), str(r["posted"]), f"{r['server_calls_per_s']:.3f}",
          f"{r['fraction']:.3f}", str(r["rate_limited"]), str(r["most_created_in_window"]),
          str(r["most_arrivals_in_window"]), f"{r['end_to_end_rows_per_s']:.2f}"]
         for r in allowance])
    r = recovery
    lines += [
        "", "Part of what bulkpost leaves of the allowance is the check at the start of every "
        "run: the first row is read back and the look-ups calibrated before any other row "
        "goes (`--verify-first`), a second or two of a run this short.",
        "", "## 2. Recovery", "",
        f"bulkpost posts {r['rows']} rows on an account allowing 25/5s (same latency), with "
        "its defaults: no `--rate`, so it starts at the documented maximum, 25/5s, and "
        "learns nothing while alone. Once half are posted, a second client on the same "
        "account starts calls at half the allowance (25/10s) for "
        f"{r['other_seconds']} s. Each rate-limited answer lowers bulkpost's share to what "
        "the window had room for; after a whole window without one, the share climbs back. "
        "Recovered: the first window starting after the other client's last call in which "
        "bulkpost alone made at least 96% of the allowance.", "",
    ]
    lines += _table(
        ["rows", "posted", "in the ledger (distinct)", "bulkpost's 429s",
         "other client: created / 429s", "bulkpost during, of what was left",
         "recovered after (s)", "after recovery, of allowance"],
        [[str(r["rows"]), str(r["posted"]), f"{r['in_ledger']} ({r['distinct_in_ledger']})",
          str(r["rate_limited"]), f"{r['other_created']} / {r['other_rate_limited']}",
          f"{r['during_fraction_of_left']:.2f}",
          "never" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}",
          "-" if r["after_fraction"] is None else f"{r['after_fraction']:.3f}"]])
    pairs, large = results["pairs"], results["large"]
    small = pairs[0][0]["rows"]
    ratios = [ours["rows_per_s"] / floor["rows_per_s"] for ours, floor in pairs]
    ours_small = statistics.median(ours["cpu_s"] for ours, _ in pairs)
    marginal = (large["cpu_s"] - ours_small) / (large["rows"] - small) * 1000
    floor_cpu = statistics.median(floor["cpu_s"] / floor["rows"] * 1000 for _, floor in pairs)
    lines += [
        "", "## 3. Overhead", "",
        f"Limit lifted (`--rate {UNLIMITED}`), sandbox answering at once, {small:,} rows, "
        f"{len(pairs)} pairs of runs taken in turn (this 2-core machine's speed varies by "
        "tens of percent from minute to minute; each pair shares the moment). Rows per "
        "second as the server saw them. **bare** is `benchmarks/clients.py bare`: "
        f"pre-built bodies posted by {WORKERS} tasks on one aiohttp session (bulkpost's "
        "pool size at this rate), no results file, no input to read. bulkpost runs as it "
        "does by default: it reads the input ahead once (repeated keys) and keeps a history "
        "(the account's own, new), which section 7 weighs against `--create-again`.", "",
    ]
    lines += _table(
        ["pair", "bulkpost rows/s", "bare rows/s", "bulkpost of bare"],
        [[str(n), f"{ours['rows_per_s']:,.0f}", f"{floor['rows_per_s']:,.0f}", f"{ratio:.2f}"]
         for n, ((ours, floor), ratio) in enumerate(zip(pairs, ratios, strict=True), 1)])
    lines += [
        "", f"Median: bulkpost makes **{statistics.median(ratios):.2f}** of the bare loop's "
        "rows per second.", "",
        f"Client CPU per 1,000 rows: bulkpost {marginal:.3f} s (the difference between its "
        f"{large['rows']:,}-row run and its median {small:,}-row run, so start-up cancels out; "
        "it includes reading and mapping the CSV and the durable results file), the bare "
        f"loop {floor_cpu:.3f} s (its posting phase). A {large['rows']:,}-row run made "
        f"{large['rows_per_s']:,.0f} rows/s.", "",
        "What profiles (`pyinstrument -m bulkpost run …`, and cProfile) showed, and what was "
        "done: tenacity's retry machinery cost about 30 µs a row, so the first attempt is "
        "made without it; each outcome was written with its own `write` and the csv module, "
        "so a loop turn's lines now go out in one write, formatted directly; rows woke the "
        "feeder one by one, so it now enqueues a mapped batch at once; waiting for an fsync "
        "took two callbacks per row (a shielded task), now one future; the garbage collector "
        "ran every 700 allocations, now every 50,000 (the CLI only). What is left is mostly "
        "aiohttp's own client code and the event loop (about six callbacks a row against the "
        "bare loop's five), plus reading and mapping the input (about 15 µs a row), which "
        "the bare loop does not do.",
    ]
    lines += [
        "", "## 4. Memory", "",
        "Peak RSS of the bulkpost process: real runs with the limit lifted, and dry runs "
        "over a generated input (date-times repeat at minute resolution, as exports' do) "
        "without the schema preflight.", "",
    ]
    small_peak = statistics.median(ours["peak_rss_mb"] for ours, _ in pairs)
    memory = [[f"real run, {small:,} rows (median of {len(pairs)})",
               f"{statistics.median(ours['wall_s'] for ours, _ in pairs):.1f}",
               f"{small_peak:.0f}"],
              [f"real run, {large['rows']:,} rows", f"{large['wall_s']:.1f}",
               f"{large['peak_rss_mb']:.0f}"]]
    memory += [[f"dry run, {d['kind']}, {d['rows']:,} rows", f"{d['wall_s']:.1f}",
                f"{d['peak_rss_mb']:.0f}"] for d in dry]
    lines += _table(["run", "wall (s)", "peak RSS (MB)"], memory)
    growth = large["peak_rss_mb"] / small_peak
    lines += ["", f"Peak RSS at {large['rows']:,} rows is {growth:.2f} times that at {small:,}."]
    lines += [
        "", "## 5. Resume", "",
        f"Planning a resume from a results file of {resume['rows']:,} lines "
        f"({resume['file_mb']:.0f} MB): loading it, then looking up every row's last "
        "outcome as the planner does, in a fresh process.", "",
    ]
    lines += _table(
        ["lines", "import (s)", "load (s)", "look-ups (s)", "plan = load + look-ups (s)",
         "peak RSS (MB)"],
        [[f"{resume['rows']:,}", f"{resume['import_s']:.2f}", f"{resume['load_s']:.2f}",
          f"{resume['lookups_s']:.2f}", f"{resume['plan_s']:.2f}",
          f"{resume['peak_rss_mb']:.0f}"]])
    lines += [
        "", "## 6. Bulk mode", "",
        "Each `--mode` against a sandbox with both limits (single calls, and bulk calls of up "
        "to 25 activities) and the latency of section 1, at two plan settings; these runs "
        "share the moment of sections 1 and 2. Activities per second as the server saw them "
        "(a bulk call's activities arrive together, so the last call's are left out of the "
        "span); `single` is section 1's bulkpost run; the speed-up is over it.", "",
    ]
    single = {r["rate"]: r for r in allowance if r["client"] == "bulkpost"}
    modes = [run for rate in PLANS
             for run in (single[rate], *(m for m in results["modes"] if m["rate"] == rate))]
    lines += _table(
        ["limits", "mode", "rows", "posted", "activities/s", "speed-up", "end-to-end /s",
         "bulk calls", "429s"],
        [[f"{m['rate']}, bulk {m['bulk_rate']}", f"**{m['mode']}**", str(m["rows"]),
          str(m["posted"]), f"{m['server_calls_per_s']:.2f}",
          f"{m['server_calls_per_s'] / single[m['rate']]['server_calls_per_s']:.1f}x",
          f"{m['end_to_end_rows_per_s']:.2f}", str(m["bulk_calls"]), str(m["rate_limited"])]
         for m in modes])
    history = results["history"]
    lines += [
        "", "## 7. History (`--history`)", "",
        f"A history of {history['keys']:,} keys, as a year of nightly runs leaves it (365 "
        "runs, keys `ORD-0000000001`…, GUID activity Ids), built in a fresh process; then "
        f"tonight's {history['screened']:,} rows, half of them keys of earlier nights and "
        "half new, screened in batches of 4,096 as the feeder does (the key looked up in the "
        "history and in this input's earlier rows); then group commits of 64 claims, as a "
        "run makes them before sending (fsync each). The build is a bulk load (no fsyncs, "
        "1 GiB of cache), for set-up only; the peak RSS is that of the screening process, "
        "most of it the 200,000 rows it holds.",
        "",
    ]
    cold = history["cold_lookups_per_s"]
    lines += _table(
        ["keys", "build (s)", "size (MB)", "bytes/key", "screened rows/s, cached",
         "from disk", "keys found", "commit of 64: median (ms)", "p95 (ms)", "peak RSS (MB)"],
        [[f"{history['keys']:,}", f"{history['build_s']:.0f}", f"{history['bytes'] / 1e6:,.0f}",
          f"{history['bytes_per_key']:.0f}", f"{history['lookups_per_s']:,.0f}",
          f"{cold:,.0f}" if cold else "not measured", f"{history['found']:,}",
          f"{history['commit_ms_median']:.1f}", f"{history['commit_ms_p95']:.1f}",
          f"{history['peak_rss_mb']:.0f}"]])
    pairs = results["history_pairs"]
    lines += [
        "", f"Cost in a run: section 3's lifted-limit run ({pairs[0][0]['rows']:,} rows) as "
        "runs are by default, keeping a history (the account's own, new), and with "
        "`--create-again` (none), in alternating pairs.", ""]
    lines += _table(
        ["pair", "with a history: rows/s", "CPU (s)", "without: rows/s", "CPU (s)", "ratio"],
        [[str(i), f"{h['rows_per_s']:,.0f}", f"{h['cpu_s']:.1f}", f"{b['rows_per_s']:,.0f}",
          f"{b['cpu_s']:.1f}", f"{h['rows_per_s'] / b['rows_per_s']:.2f}"]
         for i, (h, b) in enumerate(pairs, start=1)])
    lines += ["", "Keys found: in the history, or in an earlier row of tonight's input. "
              "\"From disk\": the same screening right after the kernel's page cache was "
              "emptied (the first night after a reboot; measured only where the bench may empty "
              "it). A nightly run of 100,000 rows at 25 calls per 5 s takes 5.7 hours; "
              "screening its keys takes seconds either way."]
    lines += [
        "", "## 8. Updates (`--on-changed update`)", "",
        "Creates and updates side by side, at each plan's two limits, against one sandbox "
        "with the latency of section 1 and one history (these runs share the moment of "
        "sections 1 and 2): rows created with single calls; every row changed and updated "
        "in place with single calls (\"Update an Activity\"); changed again and updated in "
        "bulk (\"Update Activities in Bulk\", 25 a call under the bulk limit); as many new "
        "rows created in bulk. Per second as the server saw them (a bulk call's rows arrive "
        "together, so the last call's are left out of the span); `% of single limit`: "
        "against N/T of the single-call limit.", ""]
    lines += _table(
        ["limits", "what", "mode", "rows", "done", "per second", "% of single limit",
         "end-to-end /s", "429s"],
        [[f"{u['rate']}, bulk {u['bulk_rate']}", f"**{u['kind']}**", u["mode"], str(u["rows"]),
          str(u["done"]), f"{u['server_per_s']:.2f}",
          f"{100 * u['server_per_s'] / (_rate(u['rate'])[0] / _rate(u['rate'])[1]):.0f}%",
          f"{u['end_to_end_rows_per_s']:.2f}", str(u["rate_limited"])]
         for u in results["updates"]])
    lines += _learning(results["learning"])
    if "account" in results:
        lines += _account(results["account"])
    if "verify" in results:
        lines += _verify_section(results["verify"])
    return "\n".join(lines) + "\n"


def _account(steps: list[dict[str, Any]]) -> list[str]:
    first, again = steps
    rows = first["rows"]
    lines = [
        "", "## 10. The account's history, kept by default", "",
        f"Every run keeps a history (the account's own when `--history` is not given), so "
        f"that rows loaded again under another results file are not created again. Its work "
        f"for a migration of {rows:,} rows, in a fresh process each: **first load**: every "
        "row screened in batches of 4,096 (as the feeder does), claimed before it is sent and "
        "marked posted after, in group commits of 64 rows (an fsync each); **again**: the same "
        "rows loaded again under another results file, screened, every one found. One-row "
        "commits: a claim and its mark committed alone, as at 25 calls per 5 s, where a "
        "commit rarely holds more than one row. Per row: the history's own time, divided by "
        "the rows (CPU and fsync waits together).", ""]
    lines += _table(
        ["step", "rows", "found", "screen: µs/row", "claim + mark: µs/row", "commits",
         "size (MB)", "bytes/row", "peak RSS (MB)", "one-row claim + mark: median (ms)"],
        [[step["step"], f"{step['rows']:,}", f"{step['found']:,}",
          f"{1e6 * step['screen_s'] / step['rows']:.1f}",
          f"{1e6 * step['write_s'] / step['rows']:.1f}" if step["commits"] else "-",
          f"{step['commits']:,}", f"{step['bytes'] / 1e6:,.0f}",
          f"{step['bytes'] / step['rows']:.0f}", f"{step['peak_rss_mb']:.0f}",
          f"{step['one_row_ms']:.2f}" if step["one_row_ms"] else "-"]
         for step in (first, again)])
    per_row_ms = 1000 * (first["screen_s"] + first["write_s"]) / rows
    lines += ["", f"At 25 calls per 5 s a row has 200 ms; the history takes {per_row_ms:.3f} ms "
              f"of it in a busy run ({100 * per_row_ms / 200:.2f}%), and about "
              f"{first['one_row_ms'] or 0:.1f} ms where each commit holds one row. "
              f"{rows:,} rows take {first['bytes'] / 1e6:,.0f} MB on disk: a posted key keeps "
              "its activity Id, content and identity hashes; a claim keeps its request only "
              "until its answer. Memory does not grow with the rows: the history is on disk, "
              "read a batch at a time."]
    return lines


def _learning(learning: list[dict[str, Any]]) -> list[str]:
    lines = [
        "", "## 9. The plan's limit, learnt (no `--rate`)", "",
        "An account whose plan allows fewer calls than the documented maximum of 25 per 5 s, "
        "or more (72/5s: a live answer named that limit), with the latency of section 1. "
        "**learnt**: `bulkpost run` without `--rate`: it starts at 25/5s and learns the "
        "plan's limit from the first rate-limited answers; above 25, once it has used a "
        "whole window without one, it climbs one call over what the account has proven "
        "until the window refuses one call; "
        "then a second run of as many new rows, sharing the history, starts from what the "
        "first learnt. **learnt, text lies**: the same, but every 429 text names 25 in 5 "
        "seconds whatever the plan (the docs' sentence). **--rate N/5s**: the plan's limit "
        "given. **--rate 25/5s**: the old default, given. Each run meets a sandbox of its "
        "own on the same host and port (an empty window, as the next night). Of the limit: "
        "every call the window let through (look-ups and the first row's read-back "
        "included) per second, first to last, as a fraction of N/T; from the second: "
        "activities created per second from the second to the last (the first is read "
        "back before the others go), of N/T. 429s: the server's "
        "rate-limit answers. Most in a window: calls that arrived in any T seconds, refused "
        "ones included. These runs share the moment of sections 1 and 2. Before learnt "
        "limits, the old default against a 10/5s plan drew 42 rate-limited answers in 240 "
        "rows and used 0.685 of the limit (the issue's measurement): each 429 paused a whole "
        "window; now it lowers the share and climbs back, even under a given `--rate`.", ""]
    rows = []
    for m in learning:
        what = ("learnt, text lies" if m["said"] else "**learnt**") if m["given"] is None \
            else f"--rate {m['given']}"
        for run_index in (1, 2):
            run = m.get(f"run{run_index}")
            if run is None:
                continue
            limit = ", ".join(run["limit"].values())
            rows.append([m["rate"], what, str(run_index), str(m["rows"]), str(run["posted"]),
                         f"{run['fraction']:.3f}", f"{run['from_second']:.3f}",
                         str(run["rate_limited"]), str(run["most_in_window"]), limit])
    return lines + _table(["account allows", "bulkpost", "run", "rows", "posted",
                           "of the limit", "from the second", "429s", "most in a window",
                           "limit it used"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--only-learning", metavar="RATE", choices=sorted(LEARNING_ROWS),
                        help="only section 9's runs against an account allowing RATE, "
                             "printed (docs/BENCHMARKS.md left as it is)")
    parser.add_argument("--only-verify", action="store_true",
                        help="run section 11 alone and print its figures (docs untouched)")
    args = parser.parse_args()
    if args.only_learning:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ[DATA_DIR_ENV] = str(Path(tmp) / "data")
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                runs = [pool.submit(bench_learning, Path(tmp), args.only_learning, given, said)
                        for given, said in ((None, None), (None, LIES), (args.only_learning, None),
                                            ("25/5s", None))]
                print("\n".join(_learning([run.result() for run in runs])))
        return
    if args.only_verify:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ[DATA_DIR_ENV] = str(Path(tmp) / "data")
            measured = [bench_verify(Path(tmp), 1000, 20, dialect)
                        for dialect in ("captured", "classic")]
        print(json.dumps(measured))
        print("\n".join(_verify_section(measured)))
        return
    rows, other_seconds, sizes = 600, 20.0, (20_000, 200_000)
    dry_rows = resume_rows = 1_000_000
    history_keys, account_rows = 10_000_000, 1_000_000
    if args.quick:
        rows, other_seconds, sizes = 60, 5.0, (2_000, 10_000)
        dry_rows, resume_rows, history_keys, account_rows = 20_000, 100_000, 400_000, 50_000
    began = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # Runs keep the account's own history by default: each sandbox's in the bench's
        # folder, never in the user's data directory.
        os.environ[DATA_DIR_ENV] = str(workdir / "data")
        data = make_csv(workdir / f"allowance-{rows}.csv", rows)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            runs = [pool.submit(bench_allowance, workdir, data, client, rate, rows)
                    for rate in PLANS for client in ("bulkpost", "sequential", "gather")]
            recovery = pool.submit(bench_recovery, workdir, data, rows, other_seconds)
            modes = [pool.submit(bench_allowance, workdir, data, "bulkpost", rate, rows, mode)
                     for rate in PLANS for mode in ("bulk", "both")]
            updates = [pool.submit(bench_updates, workdir, rate, rows // 2) for rate in PLANS]
            learning = [pool.submit(bench_learning, workdir, rate, given, said)
                        for rate in LEARNING_ROWS
                        for given, said in ((None, None), (None, LIES), (rate, None),
                                            ("25/5s", None))]
            results["allowance"] = [run.result() for run in runs]
            results["recovery"] = recovery.result()
            results["modes"] = [run.result() for run in modes]
            results["updates"] = [step for run in updates for step in run.result()]
            results["learning"] = [run.result() for run in learning]
        for line in (*results["allowance"], results["recovery"], *results["modes"],
                     *results["updates"], *results["learning"]):
            print(json.dumps(line), flush=True)
        results["pairs"] = alternating(workdir, ("bulkpost", "bare"), sizes[0], 3)
        results["large"] = bench_unlimited(workdir, "bulkpost", sizes[1])
        print(json.dumps(results["large"]), flush=True)
        results["dry"] = []
        for kind in ("csv", "parquet"):
            results["dry"].append(bench_dry_run(workdir, dry_rows, kind))
            print(json.dumps(results["dry"][-1]), flush=True)
        results["resume"] = bench_resume(workdir, resume_rows)
        print(json.dumps(results["resume"]), flush=True)
        results["history"] = bench_history(workdir, history_keys)
        print(json.dumps(results["history"]), flush=True)
        results["history_pairs"] = alternating(workdir, ("bulkpost", "bulkpost-no-history"),
                                               sizes[0], 2)
        results["account"] = bench_account_history(workdir, account_rows)
        print(json.dumps(results["account"]), flush=True)
        results["verify"] = [bench_verify(workdir, 1000, 20, dialect)
                             for dialect in ("captured", "classic")]
        print(json.dumps(results["verify"]), flush=True)
    (ROOT / ".bench-results.json").write_text(json.dumps(results))  # to re-render by hand
    command = "make bench" + (" (python -m benchmarks.bench --quick)" if args.quick else "")
    Path(args.out).write_text(render(results, command, (time.monotonic() - began) / 60))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
