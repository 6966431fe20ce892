"""Reading inputs: every CSV cell arrives as written, Parquet values in faithful form."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulkpost.errors import InputError
from bulkpost.source import RowBatch, count_rows, input_columns, open_source


def _all(path: Path, columns: list[str], **options: str) -> list[RowBatch]:
    source = open_source(path, columns, **options)
    batches = []
    while (batch := source.next_batch()) is not None:
        batches.append(batch)
    return batches


def _rows(path: Path, columns: list[str], **options: str) -> dict[int, dict[str, str]]:
    rows: dict[int, dict[str, str]] = {}
    for batch in _all(path, columns, **options):
        for index, row in enumerate(batch.rows):
            rows[row] = {c: batch.columns[c][index] for c in columns}
    return rows


def test_csv_cells_arrive_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        "\ufeffid,value\n"
        '1,00123\n2,NA\n3,null\n4,\n5,12345678901234567890\n6,"a, b"\n7,"line1\nline2"\n'
        '8,"say ""hi"""\n9,  padded  \n10,1e5\n11,Ünïcødé ✓\n12,""\n'.encode())
    assert input_columns(path) == ["id", "value"]  # BOM stripped from the first name
    rows = _rows(path, ["id", "value"])
    assert [rows[n]["value"] for n in range(1, 13)] == [
        "00123", "NA", "null", "", "12345678901234567890", "a, b", "line1\nline2",
        'say "hi"', "  padded  ", "1e5", "Ünïcødé ✓", ""]


def test_csv_other_encodings(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("name,note\nJosé,café – 5 €\n".encode("cp1252"))
    assert _rows(path, ["name", "note"], encoding="cp1252") == {
        1: {"name": "José", "note": "café – 5 €"}}


def test_csv_ragged_rows_keep_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text('a,b\n1,2\n3\n4,"x\ny"\n5,6,7\n8,9\n10\n')
    batches = _all(path, ["a", "b"])
    good = [row for batch in batches for row in batch.rows]
    broken = [row for batch in batches for row, _ in batch.broken]
    assert good == [1, 3, 5]
    assert broken == [2, 4, 6]
    reasons = [reason for batch in batches for _, reason in batch.broken]
    assert reasons[0] == "row has 1 cells, the header has 2: '3'"
    assert _rows(path, ["a", "b"])[3] == {"a": "4", "b": "x\ny"}


def test_csv_reads_only_the_mapped_columns(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("a,b,c\n1,2,3\n")
    assert _rows(path, ["c"]) == {1: {"c": "3"}}


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"),
    (b"a,a,b\n1,2,3\n", "duplicate column"),
])
def test_csv_unreadable_files_are_clear_errors(tmp_path: Path, content: bytes,
                                               message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        open_source(path, ["a"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        input_columns(tmp_path / "nope.csv")


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("a,b\n")
    assert _rows(path, ["a"]) == {}
    assert count_rows(path) == 0


def test_count_rows_counts_records_not_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('a,b\n1,"x\ny"\n2,z\n')
    assert count_rows(path) == 2


def test_parquet_values_and_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.table({
        "n": pa.array([1, None, 3], pa.int64()),
        "s": pa.array(["00123", None, "x"]),
        "d": pa.array(["a", "b", "a"]).dictionary_encode(),
        "f": pa.array([1.5, 2.0, None]),
    })
    pq.write_table(table, path, row_group_size=2)
    source = open_source(path, ["n", "s", "d", "f"])
    assert source.total_rows == 3
    assert _rows(path, ["n", "s", "d", "f"]) == {
        1: {"n": "1", "s": "00123", "d": "a", "f": "1.5"},
        2: {"n": "", "s": "", "d": "b", "f": "2"},
        3: {"n": "3", "s": "x", "d": "a", "f": ""},
    }


def test_parquet_unsupported_column_type_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"tags": pa.array([["a", "b"]])}), path)
    with pytest.raises(InputError, match="'tags'"):
        open_source(path, ["tags"])


def test_truncated_parquet_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(InputError, match=r"cut\.parquet"):
        open_source(path, ["a"])
