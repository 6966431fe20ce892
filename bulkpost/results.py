"""The results file: every row's outcome, durable, resumable.

Owns the file format and its durability. The file is a CSV append-only log with the header
``row,key,status,activity_id,http_status,error_type,error,attempts,updated_at,content_hash``;
a row's last line is its state. Rules:

- every line is one physical line (text is folded to one line); the lines recorded while
  the event loop turns are written together, with one ``write`` on an ``O_APPEND``
  descriptor, and fsynced together (group commit), so ``kill -9`` can tear at most the
  last line, which the next open cuts off;
- before a row's request is sent, its ``unknown`` line is on disk (the row waits for its
  group's fsync), so a crash leaves the row ``unknown``, never silently re-sendable;
- the other lines are written at the end of the loop turn that recorded them and fsynced
  in groups of 64: a ``kill -9`` loses at most one turn's outcomes, whose rows are then
  ``unknown`` from their durable marks, so the next run reconciles them, never re-sends;
- a companion store (the history, ``--history``) is committed in the same group commits,
  after the fsync: a row's claim there is durable before its request goes out;
- a lock file beside it keeps a second run out;
- at the end the log is compacted, by atomic replace, to one line per row; after a failed
  write it is not (the log as written is valid, the memory of it is not).

In memory the log keeps only compact per-row arrays (status, content hash, key digest,
digest of the activity Id a posted row holds, offset of the row's last line), so resuming
a million rows stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import os
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from bulkpost.errors import ResultsLocked, ResultsWriteError, UsageError
from bulkpost.locking import lock_beside, release
from bulkpost.resume import Previous, Status, key_digest

HEADER = ["row", "key", "status", "activity_id", "http_status", "error_type", "error",
          "attempts", "updated_at", "content_hash"]
_HEADER_LINE = (",".join(HEADER) + "\n").encode()
_STATUS_CODES = {status: index for index, status in enumerate(Status, start=1)}
_STATUS_BY_CODE = {index: status for status, index in _STATUS_CODES.items()}
_CODES_BY_TEXT = {status.value: index for status, index in _STATUS_CODES.items()}
_POSTED = _STATUS_CODES[Status.POSTED]
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


class Companion(Protocol):
    """A store made durable with the results file's group commits (the history)."""

    def take(self) -> Any:
        """The writes recorded so far; called on the event loop."""

    def commit(self, batch: Any) -> None:
        """Make them durable; called in a worker thread. Raises ResultsWriteError."""


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


