"""What a person watching sees: a progress bar on stderr when it is a terminal.

The bar counts rows finished (whatever their outcome) against the input's row count once
known; its position includes the rows a resumed run passes over because an earlier run
finished them. The rate and the ETA count only this run's own work (rows it sent or found
invalid): :class:`Throughput` observes it over a sliding window, and the ETA is the rows
still to come, less those an earlier run finished, divided by that rate. Until the run has
observed enough of its own rows, the ETA divides by the rate the limit allows instead.

Under a share of the limit (``--share``), the ETA follows the schedule: the rate at the
whole limit (the one the limit allows, or the one observed divided by the fraction in force)
times each fraction ahead, piecewise over the schedule's ranges
(:meth:`~bulkpost.core.share.ShareSchedule.seconds_for`).

Log lines reach the terminal through :class:`BarAwareStream`, which prints whole lines
above the bar and redraws the bar below them.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Never, TextIO

from tqdm import tqdm

from bulkpost.core.share import ShareSchedule


class BarAwareStream:
    """A stderr for log lines that does not tear the progress bar: while a bar is shown,
    whole lines go through ``tqdm.write``, which clears the bar, prints, and redraws it.

    ``print`` writes a line's text and its newline in two calls, so the text is held until
    its newline comes: passed on one call at a time, each would be a line of its own, and
    every log line would be followed by a blank one."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._partial = ""  # the start of a line whose end has not come yet

    def write(self, text: str) -> int:
        written = len(text)
        if self._partial or tqdm._instances:  # type: ignore[attr-defined]
            text, self._partial = self._partial + text, ""
            if tqdm._instances:  # type: ignore[attr-defined]
                lines, newline, self._partial = text.rpartition("\n")
                if newline:
                    tqdm.write(lines, file=self._stream)
                return written
        self._stream.write(text)
        return written

    def flush(self) -> None:
        if self._partial and not tqdm._instances:  # type: ignore[attr-defined]
            self._stream.write(self._partial)
            self._partial = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


class Throughput:
    """Rows per second this run finishes itself, over the last ``window`` seconds.

    Pure: the caller passes the time. Observing starts at the first :meth:`add`, and the
    rows of that first call are not counted: they end an interval that began before (the
    run's start, the preflight, a bulk call's batch), whose length is unknown. The rate is
    the rows added since the window's start divided by the time since then. It is None
    until the first call is ``warmup`` seconds old and ``warmup_rows`` rows came after it,
    or, for a slow run, until it is ``patience`` seconds old and one row came after it: a
    rate read from a handful of rows swings with every pause (under faults, a few rows after
    a 429 pause read as a fraction of the real rate, an ETA of minutes too long). The
    window's starts are kept at most every ``resolution`` seconds, so memory stays bounded
    however fast rows come.
    """

    __slots__ = ("_first", "_rows", "_starts", "patience", "resolution", "warmup",
                 "warmup_rows", "window")

    def __init__(self, *, window: float = 30.0, warmup: float = 1.0, warmup_rows: int = 10,
                 patience: float = 10.0, resolution: float = 0.1) -> None:
        self.window = window
        self.warmup = warmup
        self.warmup_rows = warmup_rows
        self.patience = patience
        self.resolution = resolution
        self._first: float | None = None
        self._rows = 0  # rows added after the first call
        self._starts: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, rows: int, now: float) -> None:
        """``rows`` finished by this run at ``now``."""
        if self._first is None:
            self._first = now
            self._starts.append((now, 0))
            return
        self._rows += rows
        if now - self._starts[-1][0] >= self.resolution:
            self._starts.append((now, self._rows))
        self._forget(now)

    def per_second(self, now: float) -> float | None:
        """The observed rate at ``now`` (0 after a window with no row), or None while
        there is none yet."""
        if self._first is None or not self._rows:
            return None
        age = now - self._first
        if age < self.warmup or (self._rows < self.warmup_rows and age < self.patience):
            return None
        self._forget(now)
        since, rows_then = self._starts[0]
        rows = self._rows - rows_then
        return rows / (now - since)

    def _forget(self, now: float) -> None:
        # Keep the latest start at least a window old: it begins the window.
        while len(self._starts) > 1 and self._starts[1][0] <= now - self.window:
            self._starts.popleft()


