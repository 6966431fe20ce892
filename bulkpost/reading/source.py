"""Reading input files as a stream of row batches, every value a faithful string.

Owns the file formats: CSV through pyarrow's streaming reader with every column typed as
a string (no inference, no null markers, quoted commas and newlines kept, any Python
encoding; a byte-order mark wins over ``--encoding``: UTF-8 or UTF-16; the delimiter given
or sniffed from the header: , ; tab |), Parquet through
``iter_batches`` with column projection. Rows are numbered from 1 in data order; a CSV row
with the wrong number of cells, or with a cell that is not valid UTF-8, is reported as a
broken row under its own number and never shifts the numbers of the rows after it. A row
larger than the read block makes the reader restart with larger blocks where it stopped.

This module blocks; the pipeline calls :meth:`Source.next_batch` in a worker thread.

The encoding, delimiter and header of a CSV are :mod:`bulkpost.reading.csv_dialect`'s; every
CSV reader is opened and let go by :class:`~bulkpost.reading.csv_reader.CsvReader` (a reader
dropped on pyarrow's I/O thread while Python finalizes aborts the process): a
:class:`Source` closes its reader when it is closed (or read to the end).
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from bulkpost.core.options import InputSource
from bulkpost.errors import InputError
from bulkpost.reading.cells import check_supported, is_utc_timestamp, to_strings
from bulkpost.reading.csv_dialect import csv_header, dialect
from bulkpost.reading.csv_reader import (
    BLOCK_SIZE,
    MAX_BLOCK_SIZE,
    CsvReader,
    first_line,
    read_options,
)

PARQUET_BATCH_ROWS = 8192


@dataclass(slots=True)
class RowBatch:
    """Consecutive input rows: their numbers, the used columns' strings, broken rows."""

    rows: list[int]
    columns: dict[str, list[str]]
    broken: list[tuple[int, str]] = field(default_factory=list)  # (row, reason)
    broken_columns: dict[int, str] = field(default_factory=dict)  # row: the cell's column


class Source:
    """An opened input file: its columns, its row count if cheap to know, its batches."""

    def __init__(self, path: Path | str, columns: list[str], total_rows: int | None,
                 utc_columns: frozenset[str], batches: Iterator[RowBatch],
                 typed_columns: frozenset[str] = frozenset()) -> None:
        self.path = path
        self.columns = columns
        self.total_rows = total_rows
        self.utc_columns = utc_columns  # zone-aware timestamps, already formatted in UTC
        self.typed_columns = typed_columns  # dates, times, timestamps: in ISO form
        self._batches = batches
        self._lock = threading.Lock()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading: the input is let go (a source read to its end is already)."""
        with self._lock:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()

    def next_batch(self) -> RowBatch | None:
        """The next batch, or None at the end. Raises :class:`InputError` if unreadable."""
        with self._lock:
            try:
                return next(self._batches)
            except StopIteration:
                return None
            except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as exc:
                raise InputError(f"{self.path}: {first_line(exc)}") from None


def describe(source: InputSource) -> str:
    """How messages name an input: its path, or what kind of data it is."""
    if isinstance(source, pa.Table):
        return f"<table of {source.num_rows} rows>"
    if isinstance(source, pa.RecordBatchReader):
        return "<record batch stream>"
    return str(source)


def regular_file(path: Path) -> Path:
    """``path``, refused (InputError) when it names a pipe, a socket or a device: an input
    is read more than once (its header, a check before sending, a resume), and opening a
    pipe would wait for a writer for ever. A missing file is left to the reader to say."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return path
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a directory"
                if stat.S_ISDIR(mode) else "not a regular file")
        raise InputError(f"{path}: {kind}: bulkpost reads its input more than once (its "
                         "header, a check before sending, a resume), so it needs a regular "
                         "file: write the data to a file first, then give that file")
    return path


def input_columns(path: InputSource, *, encoding: str = "utf-8",
                  delimiter: str | None = None) -> list[str]:
    """The column names of an input, without reading its rows."""
    if isinstance(path, pa.Table | pa.RecordBatchReader):
        return list(path.schema.names)
    path = regular_file(Path(path))
    if _is_parquet(path):
        return list(_parquet_file(path).schema_arrow.names)
    return csv_header(path, *dialect(path, encoding, delimiter))


def open_source(path: InputSource, columns: list[str], *, encoding: str = "utf-8",
                delimiter: str | None = None) -> Source:
    """Open an input (CSV or Parquet by extension, or Arrow data) to read ``columns``."""
    if isinstance(path, pa.Table):
        return _open_typed(describe(path), path.schema, columns, path.num_rows,
                           iter(path.select(columns).to_batches(PARQUET_BATCH_ROWS)))
    if isinstance(path, pa.RecordBatchReader):
        reader = path
        return _open_typed(describe(reader), reader.schema, columns, None,
                           (batch.select(columns) for batch in reader))
    path = regular_file(Path(path))
    if _is_parquet(path):
        parquet = _parquet_file(path)
        return _open_typed(str(path), parquet.schema_arrow, columns, parquet.metadata.num_rows,
                           parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS,
                                                columns=columns, use_threads=False))
    return _open_csv(path, columns, *dialect(path, encoding, delimiter))


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq", ".parq"}


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise InputError(f"{path}: input file not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {first_line(exc)}") from None


