"""The Python API: a DataFrame, a Table or a stream in, the CLI's guarantees out."""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import bulkpost
from bulkpost.errors import InputError, UsageError
from tests.conftest import SECRET, read_results

pytestmark = pytest.mark.e2e

MAPPING = {"activity": {"event": 201, "lead_id_column": "lead", "key_column": "key"},
           "fields": {"mx_Custom_1": "key", "mx_Custom_2": "count", "mx_Custom_3": "price",
                      "mx_Custom_4": "label", "mx_Custom_5": "n"}}


def _frame() -> pd.DataFrame:
    leads = [str(uuid.UUID(int=(n + 3) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128,
                           version=4)) for n in range(4)]
    return pd.DataFrame({
        "key": ["A", "B", "C", "D"],
        "lead": leads,
        "count": [1, np.nan, 3, 4],  # an integer column pandas made float to hold a NaN
        "price": [19.9, 100.0, np.nan, 0.1],
        "label": ["x", None, np.nan, "NA"],
        "n": pd.Series([7, None, 9, 10], dtype="Int64"),
    })


def _fields(server: Any) -> dict[str, dict[str, str]]:
    return {e["Fields"]["mx_Custom_1"]: e["Fields"] for e in server.ledger()}


def test_a_dataframe_is_posted_without_pandas_quirks(tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    summary = bulkpost.run(_frame(), MAPPING, tmp_path / "r.csv", host=server.url,
                           access_key="demo-access-key", secret_key=SECRET, rate="100/1s")
    assert summary.exit_code == 0 and summary.posted == 4
    fields = _fields(server)
    assert fields["A"] == {"mx_Custom_1": "A", "mx_Custom_2": "1", "mx_Custom_3": "19.9",
                           "mx_Custom_4": "x", "mx_Custom_5": "7"}
    assert fields["B"]["mx_Custom_2"] == "" and fields["B"]["mx_Custom_3"] == "100"
    assert fields["B"]["mx_Custom_4"] == "" and fields["B"]["mx_Custom_5"] == ""
    assert fields["C"]["mx_Custom_3"] == "" and fields["C"]["mx_Custom_4"] == ""
    assert fields["D"]["mx_Custom_4"] == "NA"  # the text NA, not a null
    # Same guarantees as the CLI: a second call resumes and sends nothing.
    again = bulkpost.run(_frame(), MAPPING, tmp_path / "r.csv", host=server.url,
                         access_key="demo-access-key", secret_key=SECRET, rate="100/1s")
    assert again.skipped == 4 and len(server.ledger()) == 4
    assert [r["status"] for r in read_results(tmp_path / "r.csv").values()] == ["posted"] * 4


def test_a_table_and_a_stream(tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    table = pa.Table.from_pandas(_frame(), preserve_index=False)
    first = bulkpost.run(table.slice(0, 2), MAPPING, tmp_path / "a.csv", host=server.url,
                         access_key="demo-access-key", secret_key=SECRET, rate="100/1s")
    stream = pa.RecordBatchReader.from_batches(table.schema, table.slice(2).to_batches(1))
    second = bulkpost.run(stream, MAPPING, tmp_path / "b.csv", host=server.url,
                          access_key="demo-access-key", secret_key=SECRET, rate="100/1s")
    assert (first.posted, second.posted) == (2, 2)
    assert sorted(_fields(server)) == ["A", "B", "C", "D"]


def test_without_host_the_keys_host_is_found_and_the_limit_learnt(
        tmp_path: Path, make_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_sandbox(region="api-in21.leadsquared.com",
                          home_region="api-in21.leadsquared.com")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BULKPOST_REGION_URLS", json.dumps({
        name: server.url for name in ("api.leadsquared.com", "api-in21.leadsquared.com")}))
    monkeypatch.delenv("LSQ_HOST", raising=False)
    summary = bulkpost.run(_frame(), MAPPING, tmp_path / "r.csv",
                           access_key="demo-access-key", secret_key=SECRET)
    assert summary.exit_code == 0 and summary.posted == 4
    assert summary.rate == {"single": "25/5s (documented maximum)"}  # no 429: nothing learnt


