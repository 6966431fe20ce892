"""A run's summary: what happened to the input's rows, as counted by the feeder and the
workers. Printed as the last line of stdout, returned by the Python API, written by
``--summary-json``; its exit code is the run's.

The workers count in one :class:`DeliveryCounts`; the summary takes it whole
(:meth:`Summary.take`) and reads its calls from it, so each counter is declared once.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from bulkpost.core.statuses import Status


@dataclass(slots=True)
class DeliveryCounts:
    """Counters the workers keep for the summary."""

    calls: int = 0
    creates: int = 0  # calls that could create an activity (look-ups excluded)
    retries: int = 0
    rate_limited: int = 0
    reconciled: int = 0
    found_posted: int = 0
    lookup_calls: int = 0  # Retrieve pages read to reconcile rows
    calibration_calls: int = 0  # Retrieve pages read to learn how the account answers
    verify_calls: int = 0  # first rows read back (--verify-first)
    statuses: collections.Counter[Status] = field(default_factory=collections.Counter)
    # Rows carried over from an earlier run (no input of this run holds them), by status.
    carried: collections.Counter[Status] = field(default_factory=collections.Counter)

    def count(self, status: Status, *, carried: bool = False) -> None:
        """A row delivered (or stopped on) ends in ``status``: an input row, or carried."""
        (self.carried if carried else self.statuses)[status] += 1


# The statuses a run counts its rows in (a row fixed from a failures file is counted as
# skipped when the original input is run again).
_COUNTED = tuple(status for status in Status if status is not Status.FIXED)


@dataclass(slots=True)
class Summary:
    """What happened to the input's rows. Printed as the last line of stdout."""

    rows: int = 0
    posted: int = 0
    skipped: int = 0  # not sent as done before: done_before, and skipped by this run (--history)
    done_before: int = 0  # of skipped: rows the results file records done by an earlier run
    # Of the skipped: rows whose key the history holds as created by an earlier run (under
    # any results file); not created again.
    created_before: int = 0
    changed: int = 0  # --history: keys posted before with other content (see --on-changed)
    updated: int = 0  # --on-changed update: rows whose key's activity was updated in place
    repeats: int = 0  # of the skipped: exact repeats of an earlier row of the input
    # --history: rows an earlier run left unfinished and no input holds any more, finished
    # by this run (posted, updated or rejected), and those still unfinished.
    carried: int = 0  # taken from the history to deliver
    carried_done: int = 0  # posted or updated
    carried_rejected: int = 0  # refused: not done (exit 1), never carried again
    carried_left: int = 0  # still failed or unknown: carried again by the next run
    # --fixes: rows of the original results file this run marked fixed (not rows of this
    # input), and those the original run had finished meanwhile.
    marked_fixed: int = 0
    fixed_already_done: int = 0
    fixes: str = ""  # the original results file (--fixes)
    failed: int = 0
    rejected: int = 0
    invalid: int = 0
    unknown: int = 0
    to_send: int = 0
    # The workers' counts (calls, retries, look-ups...), taken whole (:meth:`take`).
    delivery: DeliveryCounts = field(default_factory=DeliveryCounts)
    elapsed_s: float = 0.0
    dry_run: bool = False
    estimated_s: float = 0.0  # dry run: how long sending to_send rows would take
    problems: list[str] = field(default_factory=list)  # dry run: invalid rows, grouped
    repeated_keys: list[str] = field(default_factory=list)  # dry run: the input's repeated keys
    aborted: str = ""
    results: str = ""
    run_id: str = ""
    history: str = ""
    account_history: bool = False  # ``history`` is the account's own (not in as_dict)
    rate: dict[str, str] = field(default_factory=dict)  # each limit in force, and its source
    undecodable: int = 0  # invalid rows with a cell that is not UTF-8 (not in as_dict)
    interrupted: bool = False  # stopped by a signal: as the user asked (not in as_dict)
    share: str = ""  # --share: the fraction of the limit taken, or its schedule
    # --daily-calls: calls_today, daily_calls, day and renews (the account's next midnight)
    budget: dict[str, object] = field(default_factory=dict)
    budget_spent: bool = False  # stopped when the day's budget was spent: exit 4
    budget_renews: str = ""  # the account's next midnight, in words (not in as_dict)

    def count(self, status: Status, rows: int = 1) -> None:
        name = status.value
        setattr(self, name, getattr(self, name) + rows)

    def take(self, counts: DeliveryCounts) -> None:
        """Take what the workers counted: their counts themselves, and their rows by status
        folded into the summary's (once)."""
        self.delivery = counts
        for status, rows in counts.statuses.items():
            self.count(status, rows)
        for status, rows in counts.carried.items():
            if status in (Status.FAILED, Status.UNKNOWN):
                self.carried_left += rows
            elif status is Status.REJECTED:
                self.carried_rejected += rows
            else:
                self.carried_done += rows

    # The calls, as the workers counted them.
    @property
    def calls(self) -> int:
        return self.delivery.calls

    @property
    def rate_limited(self) -> int:
        return self.delivery.rate_limited

    @property
    def retries(self) -> int:
        return self.delivery.retries

    @property
    def reconciled(self) -> int:
        return self.delivery.reconciled

    @property
    def found_posted(self) -> int:
        return self.delivery.found_posted

    @property
    def lookups(self) -> int:
        """Pages of "Get Activities of a Lead" read to reconcile rows."""
        return self.delivery.lookup_calls

    @property
    def calibration_calls(self) -> int:
        """Pages read to learn how the account answers look-ups."""
        return self.delivery.calibration_calls

    @property
    def verify_calls(self) -> int:
        """First rows read back (--verify-first)."""
        return self.delivery.verify_calls

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 3
        if self.budget_spent:
            return 4  # nothing wrong: run again after the account's midnight
        not_done = (self.failed + self.rejected + self.invalid + self.unknown
                    + self.carried_left + self.carried_rejected)
        if self.dry_run:
            return 1 if self.invalid else 0
        return 0 if not_done == 0 else 1

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rows": self.rows, "posted": self.posted, "skipped": self.skipped,
            "repeats": self.repeats,
            "failed": self.failed, "rejected": self.rejected, "invalid": self.invalid,
            "unknown": self.unknown, "elapsed_s": round(self.elapsed_s, 3),
            "calls": self.calls, "calls_per_s": round(self.calls_per_s, 3),
            "rate_limited": self.rate_limited, "retries": self.retries,
            "reconciled": self.reconciled, "found_posted": self.found_posted,
            "lookups": self.lookups, "calibration_calls": self.calibration_calls,
            "verify_calls": self.verify_calls,
            "results": self.results, "exit_code": self.exit_code, "run_id": self.run_id,
        }
        if self.dry_run:
            data["dry_run"] = True
            data["to_send"] = self.to_send
            data["estimated_s"] = round(self.estimated_s)
            data["problems"] = self.problems
            data["repeated_keys"] = self.repeated_keys
        else:
            # Rows read but not finished when the run stopped (they resume next time).
            data["pending"] = self.rows - sum(getattr(self, s.value) for s in _COUNTED)
            data["done_before"] = self.done_before
        if self.history:
            data["history"] = self.history
            data["created_before"] = self.created_before
            data["changed"] = self.changed
            data["updated"] = self.updated
            data["carried"] = self.carried
            data["carried_done"] = self.carried_done
            data["carried_rejected"] = self.carried_rejected
            data["carried_left"] = self.carried_left
        if self.fixes:
            data["fixes"] = self.fixes
            data["marked_fixed"] = self.marked_fixed
            data["fixed_already_done"] = self.fixed_already_done
        if self.rate:
            data["rate"] = self.rate
        if self.aborted:
            data["aborted"] = self.aborted
        if self.share:
            data["share"] = self.share
        if self.budget:
            data.update(self.budget)
            data["budget_spent"] = self.budget_spent
        return data
