"""The results file's line format: one row's outcome a line, written and read back.

The file is a CSV with the header
``row,key,status,activity_id,http_status,error_type,error,attempts,updated_at,content_hash``;
a row's last line is its state. Rules:

- every line is one physical line: the file is read, and a torn line cut off, line by line.
  The values a run matches on (``key``, ``activity_id``) round-trip exactly: one that holds
  a line break, or begins with ``%%``, is written escaped (:func:`escape_value`); the other
  text (``error``, ``error_type``) is folded to one line;
- ``updated_at`` is UTC to the second (:data:`TIME_FORMAT`);
- a line that does not read back (wrong field count, a status or number that does not
  parse) is damaged (:func:`parse_fields` says why).

Reading whole files and compacting them is :mod:`bulkpost.storage.results_file`'s; making lines
durable is :mod:`bulkpost.storage.results`'s.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bulkpost.core.statuses import Status

HEADER = ["row", "key", "status", "activity_id", "http_status", "error_type", "error",
          "attempts", "updated_at", "content_hash"]
HEADER_LINE = (",".join(HEADER) + "\n").encode()  # the file's first line, as written
IN_FLIGHT_NOTE = "in flight: sent; no answer recorded"  # no comma: a plain line
ESCAPED = "%%"  # the mark of an escaped key or activity Id (:func:`escape_value`)


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


def escape_value(text: str) -> str:
    """A key or activity Id as written: as it is, unless it holds a line break (or begins
    with the mark): then ``%%`` and the text with ``%``, CR and LF as ``%25``, ``%0D`` and
    ``%0A``. Reversed exactly by :func:`unescape_value`."""
    if "\n" not in text and "\r" not in text and not text.startswith(ESCAPED):
        return text
    return ESCAPED + text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


_ESCAPE = re.compile("%(25|0D|0A)")
_UNESCAPED = {"25": "%", "0D": "\r", "0A": "\n"}


def unescape_value(text: str) -> str:
    """A written key or activity Id back as it was. Only what :func:`escape_value` writes
    is read as escaped: a value of a file written before escapes (which cannot hold a line
    break) reads as it is, unless it has exactly that form."""
    if not text.startswith(ESCAPED):
        return text
    value = _ESCAPE.sub(lambda match: _UNESCAPED[match.group(1)], text[len(ESCAPED):])
    return value if escape_value(value) == text else text


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
            _NEEDS_QUOTES.isdisjoint(error_type) and \
            _NEEDS_QUOTES.isdisjoint(outcome.activity_id) and not key.startswith(ESCAPED) \
            and not outcome.activity_id.startswith(ESCAPED):
        # The common line, written two writes per row: plain fields, joined as they are.
        http = "" if outcome.http_status is None else outcome.http_status
        return (f"{outcome.row},{key},{outcome.status.value},{outcome.activity_id},{http},"
                f"{error_type},{error},{outcome.attempts},{outcome.updated_at or now_text()},"
                f"{outcome.content_hash}\n").encode()
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([
        outcome.row, escape_value(outcome.key), outcome.status.value,
        escape_value(outcome.activity_id),
        "" if outcome.http_status is None else outcome.http_status,
        _one_line(outcome.error_type), _one_line(outcome.error), outcome.attempts,
        outcome.updated_at or now_text(), outcome.content_hash,
    ])
    return buffer.getvalue().encode("utf-8")


def parse_fields(fields: list[str]) -> RowOutcome:
    """A results line's fields back into an outcome; raises ValueError saying what is
    damaged."""
    if len(fields) != len(HEADER):
        raise ValueError(f"{len(fields)} fields, not {len(HEADER)}")
    row, status, http, attempts, content_hash = (fields[0], fields[2], fields[4], fields[7],
                                                 fields[9])
    if not row.isascii() or not row.isdigit() or int(row) < 1:
        raise ValueError(f"row {row!r} is not a row number")
    if status not in _STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(_STATUSES)} (written "
                         "by a newer bulkpost? then upgrade)")
    if http and not (http.isascii() and http.isdigit()):
        raise ValueError(f"http_status {http!r} is not a number")
    if attempts and not (attempts.isascii() and attempts.isdigit()):
        raise ValueError(f"attempts {attempts!r} is not a number")
    if content_hash and not (len(content_hash) <= 16 and all(
            c in "0123456789abcdefABCDEF" for c in content_hash)):
        raise ValueError(f"content_hash {content_hash!r} is not a fingerprint (hex digits)")
    return RowOutcome(
        row=int(row), key=unescape_value(fields[1]), status=Status(status),
        activity_id=unescape_value(fields[3]), http_status=int(http) if http else None,
        error_type=fields[5], error=fields[6], attempts=int(attempts or 0),
        updated_at=fields[8], content_hash=content_hash,
    )


_STATUSES = {status.value: status for status in Status}


def parse_line(fields: list[str]) -> RowOutcome | None:
    """A results line back into an outcome; None for a damaged line."""
    try:
        return parse_fields(fields)
    except ValueError:
        return None


def split_line(raw: bytes) -> list[str]:
    """A physical line's fields (the csv module's reading, for a line with quotes)."""
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    if '"' not in text:
        return text.split(",")
    return next(csv.reader([text]), [])