def test_without_host_a_stale_cached_host_is_dropped_and_the_host_found_again(
        tmp_path: Path, make_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from bulkpost.onboarding.region import HostCache

    # The cache says Singapore; the account is in Mumbai now, and Singapore refuses.
    singapore = make_sandbox(region="api.leadsquared.com",
                             home_region="api-in21.leadsquared.com")
    mumbai = make_sandbox(region="api-in21.leadsquared.com")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BULKPOST_REGION_URLS", json.dumps({
        "api.leadsquared.com": singapore.url, "api-in21.leadsquared.com": mumbai.url}))
    monkeypatch.delenv("LSQ_HOST", raising=False)
    cache = HostCache.default()
    assert cache is not None
    cache.put("demo-access-key", "api.leadsquared.com")
    summary = bulkpost.run(_frame(), MAPPING, tmp_path / "r.csv",
                           access_key="demo-access-key", secret_key=SECRET, rate="100/1s")
    assert summary.exit_code == 0 and summary.posted == 4 and len(mumbai.ledger()) == 4
    assert cache.get("demo-access-key") == "api-in21.leadsquared.com"


def test_bad_arguments_fail_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="expected a path, a pandas DataFrame"):
        bulkpost.run([1, 2], MAPPING, tmp_path / "r.csv", dry_run=True)
    with pytest.raises(UsageError, match="needs access_key"):
        bulkpost.run(_frame(), MAPPING, tmp_path / "r.csv", host="", access_key="",
                     secret_key="")
    with pytest.raises(UsageError, match="control character"):  # the CLI's key check too
        bulkpost.run(_frame(), MAPPING, tmp_path / "r.csv", host="http://127.0.0.1:9",
                     access_key="a", secret_key="sec\x01ret")
    dry = bulkpost.run(_frame(), MAPPING, tmp_path / "r.csv", dry_run=True, host="",
                       access_key="", secret_key="")
    assert dry.to_send == 4 and dry.exit_code == 0


def test_an_object_column_mixing_text_and_numbers_is_sent_as_each_value_wrote_it(
        tmp_path: Path, make_sandbox: Any) -> None:
    # What pd.concat gives when one export's codes were read as text and another's as
    # numbers: an object column of str, int, float and None (Arrow alone refuses it).
    parts = [_frame().iloc[[n]].assign(label=value) for n, value in
             enumerate(["A-1", 17, 3.5, None])]
    frame = pd.concat(parts)
    frame["n"] = pd.Series([np.int64(2**62 + 1), "x", True, 0.1], dtype=object).to_numpy()
    assert frame["label"].dtype == object and list(frame.index) == [0, 1, 2, 3]
    server = make_sandbox()
    summary = bulkpost.run(frame, MAPPING, tmp_path / "r.csv", host=server.url,
                           access_key="demo-access-key", secret_key=SECRET, rate="100/1s")
    assert summary.exit_code == 0 and summary.posted == 4
    fields = _fields(server)
    assert [fields[k]["mx_Custom_4"] for k in "ABCD"] == ["A-1", "17", "3.5", ""]
    assert [fields[k]["mx_Custom_5"] for k in "ABCD"] == [
        "4611686018427387905", "x", "true", "0.1"]


@pytest.mark.parametrize(("values", "words"), [
    ([b"\xe9t\xe9", b"x", None, None], "column 'label' holds bytes values (row 1: "
                                         "b'\\xe9t\\xe9'), which have no text form to send: "
                                         "decode it first"),
    (["x", {"a": 1}, None, None], "column 'label' holds dict values (row 2: {'a': 1})"),
    ([[1, 2], None, None, None], "df['label'].map(json.dumps, na_action='ignore')"),
    ([datetime.date(2024, 5, 1), "soon", None, None],
     "column 'label' mixes date values with text values (row 1: "),
])
def test_an_object_column_without_a_text_form_is_refused_naming_it(
        tmp_path: Path, make_sandbox: Any, values: list[Any], words: str) -> None:
    frame = _frame()
    frame["label"] = pd.Series(values, dtype=object).to_numpy()
    server = make_sandbox()
    with pytest.raises(InputError) as refused:
        bulkpost.run(frame, MAPPING, tmp_path / "r.csv", host=server.url,
                     access_key="demo-access-key", secret_key=SECRET)
    assert words in str(refused.value) and "Arrow" not in str(refused.value)
    assert refused.value.exit_code == 2
    assert server.stats()["calls"] == 0 and not (tmp_path / "r.csv").exists()


async def test_run_async_inside_a_running_loop(tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox()
    summary = await bulkpost.run_async(_frame(), MAPPING, tmp_path / "r.csv", host=server.url,
                                       access_key="demo-access-key", secret_key=SECRET,
                                       rate="100/1s")
    assert summary.posted == 4
