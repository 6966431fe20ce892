"""A CSV input's dialect and header: how its bytes are read, and its column names.

Owns the encoding (a byte-order mark wins over ``--encoding``: UTF-8 or UTF-16; Excel writes
them), the delimiter (given, or sniffed from the header line: the most frequent of , ; tab |,
as Excel writes ; in many locales) and the header: the column names, read with a block grown
until the header fits, a file holding only a header without a line end read too, and
duplicate names refused (:class:`~bulkpost.errors.InputError`, naming the file).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa

from bulkpost.errors import InputError
from bulkpost.reading.csv_reader import (
    BLOCK_SIZE,
    MAX_BLOCK_SIZE,
    CsvReader,
    first_line,
    read_options,
)


def csv_header(path: Path, encoding: str, delimiter: str = ",") -> list[str]:
    """The column names of a CSV file's header; InputError when it cannot be read, is
    empty, or names a column twice."""
    block_size = BLOCK_SIZE
    while True:
        try:
            reader = CsvReader(path, read_options=read_options(encoding,
                                                               block_size=block_size),
                               delimiter=delimiter)
            names = list(reader.schema.names)
            reader.close()
            break
        except FileNotFoundError:
            raise InputError(f"{path}: input file not found") from None
        except LookupError:
            raise InputError(f"unknown encoding {encoding!r}") from None
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            message = first_line(exc)
            if "straddl" in message and block_size < MAX_BLOCK_SIZE:
                block_size *= 4
                continue
            if "Empty CSV file" in message:
                lone = _lone_header(path, encoding, delimiter)
                if lone is None:
                    raise InputError(f"{path}: the file is empty (no header row)") from None
                names = lone
                break
            raise InputError(f"{path}: cannot read the CSV: {message}") from None
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}: duplicate column name(s) in the header: "
                         f"{', '.join(map(repr, duplicates))}")
    return names


def _lone_header(path: Path, encoding: str, delimiter: str) -> list[str] | None:
    """The names of a file holding only a header with no line end (pyarrow calls it empty)."""
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        text = handle.read(1 << 20).lstrip("\ufeff")
    if not text.strip():
        return None
    return next(csv.reader([text], delimiter=delimiter))


def sniff_encoding(path: Path, encoding: str) -> str:
    """A byte-order mark decides the encoding, whatever was asked (Excel writes them)."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError:
        return encoding
    if start.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return encoding


def dialect(path: Path, encoding: str, delimiter: str | None) -> tuple[str, str]:
    """The encoding (a byte-order mark wins) and the delimiter (sniffed when not given)."""
    encoding = sniff_encoding(path, encoding)
    if delimiter is not None:
        if len(delimiter) != 1:
            raise InputError(f"--delimiter {delimiter!r}: give one character")
        return encoding, delimiter
    return encoding, sniff_delimiter(path, encoding)


def sniff_delimiter(path: Path, encoding: str) -> str:
    """The header line's most frequent of , ; tab | (Excel writes ; in many locales)."""
    try:
        with open(path, encoding=encoding, errors="replace", newline="") as handle:
            header = handle.readline()
    except (OSError, LookupError):
        return ","
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","
