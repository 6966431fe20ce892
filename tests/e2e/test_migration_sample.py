"""The migration sample, as the docs use it: dry run, real run, a fix, and the Parquet twin."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, read_results, run_cli

pytestmark = pytest.mark.e2e

SAMPLE = ROOT / "samples" / "migration"


def _expected() -> tuple[int, int, int]:
    """(valid rows, rows invalid only for a decimal comma, rows with 'fax') for type 301."""
    with open(SAMPLE / "orders.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    typed = [r for r in rows if r["code"] == "301"]
    comma = sum(1 for r in typed if "," in r["amount"] and r["channel"] != "fax")
    fax = sum(1 for r in typed if r["channel"] == "fax")
    return len(rows) - comma - fax, comma, fax


def test_the_migration_sample(tmp_path: Path, make_sandbox: Any) -> None:
    valid, comma, fax = _expected()
    assert comma and fax
    server = make_sandbox(rate="1000/1s")
    args = ("run", SAMPLE / "orders.csv", "--mapping", SAMPLE / "mapping.toml", "--results",
            tmp_path / "r.csv", "--host", server.url, "--rate", "1000/1s")
    dry = run_cli(*args, "--dry-run")
    assert (dry.summary["to_send"], dry.summary["invalid"]) == (valid, comma + fax)
    assert any("'amount'" in p and "decimal comma" in p for p in dry.summary["problems"])
    first = run_cli(*args)
    assert first.code == 1 and first.summary["posted"] == valid
    ledger = server.ledger()
    assert Counter(e["EmailAddress"] is not None for e in ledger)[True] > 0  # by e-mail too
    assert {e["Fields"]["mx_Custom_3"] for e in ledger if e["ActivityEvent"] == 301} <= {
        "Web", "Phone", "Store"}  # dropdown values sent in their canonical spelling
    fixed = run_cli(*args, "--decimal-comma")
    assert fixed.summary["posted"] == comma and fixed.summary["invalid"] == fax
    statuses = Counter(r["status"] for r in read_results(tmp_path / "r.csv").values())
    assert statuses == {"posted": valid + comma, "invalid": fax}

    twin = run_cli("run", SAMPLE / "orders.parquet", "--mapping", SAMPLE / "mapping.toml",
                   "--results", tmp_path / "p.csv", "--host", server.url, "--rate", "1000/1s")
    with open(SAMPLE / "orders.csv", newline="", encoding="utf-8") as handle:
        clean = sum(1 for r in csv.DictReader(handle)
                    if "," not in r["amount"] and r["channel"] != "fax")
    # The Parquet twin holds the same orders (none broken), under the same keys: the
    # account's history knows them all, whatever the file's format and name, and none is
    # created again. Those whose typed values read otherwise than the CSV's text (the
    # comma-decimal amounts the CSV's second run sent) are `changed`, skipped and warned of.
    assert twin.code == 0 and twin.summary["posted"] == 0
    assert twin.summary["created_before"] + twin.summary["changed"] == clean
    assert twin.summary["created_before"] > 0
