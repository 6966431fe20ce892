"""Property: whatever a cell holds, the sandbox receives its faithful string form.

Each example is a whole table (many values) posted through the Python API to the sandbox,
so a few examples cover thousands of values. The oracle is not bulkpost's own formatter:
each type is checked by reading the received text back (int(), float(), ISO parsing).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bulkpost
from tests.conftest import SECRET, SandboxServer

pytestmark = pytest.mark.e2e

ROWS = 40
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
ints = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
floats = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64))
floats32 = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32))
decimals = st.one_of(st.none(), st.decimals(min_value=-10**9, max_value=10**9, places=3,
                                            allow_nan=False, allow_infinity=False))
dates = st.one_of(st.none(), st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)))
stamps = st.one_of(st.none(), st.datetimes(min_value=datetime(1900, 1, 1),
                                           max_value=datetime(2200, 1, 1)))
bools = st.one_of(st.none(), st.booleans())

MAPPING = {"activity": {"event": 201, "lead_id_column": "lead", "key_column": "key"},
           "fields": {f"mx_Custom_{n}": name for n, name in enumerate(
               ["key", "text", "int", "float", "float32", "decimal", "date", "stamp", "bool"],
               start=1)}}


@pytest.fixture(scope="module")
def server() -> Any:
    from bulkpost.core.allowance import parse_rate

    sandbox = SandboxServer(rate=parse_rate("1000/1s"))
    yield sandbox
    sandbox.close()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.tuples(*(st.lists(s, min_size=ROWS, max_size=ROWS) for s in (
    texts, ints, floats, floats32, decimals, dates, stamps, bools))))
def test_any_value_arrives_in_its_faithful_form(tmp_path_factory: pytest.TempPathFactory,
                                                server: SandboxServer,
                                                columns: tuple[list[Any], ...]) -> None:
    text, integer, double, single, decimal, day, stamp, flag = columns
    keys = [uuid.uuid4().hex for _ in range(ROWS)]
    lead = str(uuid.UUID(int=0x9E3779B97F4A7C15F39CC0605CEDC834, version=4))
    table = pa.table({
        "key": keys, "lead": [lead] * ROWS, "text": pa.array(text, pa.string()),
        "int": pa.array(integer, pa.int64()), "float": pa.array(double, pa.float64()),
        "float32": pa.array(single, pa.float32()),
        "decimal": pa.array(decimal, pa.decimal128(13, 3)),
        "date": pa.array(day, pa.date32()), "stamp": pa.array(stamp, pa.timestamp("us")),
        "bool": pa.array(flag, pa.bool_()),
    })
    results = tmp_path_factory.mktemp("fidelity") / "r.csv"
    summary = bulkpost.run(table, MAPPING, results, host=server.url,
                           access_key="demo-access-key", secret_key=SECRET, rate="1000/1s")
    assert summary.posted == ROWS, summary.as_dict()
    got = {e["Fields"]["mx_Custom_1"]: e["Fields"] for e in server.ledger()}
    for n, key in enumerate(keys):
        fields = got[key]
        assert fields["mx_Custom_2"] == text[n]
        check(fields["mx_Custom_3"], integer[n], int)
        check(fields["mx_Custom_4"], double[n], float)
        check(fields["mx_Custom_5"], None if single[n] is None else np.float32(single[n]),
              np.float32)
        check(fields["mx_Custom_6"], decimal[n], Decimal)
        check(fields["mx_Custom_7"], day[n], date.fromisoformat)
        expected = stamp[n].replace(microsecond=0) if stamp[n] is not None else None
        check(fields["mx_Custom_8"], expected,
              lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S"))
        check(fields["mx_Custom_9"], flag[n], lambda s: {"true": True, "false": False}[s])


def check(sent: str, value: Any, read: Any) -> None:
    """``sent`` reads back as exactly ``value``; numbers are plain digits."""
    if value is None:
        assert sent == ""
        return
    assert read(sent) == value, (sent, value)
    if read in (int, float, np.float32, Decimal):
        assert "e" not in sent.lower()  # digits, never exponent form
    if read is int:
        assert "." not in sent


def test_utc_is_the_oracle_for_aware_timestamps() -> None:
    # The aware case, checked once by hand: 05:30 in Kolkata is 00:00 UTC.
    from bulkpost.reading.cells import to_strings

    stamp = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert to_strings(pa.array([stamp], pa.timestamp("s", "Asia/Kolkata"))) == [
        "2024-01-01 00:00:00"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(st.lists(st.tuples(texts, texts), min_size=ROWS, max_size=ROWS))
def test_any_csv_cell_arrives_exactly_as_written(tmp_path_factory: pytest.TempPathFactory,
                                                 server: SandboxServer,
                                                 cells: list[tuple[str, str]]) -> None:
    import csv

    folder = tmp_path_factory.mktemp("csv-fidelity")
    keys = [uuid.uuid4().hex for _ in range(ROWS)]
    lead = str(uuid.UUID(int=0x9E3779B97F4A7C15F39CC0605CEDC834, version=4))
    path = folder / "in.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "lead", "a", "b"])
        writer.writerows([key, lead, a, b] for key, (a, b) in zip(keys, cells, strict=True))
    mapping = {"activity": {"event": 201, "lead_id_column": "lead", "key_column": "key"},
               "fields": {"mx_Custom_1": "key", "mx_Custom_2": "a", "mx_Custom_3": "b"}}
    summary = bulkpost.run(path, mapping, folder / "r.csv", host=server.url,
                           access_key="demo-access-key", secret_key=SECRET, rate="1000/1s")
    assert summary.posted == ROWS, summary.as_dict()
    got = {e["Fields"]["mx_Custom_1"]: e["Fields"] for e in server.ledger()}
    for key, (a, b) in zip(keys, cells, strict=True):
        # A CSV reader reads \r\n inside a quoted cell as written; compare as written.
        assert (got[key]["mx_Custom_2"], got[key]["mx_Custom_3"]) == (a, b)
