"""The results file: every row's outcome, durable, resumable.

Owns the file: the lock, loading it, cutting off a torn line, reading a row's line back,
compaction. Appending and the group-commit fsyncs are
:class:`~bulkpost.storage.group_commit.GroupCommit`'s; the line format is
:mod:`bulkpost.core.results_line`'s; what the file holds of each row, in memory, is
:class:`~bulkpost.storage.row_index.RowIndex`'s. The file is an append-only log; a row's
last line is its state. Rules:

- lines are written in groups and fsynced in group commits (the companion store, the
  history, with them: :mod:`bulkpost.storage.group_commit`), so ``kill -9`` can tear at
  most the last line, which the next open cuts off;
- before a row's request is sent, its ``unknown`` line is on disk (the row waits for its
  group's fsync), so a crash leaves the row ``unknown``, never silently re-sendable;
- the other lines are written at the end of the loop turn that recorded them and fsynced
  in groups of 64: a ``kill -9`` loses at most one turn's outcomes, whose rows are then
  ``unknown`` from their durable marks, so the next run reconciles them, never re-sends;
- a torn last line is the only damage a crash can leave: it is cut off, and the row it
  names, unless done, is recorded ``unknown`` (looked up before it is sent again); any other
  damaged line refuses the file (exit 2, naming the line);
- the path is resolved once: through a symbolic link, the file it points to is used (and
  compacted in place of itself, the link stays a link);
- a lock keeps a second run out, by name and by the file's identity (a hard link to it too:
  :mod:`bulkpost.storage.locking`);
- at the end the log is compacted, by atomic replace, to one line per row, keeping the
  file's mode; after a failed write it is not (the log as written is valid, the memory of
  it is not), nor is a file with other hard links (a replacement would cut them off: it
  stays a log, read the same);
- a new file is created readable by its owner only (it holds keys and Ids).
- a run that stops before its first row removes the file if it created it
  (:meth:`ResultsLog.discard_unused`): a refusal leaves no results file behind.
"""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

from bulkpost.core.results_line import (
    HEADER_LINE,
    IN_FLIGHT_NOTE,
    RowOutcome,
    format_line,
    parse_line,
    utc_text,
)
from bulkpost.core.statuses import Status
from bulkpost.errors import ResultsLocked, ResultsWriteError, UsageError
from bulkpost.storage.group_commit import Companion, GroupCommit
from bulkpost.storage.kept import keep_section_durably, kept_path, recall_section
from bulkpost.storage.locking import keep_locked, lock_beside, release
from bulkpost.storage.results_file import write_compacted
from bulkpost.storage.row_index import RowIndex

_SIZE_SECTION = "results"  # the learnt file's section holding the size guard


