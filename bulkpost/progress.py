"""What a person watching sees: a progress bar on stderr when it is a terminal.

The bar counts rows finished (whatever their outcome) against the input's row count once
known, shows the observed rate, and an ETA computed from the rate limit (the rows still to
come, less those an earlier run finished, divided by the calls per second the limit
allows), which is right from the first second, unlike an ETA smoothed from the observed
rate.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Never, TextIO

from tqdm import tqdm


class BarAwareStream:
    """A stderr for log lines that does not tear the progress bar: while a bar is shown,
    lines go through ``tqdm.write``, which clears the bar, prints, and redraws it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if tqdm._instances:  # type: ignore[attr-defined]
            tqdm.write(text.rstrip("\n"), file=self._stream)
        else:
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


class Progress:
    """A tqdm bar, or nothing when the stream is not a terminal."""

    def __init__(self, *, enabled: bool, calls_per_second: float,
                 stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._calls_per_second = calls_per_second
        self._bar: tqdm[Never] | None = None
        self._finished_before = 0  # rows an earlier run finished: they take no call
        if enabled:
            self._bar = tqdm(
                file=self._stream, unit="row", dynamic_ncols=True, mininterval=0.5,
                bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                           "[{elapsed}, {rate_fmt}{postfix}]",
            )

    @staticmethod
    def wanted(stream: TextIO) -> bool:
        return stream.isatty()

    def set_total(self, total: int | None) -> None:
        if self._bar is not None and total is not None:
            self._bar.total = total
            self._bar.refresh()

    def resuming(self, finished: int) -> None:
        """A resumed run: ``finished`` rows (posted, rejected…) will be passed over."""
        self._finished_before = finished

    def done(self, rows: int = 1, *, passed_over: bool = False) -> None:
        """Rows finished; ``passed_over`` for a row an earlier run had finished."""
        if passed_over:
            self._finished_before = max(0, self._finished_before - rows)
        if self._bar is None:
            return
        self._bar.update(rows)
        if self._bar.total:
            # Rows still to come, less those an earlier run finished: each of the rest
            # costs about one call at the rate limit.
            pending = max(0, self._bar.total - self._bar.n - self._finished_before)
            eta = pending / self._calls_per_second if self._calls_per_second else 0
            self._bar.set_postfix_str(f"ETA {timedelta(seconds=round(eta))}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
