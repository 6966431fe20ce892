"""A run's options: everything one run needs, as the CLI and the Python API give it.

Owns :class:`LoadOptions`, what every command that works on a load needs (its input,
mapping and results file, the account, the rate limit, how the input is read), declared
once: :class:`RunOptions` and ``verify``'s options build on it, and the planner and delivery
take views of the run's (:class:`~bulkpost.core.planner.PlanOptions`,
:meth:`~bulkpost.delivery.calls.DeliverySettings.of`). Owns too :class:`RunOptions`, the
checks of its values that the CLI's own choices do not make (their messages are the Python
API's), the sizes derived from them (worker pools,
connections, the queue's low-water mark), and a run's id (:func:`new_run_id`).
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias, get_args

from bulkpost.core.allowance import RateSpec
from bulkpost.core.credentials import Credentials
from bulkpost.core.mapping import Mapping
from bulkpost.core.share import ShareSchedule
from bulkpost.errors import Given, Setting, UsageError

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

# What a run reads: a CSV or Parquet path, or Arrow data (the Python API).
InputSource: TypeAlias = "str | Path | pa.Table | pa.RecordBatchReader"
# Which calls create activities: one per call, many per bulk call, or both at once.
Mode: TypeAlias = Literal["single", "bulk", "both"]
MODES: tuple[Mode, ...] = get_args(Mode)
# What a row gets whose key the history holds posted with other content (--on-changed).
OnChanged: TypeAlias = Literal["skip", "post", "update", "fail"]
ON_CHANGED: tuple[OnChanged, ...] = get_args(OnChanged)


@dataclass(slots=True, kw_only=True)
class LoadOptions:
    """What every command that works on a load needs: its input, mapping and results file,
    the account, the rate limit and how the input is read. Declared once: a run's and
    ``verify``'s options build on it."""

    input: InputSource  # a CSV or Parquet path, or Arrow data (the Python API)
    mapping: Mapping
    results: Path
    host: str = ""
    credentials: Credentials | None = None
    rate: RateSpec = field(default_factory=lambda: RateSpec(25, 5.0))
    learn_rate: bool = False  # rate not given: learn it from the answers (it starts at rate)
    forget_learnt: bool = False  # learn afresh, not from what earlier runs learnt
    encoding: str = "utf-8"
    delimiter: str | None = None  # None: sniffed from the header line
    timeout: float = 30.0
    progress: bool = False
    preflight: bool = True  # read the activity types' schemas and check rows against them
    decimal_comma: bool = False  # accept 12,5 in Number fields (sent as 12.5)
    share: ShareSchedule | None = None  # the fraction of the limit taken, or its schedule
    timezone: str | None = None  # the account's zone (IANA); None: the account says


@dataclass(slots=True, kw_only=True)
class RunOptions(LoadOptions):
    """Everything one run needs; the CLI and the Python API both build one."""

    rate_margin: float | None = None  # seconds; None: 2% of the window
    workers: int = 0  # 0: enough to keep the limit busy
    dry_run: bool = False
    resend_unknown: bool = False
    max_attempts: int = 5
    backoff: float = 1.0
    drain_timeout: float = 30.0
    max_rate_limited: float = 900.0  # seconds of rate limiting without a success
    run_id: str = ""  # "": a new one (new_run_id)
    mode: Mode = "single"  # which calls create activities
    bulk_rate: RateSpec = field(default_factory=lambda: RateSpec(1, 5.0))
    learn_bulk_rate: bool = False  # bulk_rate not given: learn it
    batch_size: int = 25  # activities per bulk call (1..25)
    history: Path | None = None  # keys posted by earlier runs, across inputs (SQLite)
    # No history given: the account's own (bulkpost.storage.history.accounts), unless create_again.
    create_again: bool = False  # no history at all: rows an earlier run created are created again
    on_changed: OnChanged = "skip"  # a key posted with other content
    verify_first: int = 1  # rows sent alone and read back before any other (0: none)
    fixes: Path | None = None  # the input is a failures file of this results file's rows
    daily_calls: int | None = None  # most calls per account day (None: no budget)

    @property
    def needs_zone(self) -> bool:
        """Whether the run reads the account's clock: a schedule, or a daily budget."""
        return self.daily_calls is not None or (self.share is not None and self.share.timed)

    def __post_init__(self) -> None:
        # The CLI's choices refuse these values first: the messages are the Python API's.
        if self.on_changed not in ON_CHANGED:
            raise UsageError("{given}: expected skip, post, update or fail",
                             given=Given(Setting("on_changed"), self.on_changed))
        if self.create_again and self.history is not None:
            raise UsageError("{create_again} runs without a history: give it or {history}, "
                             "not both", create_again=Setting("create_again"),
                             history=Setting("history"))
        if self.create_again and self.on_changed != "skip":
            raise UsageError("{given}: what a key held before is known from a history, and "
                             "{create_again} runs without one",
                             given=Given(Setting("on_changed"), self.on_changed),
                             create_again=Setting("create_again"))
        if self.mode not in MODES:
            raise UsageError("{given}: expected single, bulk or both",
                             given=Given(Setting("mode"), self.mode))
        if isinstance(self.share, str):  # the Python API may give the text
            self.share = ShareSchedule.parse(self.share, "share=")
        if self.daily_calls is not None and (isinstance(self.daily_calls, bool)
                                             or self.daily_calls < 1):
            raise UsageError("{given}: a day's budget is at least one call",
                             given=Given(Setting("daily_calls"), self.daily_calls))
        if not 1 <= self.batch_size <= 25:
            raise UsageError("{given}: a bulk call takes 1 to 25 activities",
                             given=Given(Setting("batch_size"), self.batch_size))

    def worker_count(self) -> int:
        """Single-call workers (0 in bulk mode, where look-ups and re-sends after a look-up
        are made by the bulk workers themselves, under the single-call limit)."""
        if self.mode == "bulk":
            return 0
        if self.workers > 0:
            return self.workers
        # Enough requests in flight to keep the limit busy even at 4 s of latency. Beside
        # bulk workers, fewer: each holds a row while it waits for a slot, and at the end of
        # the input those rows would wait there while bulk calls could have taken them.
        horizon = 2.5 if self.mode == "both" else 4
        return min(64, max(2, math.ceil(self.rate.per_second * horizon)))

    def bulk_worker_count(self) -> int:
        """Bulk-call workers: enough to keep the bulk limit busy at 8 s a call."""
        if self.mode == "single":
            return 0
        return min(16, max(2, math.ceil(self.bulk_rate.per_second * 8)))

    def connections(self) -> int:
        return max(2, self.worker_count() + self.bulk_worker_count())

    def low_water(self) -> int:
        """How few rows the queue holds before the feeder puts the next mapped batch on it
        (a whole batch at once: one wake-up per batch, not per row)."""
        return max(self.worker_count() * 4, self.bulk_worker_count() * self.batch_size * 2)


def new_run_id() -> str:
    """A run's id, for logs and summaries: its UTC start and a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