class ResultsLog:
    """The open results file of one run. Not thread-safe: use it from the event loop.

    Its per-row queries (``recorded``, ``holds``, ``last_posted_row``, ``counts``) are its
    :class:`~bulkpost.storage.row_index.RowIndex`'s; waiting for the records to be on disk
    (``sync``, ``companion_wrote``) is its :class:`~bulkpost.storage.group_commit.GroupCommit`'s.
    """

    def __init__(self, path: str | Path, companion: Companion | None = None) -> None:
        self.path = Path(path)
        self._file = Path(os.path.realpath(path))  # resolved once: a link's target
        self._commit = GroupCommit(self.path, companion)
        self._index = RowIndex()
        # Bound once, not wrapped: a resume asks ``recorded`` of every row, a million times.
        self.recorded = self._index.recorded
        self.holds = self._index.holds
        self.last_posted_row = self._index.last_posted_row
        self.counts = self._index.counts
        self.sync = self._commit.sync
        self.companion_wrote = self._commit.companion_wrote
        self._lock_fd = -1
        self.torn_lines = 0
        self._created = False     # this run created the file (it held nothing before)
        self._existed = False     # the file was there before this run locked it
        self.torn_row = 0  # the row a torn last line named, recorded unknown (0: none)

    @property
    def companion(self) -> Companion | None:
        """The store made durable with this file's group commits (the history), if any."""
        return self._commit.companion

    @companion.setter
    def companion(self, companion: Companion | None) -> None:
        self._commit.companion = companion

    # -- opening -----------------------------------------------------------------------
    def open(self) -> ResultsLog:
        """Lock the file, load what earlier runs recorded, and get ready to append."""
        self._existed = self._file.exists()  # the lock creates it: an emptied file is not new
        self._lock_fd = lock_beside(self.path, "results file", ResultsLocked, real=self._file)
        try:
            self._commit.open(self._file)
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
        fd = self._commit.fd
        size = os.fstat(fd).st_size
        if size == 0:
            self._created = True
            kept = recall_section(self.path, _SIZE_SECTION)
            if kept is not None and kept.get("least_size"):
                if self._existed:
                    self._check_size(0)  # emptied, not new: refused
                self._keep_size(0)  # a new file: an older one of that name is no guide
            self._commit.append(HEADER_LINE)
            self._commit.sync_now()
            return
        with open(self._file, "rb") as handle:
            first = handle.readline()
            if not first.endswith(b"\n") and HEADER_LINE.startswith(first):
                # Torn while the header itself was written: start the file afresh.
                os.ftruncate(fd, 0)
                self._commit.start_at(0)
                self._commit.append(HEADER_LINE)
                self._commit.sync_now()
                return
            if first.rstrip(b"\r\n") != HEADER_LINE.rstrip(b"\n"):
                raise UsageError(f"{self.path}: not a bulkpost results file "
                                 f"(first line {first[:80]!r})")
            offset, _ = self._index.replay(handle, len(first), self.path)
        self._check_size(size)  # after the lines: a damaged one is named first
        torn = os.pread(fd, min(size - offset, 256), offset) if offset < size else b""
        self._commit.start_at(offset)
        if offset < size:
            # A torn last line from a crash: cut it off before appending.
            self.torn_lines += 1
            written = int(os.fstat(fd).st_mtime)  # before the cut moves it to now
            os.ftruncate(fd, offset)
            self._doubt(torn, written)

    def _doubt(self, torn: bytes, written: int) -> None:
        """Record ``unknown`` the row a torn line names (unless done): had its line been
        whole, it might say the row was sent. Its other fields may be cut: the row keeps
        what its last whole line says of it, and is looked up before it is sent again, in
        a window up to ``written`` (when the file was last written, read before the cut)."""
        row_text = torn.split(b",", 1)[0]
        if b"," not in torn or not row_text.isdigit() or int(row_text) < 1:
            return  # no whole row number: a line not on disk was never acted on
        row = int(row_text)
        recorded = self.recorded(row)
        if recorded is not None and recorded.status not in (Status.REJECTED, Status.INVALID):
            # Done, unknown already, or failed (looked up before any re-send, in the
            # window its own line gives): as it is.
            return
        line = self.last_outcome(row)
        # An invalid row's key may have been fixed since (allowed): its line's key proves
        # nothing of the row's, so none is written.
        key = line.key if line is not None and line.status is not Status.INVALID else ""
        self.record(RowOutcome(
            row, key, Status.UNKNOWN,
            activity_id=line.activity_id if line else "",
            error="torn line cut off: looked up before it is sent again",
            attempts=max(1, line.attempts if line else 0),
            content_hash=line.content_hash if line else "", updated_at=utc_text(written)))
        self._commit.sync_now()
        self.torn_row = row

    # -- reading back ------------------------------------------------------------------
    def last_outcome(self, row: int) -> RowOutcome | None:
        """The row's last line, read back from the file."""
        offset = self._index.line_offset(row)
        if offset is None:
            return None
        chunk = b""
        if offset >= self._commit.written:
            self._commit.flush()  # the line is still in the buffer
        while not chunk.endswith(b"\n"):
            more = os.pread(self._commit.fd, 4096, offset + len(chunk))
            if not more:
                break
            chunk += more
            if b"\n" in chunk:
                chunk = chunk[:chunk.index(b"\n") + 1]
        fields = next(csv.reader([chunk.decode("utf-8", "replace")]), [])
        return parse_line(fields)

    # -- writing -----------------------------------------------------------------------
    def record(self, outcome: RowOutcome) -> None:
        """Append an outcome; it is written and synced with the group now forming."""
        if self._commit.failure is not None:
            raise self._commit.failure
        line = format_line(outcome)
        self._index.remember(outcome, self._commit.size)
        self._commit.add(line)

    async def mark_in_flight(self, row: int, key: str, content_hash: str,
                             attempts: int = 0) -> None:
        """Record the row as ``unknown`` and wait until that is on disk."""
        self.record(RowOutcome(row, key, Status.UNKNOWN, error=IN_FLIGHT_NOTE,
                               attempts=attempts, content_hash=content_hash))
        await self.sync()

    # -- the size guard: a file cut short is refused ------------------------------------
    def _check_size(self, size: int) -> None:
        """Refuse a file shorter than it was when a run last compacted it: cut short (a copy
        cut off, a disk that lost its end), it lost rows that would be sent again. A file
        only grows between compactions, by appends."""
        kept = recall_section(self.path, _SIZE_SECTION)
        least = kept.get("least_size") if kept is not None else None
        if isinstance(least, int) and not isinstance(least, bool) and size < least:
            raise UsageError(
                f"{self.path}: the results file is shorter ({size:,} bytes) than the last run "
                f"left it ({least:,} bytes, as {kept_path(self.path).name} recorded): it was "
                "cut short or replaced, and the rows on its lost lines would be sent again. "
                "Restore it (from a backup or the copy it came from) and run again; if you "
                f"replaced it on purpose, delete {kept_path(self.path)} to use it as it is "
                "(rows no history holds would then be sent again)")

    def _keep_size(self, size: int) -> None:
        """Record, durably, the least size the file will have from now on."""
        keep_section_durably(self.path, _SIZE_SECTION, {"version": 1, "least_size": size})

    # -- closing -----------------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the log as one line per row (row order), by atomic replace; a file with
        other hard links is synced instead (a replacement would cut them off)."""
        if self._commit.failure is not None:
            raise self._commit.failure
        self._commit.flush()
        try:
            if os.fstat(self._commit.fd).st_nlink > 1:
                os.fsync(self._commit.fd)
                return
            write_compacted(self._file, self._index.line_offsets(), keep=self._replacing)
        except OSError as exc:
            raise ResultsWriteError(f"{self.path}: could not compact the results file "
                                    f"({exc.strerror}); the log itself is intact") from None

    def _replacing(self, fd: int) -> None:
        """The compacted file, before it takes the name: locked, and its size recorded (before
        the replace, so that a crash between the two leaves the larger file, never a size
        above the file's)."""
        keep_locked(self._lock_fd, fd)
        self._keep_size(os.fstat(fd).st_size)

    def discard_unused(self) -> bool:
        """Remove the file if this run created it and recorded nothing in it (a run that
        stopped before its first row leaves no results file behind); say whether it did.
        Removed while the lock is held, then closed."""
        if not self._created or self._commit.marks or self._commit.fd < 0:
            return False
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.close()
        return True

    def close(self) -> None:
        """Sync and release the file and its lock."""
        self._commit.close()
        if self._lock_fd >= 0:
            release(self._lock_fd)
            self._lock_fd = -1
