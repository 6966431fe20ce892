"""Reading inputs: every CSV cell arrives as written, Parquet values in faithful form."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkpost.errors import InputError
from bulkpost.reading import csv_reader as reader_module
from bulkpost.reading.csv_reader import CsvReader
from bulkpost.reading.source import RowBatch, count_rows, input_columns, open_source


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


def test_parquet_dates_times_and_timestamps_are_typed(tmp_path: Path) -> None:
    from datetime import date, datetime, time

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "day": pa.array([date(2024, 3, 13)], pa.date32()),
        "clock": pa.array([time(14, 5, 33, 250000)], pa.time64("us")),
        "at": pa.array([datetime(2024, 3, 13, 14, 5)], pa.timestamp("ms")),
        "text": pa.array(["14:05:33"]),
    }), path)
    columns = ["day", "clock", "at", "text"]
    assert open_source(path, columns).typed_columns == {"day", "clock", "at"}
    assert _rows(path, columns) == {1: {"day": "2024-03-13", "clock": "14:05:33",
                                        "at": "2024-03-13 14:05:00", "text": "14:05:33"}}


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


def test_a_cell_that_is_not_utf8_spoils_only_its_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\n1,ok\n2,\xff\xfe bad\n3,fine\n")
    batches = _all(path, ["a", "b"])
    assert [row for batch in batches for row in batch.rows] == [1, 3]
    [(row, reason)] = [item for batch in batches for item in batch.broken]
    assert row == 2 and "'b' is not valid UTF-8" in reason


def test_a_cell_larger_than_a_block_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    big = "x" * 3_000_000
    path.write_text("a,b\n" + "".join(f"{n},v{n}\n" for n in range(1, 20_000))
                    + f"20000,{big}\n20001,y\n1,2,3\n20003,z\n")
    assert input_columns(path) == ["a", "b"]
    rows = _rows(path, ["a", "b"])
    assert len(rows) == 20_002 and rows[20_000]["b"] == big
    assert rows[20_001] == {"a": "20001", "b": "y"} and rows[20_003]["a"] == "20003"
    assert 20_002 not in rows  # the ragged row, reported broken under its own number


cells = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(cells, cells), min_size=1, max_size=30))
def test_any_csv_cell_arrives_exactly_as_written(tmp_path_factory: pytest.TempPathFactory,
                                                 table: list[tuple[str, str]]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "in.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(["a", "b"])
        writer.writerows(table)
    rows = _rows(path, ["a", "b"])
    # \r\n and \r inside quoted cells are newlines to a CSV reader: compare with \n.
    expected = [(a.replace("\r\n", "\n"), b.replace("\r\n", "\n")) for a, b in table]
    got = [(rows[n]["a"].replace("\r\n", "\n"), rows[n]["b"].replace("\r\n", "\n"))
           for n in sorted(rows)]
    assert got == expected


# pyarrow reports a ragged row that is also not UTF-8 as an "unraisable" exception before it
# fails the read with a clear error of its own, which is what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_rows_or_a_clear_error(tmp_path_factory: pytest.TempPathFactory,
                                             content: bytes) -> None:
    path = tmp_path_factory.mktemp("junk") / "junk.csv"
    path.write_bytes(b"a,b\n" + content)
    try:
        batches = _all(path, ["a", "b"])
    except InputError as exc:
        assert "junk.csv" in str(exc)
        return
    numbers = sorted([r for b in batches for r in b.rows] + [r for b in batches
                                                               for r, _ in b.broken])
    assert numbers == list(range(1, len(numbers) + 1))  # every record, numbered once


@pytest.mark.parametrize(("header", "delimiter"), [
    ("a,b,c", ","), ("a;b;c", ";"), ("a\tb\tc", "\t"), ("a|b|c", "|"), ("a", ","),
    ("x;y,z", ","),  # a tie keeps the comma
])
def test_the_delimiter_is_sniffed_from_the_header(tmp_path: Path, header: str,
                                                  delimiter: str) -> None:
    from bulkpost.reading.csv_dialect import sniff_delimiter

    path = tmp_path / "in.csv"
    path.write_text(header + "\n")
    assert sniff_delimiter(path, "utf-8") == delimiter


def test_an_excel_export_with_semicolons_in_cp1252(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("name;amount;note\r\nJosé;12,5;\"a; b\"\r\n".encode("cp1252"))
    assert input_columns(path, encoding="cp1252") == ["name", "amount", "note"]
    assert _rows(path, ["name", "amount", "note"], encoding="cp1252") == {
        1: {"name": "José", "amount": "12,5", "note": "a; b"}}
    # An explicit delimiter wins over the sniff.
    assert input_columns(path, encoding="cp1252", delimiter=",") == ["name;amount;note"]


# -- letting go of pyarrow's reader (a reader dropped on its I/O thread while Python
# finalizes aborts the process: "terminate called without an active exception") --------
def _many_blocks(path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Lead", "Note"])
        writer.writerows([f"lead-{n}", "x" * 200] for n in range(20_000))  # ~4 MiB: 16 blocks
    return path


def test_a_reader_closed_after_its_first_batch_is_let_go_by_pyarrow(tmp_path: Path) -> None:
    data = _many_blocks(tmp_path / "in.csv")
    reader = CsvReader(data, read_options=pcsv.ReadOptions(use_threads=False,
                                                           block_size=1 << 18),
                       delimiter=",")
    first = next(iter(reader))  # pyarrow reads the next block ahead meanwhile
    assert first.num_rows > 0
    assert reader.close() is True  # pyarrow has let go of the row handler


def test_a_source_read_in_part_lets_go_of_its_reader_when_closed(tmp_path: Path) -> None:
    data = _many_blocks(tmp_path / "in.csv")
    with open_source(data, ["Lead"]) as source:
        batch = source.next_batch()
        assert batch is not None and batch.rows[0] == 1
        assert len(reader_module._OPEN_READERS) == 1
    assert len(reader_module._OPEN_READERS) == 0
    assert source.next_batch() is None  # closed: nothing more, no error


def test_readers_left_open_are_let_go_before_python_finalizes(tmp_path: Path) -> None:
    data = _many_blocks(tmp_path / "in.csv")
    source = open_source(data, ["Lead"])
    assert source.next_batch() is not None
    assert input_columns(data) == ["Lead", "Note"]  # the header's reader is closed at once
    [left] = list(reader_module._OPEN_READERS)
    reader_module._close_open_readers()  # what runs at exit, before Python finalizes
    assert left._released.is_set() and len(reader_module._OPEN_READERS) == 0
