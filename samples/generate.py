"""Regenerate the bundled samples (deterministic): ``python samples/generate.py``.

``activities.csv`` (100 rows) exercises what a real export holds: quoted commas and
newlines, non-ASCII text, leading zeros, 20-digit numbers, "NA"/"null" text that must
arrive unchanged, local date-times in Asia/Kolkata. ``activities.parquet`` is a typed twin
of its first 30 rows: nullable integers, floats, a dictionary-encoded column and a
zone-aware timestamp.
"""

from __future__ import annotations

import csv
import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent
NOTES = [
    "Called, no answer",
    "Discussed pricing, sent quote",
    'Customer said "call back next week"',
    "Visit scheduled\nbring brochure",
    "Paid by card; receipt emailed",
    "Réunion confirmée — merci",
    "NA",
    "null",
    "",
    "Order shipped, tracking 1Z999AA10123456784",
]
CHANNELS = ["web", "phone", "store", "partner"]


def main() -> None:
    rng = random.Random(2026)
    leads = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(40)]
    start = datetime(2024, 1, 1, 9, 0)
    rows = []
    for index in range(1, 101):
        occurred = start + timedelta(days=rng.randrange(0, 700), minutes=rng.randrange(0, 600))
        rows.append({
            "source_id": f"ACT-{index:05d}",
            "lead_id": rng.choice(leads),
            "occurred": occurred.strftime("%d/%m/%Y %H:%M"),
            "note": rng.choice(NOTES),
            "order_no": f"{rng.randrange(0, 99999):05d}",
            "amount": f"{rng.randrange(100, 500000) / 100:.2f}",
            "quantity": "" if index % 7 == 0 else str(rng.randrange(1, 20)),
            "channel": rng.choice(CHANNELS),
            "reference": str(rng.randrange(10**19, 10**20)),
        })
    with open(HERE / "activities.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    zone = ZoneInfo("Asia/Kolkata")
    twin = rows[:30]
    table = pa.table({
        "source_id": pa.array([r["source_id"] for r in twin]),
        "lead_id": pa.array([r["lead_id"] for r in twin]),
        "occurred": pa.array(
            [datetime.strptime(r["occurred"], "%d/%m/%Y %H:%M").replace(tzinfo=zone)
             for r in twin], pa.timestamp("us", tz="Asia/Kolkata")),
        "note": pa.array([r["note"] for r in twin]),
        "order_no": pa.array([r["order_no"] for r in twin]),
        "amount": pa.array([float(r["amount"]) for r in twin], pa.float64()),
        "quantity": pa.array([int(r["quantity"]) if r["quantity"] else None for r in twin],
                             pa.int64()),
        "channel": pa.array([r["channel"] for r in twin]).dictionary_encode(),
        "reference": pa.array([r["reference"] for r in twin]),
    })
    pq.write_table(table, HERE / "activities.parquet")


if __name__ == "__main__":
    main()
