"""The results file's writes: lines appended together, made durable in group commits.

Owns the descriptor of an open results file and what is written through it (the file's
lock, loading, reading back and compaction are
:class:`~bulkpost.storage.results.ResultsLog`'s). Rules:

- the lines recorded while the event loop turns are written together, with one ``write``
  on an ``O_APPEND`` descriptor, and fsynced together (group commit), so ``kill -9`` can
  tear at most the last line;
- a caller that must know its records are on disk (a row's ``unknown`` line before its
  request leaves) waits for a group's fsync: one fsync serves many, and a caller cancelled
  while it waits cancels neither the fsync nor the others' wait;
- the other lines are written at the end of the loop turn that recorded them and fsynced
  in groups of 64;
- a companion store (the history, ``--history``) is committed in the same group commits,
  after the fsync: a row's claim there is durable before its request goes out;
- a write that fails, or writes short (the partial line is cut off), and an fsync that
  fails are kept: every later write raises the same :class:`~bulkpost.errors.ResultsWriteError`,
  so nothing more is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any, Protocol

from bulkpost.errors import ResultsWriteError


class Companion(Protocol):
    """A store made durable with the results file's group commits (the history)."""

    def take(self) -> Any:
        """The writes recorded so far; called on the event loop."""

    def commit(self, batch: Any) -> None:
        """Make them durable; called in a worker thread. Raises ResultsWriteError."""


class GroupCommit:
    """The appends and group-commit fsyncs of one open results file. Not thread-safe: use it
    from the event loop."""

    def __init__(self, path: Path, companion: Companion | None = None) -> None:
        self.path = path  # as messages name the file
        self.companion = companion
        self.fd = -1
        self.size = 0             # bytes recorded: written, and buffered after them
        self.synced = 0           # bytes known to be on disk
        self.written = 0          # bytes in the file
        self._sync_task: asyncio.Task[None] | None = None
        self._buffer: list[bytes] = []  # lines recorded, not yet written
        self._flush_scheduled = False
        # Records made (lines, and writes of the companion): a sync waits for a count of them.
        self.marks = 0
        self.synced_marks = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (marks, woken once synced)
        self._pending_outcomes = 0  # recorded since the last fsync was started
        self.failure: ResultsWriteError | None = None  # a background fsync that failed

    def open(self, file: Path) -> None:
        """Open ``file`` to append (created readable by its owner only: it holds keys and
        Ids). Raises OSError."""
        self.fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    def start_at(self, size: int) -> None:
        """The file holds ``size`` bytes, all on disk (as loaded, or cut to)."""
        self.size = self.synced = self.written = size

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end of the file now (the header, and each group)."""
        if self.failure is not None:
            raise self.failure
        try:
            written = os.write(self.fd, data)
        except OSError as exc:
            self.failure = ResultsWriteError(f"{self.path}: cannot write the results file "
                                             f"({exc.strerror}); stopped sending")
            raise self.failure from None
        if written != len(data):
            # Cut the partial line off, so that nothing can be appended to it.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.written)
            self.failure = ResultsWriteError(f"{self.path}: cannot write the results file "
                                             "(short write: disk full?); stopped sending")
            raise self.failure
        self.written += written
        self.size = max(self.size, self.written)

    def flush(self) -> None:
        """Write the buffered lines, as one write."""
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self.append(data)

    def sync_now(self) -> None:
        """Write the buffered lines and fsync them, blocking (while the file is opened)."""
        self.flush()
        os.fsync(self.fd)
        self.synced, self.synced_marks = self.size, self.marks

    def add(self, line: bytes) -> None:
        """Append a line; it is written and synced with the group now forming."""
        self._buffer.append(line)
        self.size += len(line)
        self.marks += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used without an event loop (reports, tests): write now
            self.flush()
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
            self.flush()

    def _start_sync(self) -> asyncio.Task[None]:
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_once())
            # The failure is kept in failure; retrieve it here so asyncio does not warn.
            self._sync_task.add_done_callback(
                lambda task: task.cancelled() or task.exception())
        return self._sync_task

    async def _sync_once(self) -> None:
        """Group commit: write the lines recorded so far in one write, fsync, wake those
        waiting for them; again while others came to wait meanwhile."""
        while True:
            target, size = self.marks, self.size
            try:
                self.flush()
                batch = self.companion.take() if self.companion is not None else None
                await asyncio.to_thread(self._make_durable, batch)
            except OSError as exc:
                # Kept, so that the next write fails too even if nobody awaits this task.
                self.failure = ResultsWriteError(f"{self.path}: cannot sync the results "
                                                 f"file ({exc.strerror}); stopped sending")
            except ResultsWriteError as exc:
                self.failure = self.failure or exc  # append keeps its own
            if self.failure is not None:
                for _, waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_exception(self.failure)
                self._waiters.clear()
                raise self.failure
            self.synced = max(self.synced, size)
            self.synced_marks = max(self.synced_marks, target)
            waiting = []
            for until, waiter in self._waiters:
                if until > self.synced_marks:
                    waiting.append((until, waiter))
                elif not waiter.done():  # done: its caller was cancelled
                    waiter.set_result(None)
            self._waiters = waiting
            if not waiting:
                return

    def _make_durable(self, batch: Any) -> None:
        os.fsync(self.fd)
        if self.companion is not None:
            self.companion.commit(batch)

    def companion_wrote(self) -> None:
        """The companion (the history) has a write to make durable with the next group
        commit, with no line of its own in this file."""
        self.marks += 1

    async def sync(self) -> None:
        """Return once everything recorded so far (lines, and the companion's writes noted
        with :meth:`companion_wrote`) is on disk (one fsync serves many)."""
        target = self.marks
        if self.synced_marks >= target:
            return
        if self.failure is not None:
            raise self.failure
        # A future of our own: cancelling this caller must not cancel the fsync, nor the
        # other callers' wait.
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._start_sync()
        await waiter

    def close(self) -> None:
        """Write and fsync what is buffered (as far as it can be) and close the file."""
        if self.fd >= 0:
            with contextlib.suppress(OSError, ResultsWriteError):
                self.flush()
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
