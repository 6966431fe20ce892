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
from datetime import date, datetime, timedelta
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
    migration(random.Random(7))


def migration(rng: random.Random) -> None:
    """samples/migration/: 3,000 orders, calls and visits of a migration (see its README)."""
    out = HERE / "migration"
    out.mkdir(exist_ok=True)
    zone = ZoneInfo("Asia/Kolkata")
    leads = [(str(uuid.UUID(int=rng.getrandbits(128), version=4)), f"customer{n}@example.com")
             for n in range(300)]
    rows = []
    start = datetime(2019, 1, 1, 8, 0)
    for n in range(1, 3001):
        lead_id, email = rng.choice(leads)
        code = rng.choice([201, 202, 301, 301])
        occurred = start + timedelta(minutes=rng.randrange(0, 6 * 365 * 24 * 60))
        amount = f"{rng.randrange(100, 99999) / 100:.2f}"
        channel = rng.choice(["web", "Phone", "STORE"])
        if n % 97 == 0:
            amount = amount.replace(".", ",")  # a decimal comma from a European export
        if n % 211 == 0:
            channel = "fax"  # not an option of the Channel dropdown
        rows.append({
            "source_id": f"MIG-{n:05d}",
            "lead_id": "" if n % 5 == 0 else lead_id,  # some rows know only the e-mail
            "email": email,
            "code": str(code),
            "occurred": occurred.isoformat(sep=" ", timespec="minutes"),
            "note": rng.choice(NOTES),
            "order_no": f"ORD{n:06d}",
            "amount": amount,
            "channel": channel,
            "delivery": (occurred + timedelta(days=rng.randrange(1, 10))).date().isoformat(),
        })
    with open(out / "orders.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    clean = [r for r in rows if "," not in r["amount"] and r["channel"] != "fax"]
    pq.write_table(pa.table({
        "source_id": pa.array([r["source_id"] for r in clean]),
        "lead_id": pa.array([r["lead_id"] or None for r in clean], pa.string()),
        "email": pa.array([r["email"] for r in clean]),
        "code": pa.array([int(r["code"]) for r in clean], pa.int16()),
        "occurred": pa.array([datetime.fromisoformat(r["occurred"]).replace(tzinfo=zone)
                              for r in clean], pa.timestamp("s", tz="Asia/Kolkata")),
        "note": pa.array([r["note"] for r in clean]),
        "order_no": pa.array([r["order_no"] for r in clean]),
        "amount": pa.array([float(r["amount"]) for r in clean], pa.float64()),
        "channel": pa.array([r["channel"] for r in clean]).dictionary_encode(),
        "delivery": pa.array([date.fromisoformat(r["delivery"]) for r in clean], pa.date32()),
    }), out / "orders.parquet")


if __name__ == "__main__":
    main()
