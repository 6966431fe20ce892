"""The results file: every row's outcome, durable, resumable.

Owns the file format and its durability. The file is a CSV append-only log with the header
``row,key,status,activity_id,http_status,error_type,error,attempts,updated_at,content_hash``;
a row's last line is its state. Rules:

- every line is one physical line (text is folded to one line), written with one
  ``write`` on an ``O_APPEND`` descriptor, so ``kill -9`` can tear at most the last line,
  which the next open cuts off;
- before a row's request is sent, an ``unknown`` line is written and made durable (fsync,
  shared by every row marked at the same moment: group commit), so a crash leaves the
  row ``unknown``, never silently re-sendable;
- outcomes are written at once and fsynced in small groups;
- a lock file beside it keeps a second run out;
- at the end the log is compacted, by atomic replace, to one line per row.

In memory the log keeps only compact per-row arrays (status, content hash, key digest,
activity-Id digest, offset of the row's last line), so resuming a million rows stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import io
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bulkpost.errors import ResultsLocked, ResultsWriteError, UsageError
from bulkpost.resume import Previous, Status, key_digest

HEADER = ["row", "key", "status", "activity_id", "http_status", "error_type", "error",
          "attempts", "updated_at", "content_hash"]
_HEADER_LINE = (",".join(HEADER) + "\n").encode()
_STATUS_CODES = {status: index for index, status in enumerate(Status, start=1)}
_STATUS_BY_CODE = {index: status for status, index in _STATUS_CODES.items()}
IN_FLIGHT_NOTE = "in flight: sent, no answer recorded"


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


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_line(outcome: RowOutcome) -> bytes:
    """The CSV line for one outcome, always a single physical line."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([
        outcome.row, _one_line(outcome.key), outcome.status.value, outcome.activity_id,
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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._status = array("b")
        self._hash = array("Q")
        self._key = array("Q")
        self._activity = array("Q")  # digest of the activity Id of a posted row
        self._offset = array("q")
        self._fd = -1
        self._lock_fd = -1
        self._size = 0
        self._synced = 0          # bytes known to be on disk
        self._sync_task: asyncio.Task[None] | None = None
        self._pending_outcomes = 0
        self._failure: ResultsWriteError | None = None  # a background fsync that failed
        self.torn_lines = 0

    # -- opening -----------------------------------------------------------------------
    def open(self) -> ResultsLog:
        """Lock the file, load what earlier runs recorded, and get ready to append."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise ResultsLocked(f"{self.path}: another bulkpost run is using this results "
                                f"file (lock {lock_path})") from None
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot lock the results file: {exc.strerror}") from None
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
                self._size = 0
                self._append(_HEADER_LINE)
                os.fsync(self._fd)
                self._synced = self._size
                return
            if first.rstrip(b"\r\n") != _HEADER_LINE.rstrip(b"\n"):
                raise UsageError(f"{self.path}: not a bulkpost results file "
                                 f"(first line {first[:80]!r})")
            offset = len(first)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    # A torn last line from a crash: cut it off before appending.
                    self.torn_lines += 1
                    os.ftruncate(self._fd, offset)
                    break
                fields = next(csv.reader([raw.decode("utf-8", "replace")]), [])
                outcome = parse_line(fields)
                if outcome is None:
                    self.torn_lines += 1
                else:
                    self._remember(outcome, offset)
                offset += len(raw)
        self._size = self._synced = offset

    # -- state -------------------------------------------------------------------------
    def _remember(self, outcome: RowOutcome, offset: int) -> None:
        row = outcome.row
        if row < 1:
            return
        if row >= len(self._status):
            grow = max(row + 1, 2 * len(self._status)) - len(self._status)
            self._status.extend(bytes(grow))
            self._hash.extend([0] * grow)
            self._key.extend([0] * grow)
            self._activity.extend([0] * grow)
            self._offset.extend([-1] * grow)
        self._status[row] = _STATUS_CODES[outcome.status]
        self._hash[row] = int(outcome.content_hash, 16) if outcome.content_hash else 0
        self._key[row] = key_digest(outcome.key) if outcome.key else 0
        self._activity[row] = (key_digest(outcome.activity_id)
                               if outcome.status is Status.POSTED and outcome.activity_id else 0)
        self._offset[row] = offset

    def previous(self, row: int) -> Previous | None:
        """What an earlier run (or this one) recorded last for ``row``."""
        if row >= len(self._status) or not self._status[row]:
            return None
        return Previous(
            status=_STATUS_BY_CODE[self._status[row]],
            content_hash=f"{self._hash[row]:016x}" if self._hash[row] else "",
            key_digest=self._key[row],
        )

    def claimed_ids(self, content_hash: str) -> set[int]:
        """Digests of the activity Ids held by posted rows with this content hash."""
        if not content_hash:
            return set()
        hashes = np.frombuffer(self._hash, dtype=np.uint64)
        rows = np.flatnonzero(hashes == np.uint64(int(content_hash, 16)))
        posted = _STATUS_CODES[Status.POSTED]
        return {self._activity[r] for r in rows.tolist() if self._status[r] == posted}

    def last_outcome(self, row: int) -> RowOutcome | None:
        """The row's last line, read back from the file."""
        if row >= len(self._status) or not self._status[row]:
            return None
        offset, chunk = self._offset[row], b""
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
    def _append(self, data: bytes) -> int:
        if self._failure is not None:
            raise self._failure
        offset = self._size
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            raise ResultsWriteError(f"{self.path}: cannot write the results file "
                                    f"({exc.strerror}); stopped sending") from None
        if written != len(data):
            # Cut the partial line off, so that nothing can be appended to it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, offset)
            raise ResultsWriteError(f"{self.path}: cannot write the results file (short "
                                    "write: disk full?); stopped sending")
        self._size += written
        return offset

    def record(self, outcome: RowOutcome) -> None:
        """Append an outcome now; it reaches the disk with the next group sync."""
        self._remember(outcome, self._append(format_line(outcome)))
        self._pending_outcomes += 1
        if self._pending_outcomes >= 64:
            self._pending_outcomes = 0
            self._start_sync()

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
        target = self._size
        try:
            await asyncio.to_thread(os.fsync, self._fd)
        except OSError as exc:
            # Kept, so that the next write fails too even if nobody awaits this task.
            self._failure = ResultsWriteError(f"{self.path}: cannot sync the results file "
                                              f"({exc.strerror}); stopped sending")
            raise self._failure from None
        self._synced = max(self._synced, target)

    async def sync(self) -> None:
        """Return once everything written so far is on disk (one fsync serves many)."""
        target = self._size
        while self._synced < target:
            task = self._start_sync()
            # Shield: one caller's cancellation must not cancel the fsync others wait on.
            await asyncio.shield(task)

    # -- closing -----------------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the log as one line per row (row order), by atomic replace."""
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
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
