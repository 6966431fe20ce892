"""The results file's lines: one row's outcome a line, reading them back, compacting.

Owns the line format, and the I/O of whole files: reading one back (:func:`read_outcomes`)
and writing it compacted to one line a row (:func:`write_compacted`).
The file is a CSV with the header
``row,key,status,activity_id,http_status,error_type,error,attempts,updated_at,content_hash``;
a row's last line is its state. Rules:

- every line is one physical line (text is folded to one line): the file is read, and a
  torn line cut off, line by line;
- ``updated_at`` is UTC to the second (:data:`TIME_FORMAT`);
- a line that does not read back (wrong field count, a status or number that does not
  parse) is malformed: readers skip it, they never guess.

How the lines are made durable is :mod:`bulkpost.results`'s.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bulkpost.errors import UsageError
from bulkpost.resume import Status

HEADER = ["row", "key", "status", "activity_id", "http_status", "error_type", "error",
          "attempts", "updated_at", "content_hash"]
HEADER_LINE = (",".join(HEADER) + "\n").encode()  # the file's first line, as written
IN_FLIGHT_NOTE = "in flight: sent; no answer recorded"  # no comma: a plain line


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """One line of the results file."""

    row: int
    key: str
    status: Status
    activity_id: str = ""
    http_status: int | None = None
    error_type: str = ""
    error: str = ""
    attempts: int = 0
    content_hash: str = ""
    updated_at: str = ""


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # ``updated_at``, UTC to the second


def utc_text(second: int) -> str:
    """Unix seconds as written in ``updated_at``."""
    return datetime.fromtimestamp(second, UTC).strftime(TIME_FORMAT)


def parse_utc_text(text: str) -> datetime:
    """An ``updated_at`` value back into an aware UTC datetime; raises ValueError."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


_cached_utc_text = functools.lru_cache(maxsize=1)(utc_text)


def now_text() -> str:
    """The current UTC time to the second, as written in ``updated_at`` (formatted once a
    second: every row writes it twice)."""
    return _cached_utc_text(int(time.time()))


_NEEDS_QUOTES = frozenset(',"\r\n')


def format_line(outcome: RowOutcome) -> bytes:
    """The CSV line for one outcome, always a single physical line."""
    key, error_type, error = outcome.key, outcome.error_type, outcome.error
    if _NEEDS_QUOTES.isdisjoint(key) and _NEEDS_QUOTES.isdisjoint(error) and \
            _NEEDS_QUOTES.isdisjoint(error_type) and _NEEDS_QUOTES.isdisjoint(outcome.activity_id):
        # The common line, written two writes per row: plain fields, joined as they are.
        http = "" if outcome.http_status is None else outcome.http_status
        return (f"{outcome.row},{key},{outcome.status.value},{outcome.activity_id},{http},"
                f"{error_type},{error},{outcome.attempts},{outcome.updated_at or now_text()},"
                f"{outcome.content_hash}\n").encode()
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([
        outcome.row, _one_line(outcome.key), outcome.status.value, _one_line(outcome.activity_id),
        "" if outcome.http_status is None else outcome.http_status,
        _one_line(outcome.error_type), _one_line(outcome.error), outcome.attempts,
        outcome.updated_at or now_text(), outcome.content_hash,
    ])
    return buffer.getvalue().encode("utf-8")


def parse_line(fields: list[str]) -> RowOutcome | None:
    """A results line back into an outcome; None for a malformed (torn) line."""
    if len(fields) != len(HEADER):
        return None
    try:
        if fields[9]:
            int(fields[9], 16)  # a fingerprint that is not hex: torn, like any bad field
        return RowOutcome(
            row=int(fields[0]), key=fields[1], status=Status(fields[2]),
            activity_id=fields[3], http_status=int(fields[4]) if fields[4] else None,
            error_type=fields[5], error=fields[6], attempts=int(fields[7] or 0),
            updated_at=fields[8], content_hash=fields[9],
        )
    except ValueError:
        return None


def read_outcomes(path: str | Path) -> Iterator[RowOutcome]:
    """Every well-formed line of a results file, in file order (later lines win)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != HEADER:
            raise UsageError(f"{path}: not a bulkpost results file (header {header!r})")
        for fields in reader:
            outcome = parse_line(fields)
            if outcome is not None:
                yield outcome


def write_compacted(path: Path, offsets: Iterable[int]) -> None:
    """Rewrite the results file at ``path`` as the header and the lines starting at
    ``offsets`` (one per row, in row order), by atomic replace, durably. Raises OSError and
    leaves the file as it was."""
    temp = path.with_name(f".{path.name}.compact")
    try:
        with open(path, "rb") as source, open(temp, "wb") as target:
            target.write(HEADER_LINE)
            for offset in offsets:
                source.seek(offset)
                target.write(source.readline())
            target.flush()
            os.fsync(target.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