class Progress:
    """A tqdm bar, or nothing when the stream is not a terminal.

    ``calls_per_second`` is what the whole rate limit allows: the ETA's rate until this run
    has observed its own. ``clock`` is the time the rate is observed by (tests pass their
    own). ``share``: the fraction of the limit the run takes, read on ``wall`` (the
    account's clock).
    """

    def __init__(self, *, enabled: bool, calls_per_second: float,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 share: ShareSchedule | None = None,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._stream = stream or sys.stderr
        self.calls_per_second = calls_per_second
        self._clock = clock
        self._share = share
        self._wall = wall
        self._bar: tqdm[Never] | None = None
        self._finished_before = 0  # rows an earlier run finished: they take no call
        self._counted: int | None = None  # the input's rows, once counted
        self._extra = 0  # rows carried over from earlier runs
        self.throughput = Throughput()
        if enabled:
            # miniters=1: tqdm would otherwise learn from the burst of rows passed over at
            # the start of a resumed run to redraw only every so many rows.
            self._bar = tqdm(
                file=self._stream, unit="row", dynamic_ncols=True, mininterval=0.5,
                miniters=1,
                bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                           "[{elapsed}{postfix}]",
            )

    @staticmethod
    def wanted(stream: TextIO) -> bool:
        return stream.isatty()

    def set_total(self, total: int | None) -> None:
        """The input's rows, once counted."""
        if total is not None:
            self._counted = total
        if self._bar is not None and self._counted is not None:
            self._bar.total = self._counted + self._extra
            self._bar.refresh()

    def add_rows(self, rows: int) -> None:
        """Rows to deliver beyond the input's (carried over from earlier runs)."""
        self._extra += rows
        self.set_total(None)

    def resuming(self, finished: int) -> None:
        """A resumed run: ``finished`` rows (posted, rejected…) will be passed over."""
        self._finished_before = finished

    def done(self, rows: int = 1, *, passed_over: bool = False) -> None:
        """Rows finished; ``passed_over`` for a row an earlier run had finished, which
        moves the bar but not the rate."""
        if passed_over:
            self._finished_before = max(0, self._finished_before - rows)
        if self._bar is None:
            return
        now = self._clock()
        if not passed_over:
            self.throughput.add(rows, now)
        # The postfix first: the update below may redraw the bar.
        self._bar.set_postfix_str(self._postfix(self._bar.n + rows, now), refresh=False)
        self._bar.update(rows)

    def _postfix(self, finished: float, now: float) -> str:
        """The rate this run observes, and the ETA once the total is known."""
        observed = self.throughput.per_second(now)
        shown = "?" if observed is None else f"{observed:,.{1 if observed < 100 else 0}f}"
        text = f"{shown} rows/s"
        if self._bar is not None and self._bar.total:
            # Rows still to come, less those an earlier run finished (passed over at once).
            pending = max(0, self._bar.total - finished - self._finished_before)
            seconds = self.eta_seconds(pending, observed)
            eta = "?" if seconds is None else str(timedelta(seconds=round(seconds)))
            text += f", ETA {eta}"
        return text

    def eta_seconds(self, pending: float, observed: float | None) -> float | None:
        """Seconds to finish ``pending`` rows: at the rate observed, else at the rate the
        limit allows; under a share, at that rate's whole-limit figure times each fraction
        of the schedule ahead. None when no rate is known."""
        if self._share is None:
            rate = self.calls_per_second if observed is None else observed
            return pending / rate if rate else None
        wall = self._wall()
        full = (self.calls_per_second if observed is None
                else observed / self._share.fraction_at(wall))
        return self._share.seconds_for(pending, full, wall) if full else None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