class ResultsLog:
    """The open results file of one run. Not thread-safe: use it from the event loop."""

    def __init__(self, path: str | Path, companion: Companion | None = None) -> None:
        self.path = Path(path)
        self._companion = companion
        self._status = array("b")
        self._hash = array("Q")
        self._key = array("Q")
        self._id = array("Q")  # digest of the activity Id a posted row holds; 0: none
        self._offset = array("q")
        self._fd = -1
        self._lock_fd = -1
        self._size = 0            # bytes recorded: written, and buffered after them
        self._synced = 0          # bytes known to be on disk
        self._sync_task: asyncio.Task[None] | None = None
        self._buffer: list[bytes] = []  # lines recorded, not yet written
        self._flush_scheduled = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (bytes, woken once synced)
        self._pending_outcomes = 0  # recorded since the last fsync was started
        self._written = 0         # bytes in the file
        self._failure: ResultsWriteError | None = None  # a background fsync that failed
        self.torn_lines = 0

    # -- opening -----------------------------------------------------------------------
    def open(self) -> ResultsLog:
        """Lock the file, load what earlier runs recorded, and get ready to append."""
        self._lock_fd = lock_beside(self.path, "results file", ResultsLocked)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._load()
        except OSError as exc:
            self.close()
            raise UsageError(f"{self.path}: cannot open the results file: {exc.strerror}") from None
        except ResultsWriteError as exc:
            self.close()
            raise UsageError(str(exc)) from None
        except UsageError:
            self.close()
            raise
        return self

    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._append(_HEADER_LINE)
            os.fsync(self._fd)
            self._synced = self._size
            return
        with open(self.path, "rb") as handle:
            first = handle.readline()
            if not first.endswith(b"\n") and _HEADER_LINE.startswith(first):
                # Torn while the header itself was written: start the file afresh.
                os.ftruncate(self._fd, 0)
                self._size = self._written = 0
                self._append(_HEADER_LINE)
                os.fsync(self._fd)
                self._synced = self._size
                return
            if first.rstrip(b"\r\n") != _HEADER_LINE.rstrip(b"\n"):
                raise UsageError(f"{self.path}: not a bulkpost results file "
                                 f"(first line {first[:80]!r})")
            offset = self._replay(handle, len(first))
        self._size = self._synced = self._written = offset

    def _replay(self, handle: BinaryIO, offset: int) -> int:
        """Remember every line after the header; return where appending starts.

        A resume of a million lines is dominated by this loop, so the common line (no
        quotes, hence no comma or line break inside a field) is split directly and stored
        without building an outcome; quoted lines go through the csv module.
        """
        codes, width = _CODES_BY_TEXT, len(HEADER)
        for raw in handle:
            if not raw.endswith(b"\n"):
                # A torn last line from a crash: cut it off before appending.
                self.torn_lines += 1
                os.ftruncate(self._fd, offset)
                break
            text = raw.decode("utf-8", "replace")
            if '"' in text:
                outcome = parse_line(next(csv.reader([text]), []))
                if outcome is None:
                    self.torn_lines += 1
                else:
                    self._remember(outcome, offset)
                offset += len(raw)
                continue
            fields = text.rstrip("\r\n").split(",")
            try:
                if len(fields) != width:
                    raise ValueError
                row, code = int(fields[0]), codes[fields[2]]
                if fields[4]:
                    int(fields[4])
                if fields[7]:
                    int(fields[7])
                content_hash = int(fields[9], 16) if fields[9] else 0
            except (ValueError, KeyError):
                self.torn_lines += 1
            else:
                self._set(row, code, content_hash, fields[1], offset, fields[3])
            offset += len(raw)
        return offset

    # -- state -------------------------------------------------------------------------
    def _remember(self, outcome: RowOutcome, offset: int) -> None:
        self._set(outcome.row, _STATUS_CODES[outcome.status],
                  int(outcome.content_hash, 16) if outcome.content_hash else 0,
                  outcome.key, offset, outcome.activity_id)

    def _set(self, row: int, code: int, content_hash: int, key: str, offset: int,
             activity_id: str) -> None:
        if row < 1:
            return
        if row >= len(self._status):
            grow = max(row + 1, 2 * len(self._status)) - len(self._status)
            self._status.frombytes(bytes(grow))
            self._hash.frombytes(bytes(8 * grow))
            self._key.frombytes(bytes(8 * grow))
            self._id.frombytes(bytes(8 * grow))
            self._offset.frombytes(b"\xff" * (8 * grow))  # -1: no line
        self._status[row] = code
        self._hash[row] = content_hash
        self._key[row] = key_digest(key) if key else 0
        # Only a posted row holds its activity: a skipped line names another row's.
        self._id[row] = key_digest(activity_id) if activity_id and code == _POSTED else 0
        self._offset[row] = offset

    def previous(self, row: int) -> Previous | None:
        """What an earlier run (or this one) recorded last for ``row``."""
        try:
            code = self._status[row]
        except IndexError:
            return None
        if not code:
            return None
        content_hash = self._hash[row]
        return Previous(_STATUS_BY_CODE[code], f"{content_hash:016x}" if content_hash else "",
                        self._key[row])

    def last_posted_row(self) -> int:
        """The highest row number recorded ``posted`` with a content hash (0: none)."""
        codes = np.frombuffer(self._status, dtype=np.int8)
        posted = np.flatnonzero((codes == _POSTED) & (np.frombuffer(self._hash,
                                                                    dtype=np.uint64) != 0))
        return int(posted[-1]) if len(posted) else 0

    def holds(self, activity_id: str) -> bool:
        """Whether a posted row holds this activity: then no other row may claim it.

        Compared by digest, over a compact per-row array (8 bytes a row), so a resume need
        not hold a million activity Ids in memory; a look-up asks for a few Ids at most.
        """
        if not activity_id:
            return False
        ids = np.frombuffer(self._id, dtype=np.uint64)
        return bool(np.any(ids == np.uint64(key_digest(activity_id))))

    def last_outcome(self, row: int) -> RowOutcome | None:
        """The row's last line, read back from the file."""
        if row >= len(self._status) or not self._status[row]:
            return None
        offset, chunk = self._offset[row], b""
        if offset >= self._written:
            self._flush()  # the line is still in the buffer
        while not chunk.endswith(b"\n"):
            more = os.pread(self._fd, 4096, offset + len(chunk))
            if not more:
                break
            chunk += more
            if b"\n" in chunk:
                chunk = chunk[:chunk.index(b"\n") + 1]
        fields = next(csv.reader([chunk.decode("utf-8", "replace")]), [])
        return parse_line(fields)

    def counts(self) -> dict[Status, int]:
        """How many rows are in each status now."""
        totals = dict.fromkeys(Status, 0)
        for code in self._status:
            if code:
                totals[_STATUS_BY_CODE[code]] += 1
        return totals

    # -- writing -----------------------------------------------------------------------
    def _append(self, data: bytes) -> None:
        """Write ``data`` at the end of the file now (the header, and each group)."""
        if self._failure is not None:
            raise self._failure
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            self._failure = ResultsWriteError(f"{self.path}: cannot write the results file "
                                              f"({exc.strerror}); stopped sending")
            raise self._failure from None
        if written != len(data):
            # Cut the partial line off, so that nothing can be appended to it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._written)
            self._failure = ResultsWriteError(f"{self.path}: cannot write the results file "
                                              "(short write: disk full?); stopped sending")
            raise self._failure
        self._written += written
        self._size = max(self._size, self._written)

    def _flush(self) -> None:
        """Write the buffered lines, as one write."""
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._append(data)

    def record(self, outcome: RowOutcome) -> None:
        """Append an outcome; it is written and synced with the group now forming."""
        if self._failure is not None:
            raise self._failure
        line = format_line(outcome)
        self._buffer.append(line)
        self._remember(outcome, self._size)
        self._size += len(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used without an event loop (reports, tests): write now
            self._flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush_soon)
        self._pending_outcomes += 1
        if self._pending_outcomes >= 64:
            self._pending_outcomes = 0
            self._start_sync()

    def _flush_soon(self) -> None:
        """Write this loop turn's lines (a failure is kept and raised by the next call)."""
        self._flush_scheduled = False
        with contextlib.suppress(ResultsWriteError):
            self._flush()

    async def mark_in_flight(self, row: int, key: str, content_hash: str,
                             attempts: int = 0) -> None:
        """Record the row as ``unknown`` and wait until that is on disk."""
        self.record(RowOutcome(row, key, Status.UNKNOWN, error=IN_FLIGHT_NOTE,
                               attempts=attempts, content_hash=content_hash))
        await self.sync()

    def _start_sync(self) -> asyncio.Task[None]:
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_once())
            # The failure is kept in _failure; retrieve it here so asyncio does not warn.
            self._sync_task.add_done_callback(
                lambda task: task.cancelled() or task.exception())
        return self._sync_task

    async def _sync_once(self) -> None:
        """Group commit: write the lines recorded so far in one write, fsync, wake those
        waiting for them; again while others came to wait meanwhile."""
        while True:
            target = self._size
            try:
                self._flush()
                batch = self._companion.take() if self._companion is not None else None
                await asyncio.to_thread(self._make_durable, batch)
            except OSError as exc:
                # Kept, so that the next write fails too even if nobody awaits this task.
                self._failure = ResultsWriteError(f"{self.path}: cannot sync the results "
                                                  f"file ({exc.strerror}); stopped sending")
            except ResultsWriteError as exc:
                self._failure = self._failure or exc  # _append keeps its own
            if self._failure is not None:
                for _, waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_exception(self._failure)
                self._waiters.clear()
                raise self._failure
            self._synced = max(self._synced, target)
            waiting = []
            for until, waiter in self._waiters:
                if until > self._synced:
                    waiting.append((until, waiter))
                elif not waiter.done():  # done: its caller was cancelled
                    waiter.set_result(None)
            self._waiters = waiting
            if not waiting:
                return

    def _make_durable(self, batch: Any) -> None:
        os.fsync(self._fd)
        if self._companion is not None:
            self._companion.commit(batch)

    async def sync(self) -> None:
        """Return once everything recorded so far is on disk (one fsync serves many)."""
        target = self._size
        if self._synced >= target:
            return
        if self._failure is not None:
            raise self._failure
        # A future of our own: cancelling this caller must not cancel the fsync, nor the
        # other callers' wait.
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._start_sync()
        await waiter

    # -- closing -----------------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the log as one line per row (row order), by atomic replace."""
        if self._failure is not None:
            raise self._failure
        self._flush()
        temp = self.path.with_name(f".{self.path.name}.compact")
        try:
            with open(self.path, "rb") as source, open(temp, "wb") as target:
                target.write(_HEADER_LINE)
                for row, code in enumerate(self._status):
                    if code:
                        source.seek(self._offset[row])
                        target.write(source.readline())
                target.flush()
                os.fsync(target.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise ResultsWriteError(f"{self.path}: could not compact the results file "
                                    f"({exc.strerror}); the log itself is intact") from None
        os.replace(temp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def close(self) -> None:
        """Sync and release the file and its lock."""
        if self._fd >= 0:
            with contextlib.suppress(OSError, ResultsWriteError):
                self._flush()
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            release(self._lock_fd)
            self._lock_fd = -1
