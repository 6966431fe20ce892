"""``make bench``: the benchmarks, written to docs/BENCHMARKS.md. Not run by CI.

Each benchmark runs the real CLI against the sandbox in its own process on 127.0.0.1:

- allowance: rows posted under a strict sliding window with realistic latency; calls per
  second as the server saw them (first to last arrival) against the allowance N/T, and the
  429s the server answered;
- dry run: wall time and peak RSS of ``run --dry-run`` over a generated CSV of a million rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BULKPOST = [sys.executable, "-m", "bulkpost"]
KEYS = {"LSQ_ACCESS_KEY": "demo-access-key", "LSQ_SECRET_KEY": "demo-secret-key"}
MAPPING = ROOT / "samples" / "mapping.toml"
HEADER = ["source_id", "lead_id", "occurred", "note", "order_no", "amount", "quantity",
          "channel", "reference"]


def make_csv(path: Path, rows: int) -> Path:
    """A CSV shaped like samples/activities.csv, ``rows`` long, deterministic."""
    rng = random.Random(rows)
    leads = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(1000)]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for n in range(1, rows + 1):
            writer.writerow([f"ACT-{n:07d}", leads[n % 1000],
                             f"{n % 28 + 1:02d}/03/2024 10:{n % 60:02d}",
                             "Called, no answer" if n % 3 else "Visit\nscheduled",
                             f"{n % 99999:05d}", f"{n % 5000}.{n % 100:02d}", str(n % 20),
                             "web", str(10**19 + n)])
    return path


class SandboxProcess:
    def __init__(self, workdir: Path, *options: str) -> None:
        self.ledger = workdir / f"ledger-{time.monotonic_ns()}.jsonl"
        self.process = subprocess.Popen(
            [*BULKPOST, "sandbox", "--port", "0", "--ledger", str(self.ledger), *options],
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        self.url = json.loads(self.process.stdout.readline())["sandbox"]

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(self.url + "/_sandbox/stats") as answer:
            data: dict[str, Any] = json.load(answer)
            return data

    def arrivals(self) -> list[float]:
        lines = self.ledger.read_text().splitlines()
        return sorted(json.loads(line)["ReceivedAt"] for line in lines)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def run_cli(*args: str) -> tuple[dict[str, Any], float, float]:
    """Run the CLI; return its summary, wall seconds and its own peak RSS in MB."""
    started = time.monotonic()
    process = subprocess.Popen([*BULKPOST, *args, "--log-format", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, **KEYS}, cwd=ROOT)
    assert process.stdout is not None
    stdout = process.stdout.read()
    # wait4 gives this child's own resource use, not the largest of all children so far.
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if process.returncode not in (0, 1):
        raise RuntimeError(f"bulkpost exited {process.returncode}")
    return json.loads(stdout.strip().splitlines()[-1]), wall, usage.ru_maxrss / 1024


def bench_allowance(workdir: Path, rate: str, rows: int, latency: str) -> dict[str, Any]:
    calls, period = rate.rstrip("s").split("/")
    allowance = int(calls) / float(period)
    data = make_csv(workdir / f"allowance-{rows}.csv", rows)
    sandbox = SandboxProcess(workdir, "--rate", rate, "--latency", latency, "--seed", "1")
    try:
        summary, wall, _ = run_cli("run", str(data), "--mapping", str(MAPPING), "--results",
                                   str(workdir / f"allowance-{rate.replace('/', '-')}.csv"),
                                   "--host", sandbox.url, "--rate", rate)
        arrivals = sandbox.arrivals()
        stats = sandbox.stats()
    finally:
        sandbox.close()
    server_rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    return {"rate": rate, "rows": rows, "latency": latency, "posted": summary["posted"],
            "server_calls_per_s": server_rate, "fraction": server_rate / allowance,
            "end_to_end_rows_per_s": rows / wall, "rate_limited": stats["rate_limited"],
            "max_in_window": stats["max_in_window"]}


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
                        "from tests.bench import make_parquet; "
                        "make_parquet(Path(sys.argv[1]), int(sys.argv[2]))", str(data),
                        str(rows)], check=True, cwd=ROOT)
        mapping = ROOT / "samples" / "mapping-parquet.toml"
    else:
        data, mapping = make_csv(workdir / f"dry-{rows}.csv", rows), MAPPING
    summary, wall, peak = run_cli("run", str(data), "--mapping", str(mapping), "--results",
                                  str(workdir / f"dry-{rows}-{kind}-results.csv"), "--dry-run",
                                  "--no-preflight")
    return {"kind": kind, "rows": rows, "wall_s": wall, "rows_per_s": rows / wall,
            "peak_rss_mb": peak, "to_send": summary["to_send"]}


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


def render(allowance: list[dict[str, Any]], dry: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Benchmarks", "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}; machine: {machine()}.",
        "The sandbox runs in its own process on 127.0.0.1 with a strict sliding window.", "",
        "## Allowance use", "",
        "Calls per second as the server saw them (first to last arrival), as a fraction of "
        "the allowance N/T; 429s are the server's rate-limit answers.", "",
        "| rate | rows | latency (s) | posted | server calls/s | of allowance | "
        "end-to-end rows/s | 429s | most in any window |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in allowance:
        lines.append(
            f"| {r['rate']} | {r['rows']} | {r['latency']} | {r['posted']} | "
            f"{r['server_calls_per_s']:.3f} | {r['fraction']:.3f} | "
            f"{r['end_to_end_rows_per_s']:.3f} | {r['rate_limited']} | {r['max_in_window']} |")
    lines += ["", "## Dry run", "",
              "A generated input shaped like `samples/activities.csv` (date-times repeat at "
              "minute resolution, as exports' do; conversions are cached), checked without "
              "the schema preflight.", "",
              "| input | rows | wall (s) | rows/s | peak RSS (MB) |", "|---|---|---|---|---|"]
    for r in dry:
        lines.append(f"| {r['kind']} | {r['rows']:,} | {r['wall_s']:.1f} | "
                     f"{r['rows_per_s']:,.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    rows, dry_rows = (60, 20_000) if args.quick else (300, 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        allowance = [bench_allowance(workdir, "25/5s", rows, "0.08:0.6")]
        print(json.dumps(allowance[-1]), flush=True)
        dry = []
        for kind in ("csv", "parquet"):
            dry.append(bench_dry_run(workdir, dry_rows, kind))
            print(json.dumps(dry[-1]), flush=True)
    command = "make bench" + (" (python -m tests.bench --quick)" if args.quick else "")
    Path(args.out).write_text(render(allowance, dry, command))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