def _open_typed(name: str, schema: pa.Schema, columns: list[str], total: int | None,
                record_batches: Iterator[pa.RecordBatch]) -> Source:
    """A source over typed Arrow batches (Parquet, a Table, a stream)."""
    for column in columns:
        check_supported(schema.field(column), name)
    utc = frozenset(n for n in columns if is_utc_timestamp(schema.field(n).type))
    typed = frozenset(n for n in columns if pa.types.is_timestamp(schema.field(n).type)
                      or pa.types.is_date(schema.field(n).type)
                      or pa.types.is_time(schema.field(n).type))

    def batches() -> Iterator[RowBatch]:
        next_row = 1
        for record_batch in record_batches:
            count = record_batch.num_rows
            yield RowBatch(
                rows=list(range(next_row, next_row + count)),
                columns={n: to_strings(record_batch.column(n)) for n in columns},
            )
            next_row += count

    return Source(name, list(schema.names), total, utc, batches(), typed)


def _open_csv(path: Path, columns: list[str], encoding: str, delimiter: str = ",") -> Source:
    names = csv_header(path, encoding, delimiter)
    broken: dict[int, str] = {}

    def on_invalid_row(row: Any) -> str:
        # pyarrow numbers records from 1 with the header as record 1.
        number = row.number - 1 if row.number is not None else -1
        text = row.text if len(row.text) <= 200 else row.text[:200] + "…"
        broken[number] = (f"row has {row.actual_columns} cells, the header has "
                          f"{row.expected_columns}: {text!r}")
        return "skip"

    # Binary, not string: a cell that is not valid UTF-8 then spoils only its own row.
    convert = pcsv.ConvertOptions(
        column_types={n: pa.binary() for n in columns},
        include_columns=columns,
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        null_values=[],
    )

    def batches() -> Iterator[RowBatch]:
        block_size = BLOCK_SIZE
        next_row = 1
        while True:
            try:
                # After a restart, skip the records already numbered (broken ones included).
                reader = CsvReader(path, delimiter=delimiter, convert_options=convert,
                                   on_invalid_row=on_invalid_row,
                                   read_options=read_options(
                                       encoding, block_size=block_size,
                                       skip_rows_after_names=next_row - 1))
                for record_batch in reader:
                    count = record_batch.num_rows
                    rows: list[int] = []
                    skipped: list[tuple[int, str]] = []
                    while len(rows) < count:
                        if next_row in broken:
                            skipped.append((next_row, broken.pop(next_row)))
                        else:
                            rows.append(next_row)
                        next_row += 1
                    yield _decoded(rows, record_batch, columns, skipped)
                break
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc):
                    return
                if "straddl" in str(exc) and block_size < MAX_BLOCK_SIZE:
                    block_size *= 4  # a cell larger than a block: read bigger blocks
                    continue
                raise
        tail = sorted(broken.items())
        broken.clear()
        if tail:
            yield RowBatch([], {n: [] for n in columns}, tail)

    return Source(path, names, None, frozenset(), batches())


NOT_UTF8 = "is not valid UTF-8"  # in the reason of a row with such a cell


def _decoded(rows: list[int], batch: pa.RecordBatch, columns: list[str],
             broken: list[tuple[int, str]]) -> RowBatch:
    """Binary CSV cells as text; a row with a cell that is not UTF-8 becomes broken."""
    texts: dict[str, list[str]] = {}
    bad: dict[int, str] = {}
    bad_column: dict[int, str] = {}
    for name in columns:
        cells = batch.column(name)
        try:
            texts[name] = cells.cast(pa.string()).to_pylist()
        except pa.ArrowInvalid:
            values: list[str] = []
            for index, raw in enumerate(cells.to_pylist()):
                try:
                    values.append(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    values.append("")
                    bad_column.setdefault(index, name)
                    bad.setdefault(index, f"column {name!r} {NOT_UTF8} (byte "
                                          f"{exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                                          "is --encoding right?")
            texts[name] = values
    if not bad:
        return RowBatch(rows, texts, broken)
    keep = [i for i in range(len(rows)) if i not in bad]
    broken = sorted([*broken, *((rows[i], reason) for i, reason in bad.items())])
    return RowBatch([rows[i] for i in keep], {n: [v[i] for i in keep] for n, v in texts.items()},
                    broken, {rows[i]: name for i, name in bad_column.items()})


def distinct_values(path: InputSource, column: str, *, encoding: str = "utf-8",
                    delimiter: str | None = None, limit: int = 1000) -> set[str]:
    """The distinct values of one column (stripped), reading only that column."""
    source = open_source(path, [column], encoding=encoding, delimiter=delimiter)
    values: set[str] = set()
    while (batch := source.next_batch()) is not None:
        values.update(v.strip() for v in batch.columns[column])
        if len(values) > limit:
            raise InputError(f"{path}: column {column!r} holds more than {limit} distinct "
                             "values; is it really the event code?")
    return values


def count_rows(path: InputSource, *, encoding: str = "utf-8",
               delimiter: str | None = None) -> int | None:
    """Count the data rows of an input (for the progress bar); None if it cannot."""
    if isinstance(path, pa.Table):
        return int(path.num_rows)
    if isinstance(path, pa.RecordBatchReader):
        return None  # a stream is read once, by the run
    path = Path(path)
    try:
        if _is_parquet(path):
            return int(_parquet_file(path).metadata.num_rows)
        encoding, delimiter = dialect(path, encoding, delimiter)
        names = csv_header(path, encoding, delimiter)
        reader = CsvReader(
            path, read_options=read_options(encoding), delimiter=delimiter,
            convert_options=pcsv.ConvertOptions(include_columns=names[:1],
                                                column_types={names[0]: pa.string()}))
        return sum(int(batch.num_rows) for batch in reader)
    except (InputError, pa.ArrowException, OSError, UnicodeDecodeError, IndexError):
        return None
