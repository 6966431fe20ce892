"""``bulkpost report``: what a results file says, and the rows to fix and load again.

Owns reading a results file for people: counts by status, the most common errors (values
in quotes are folded so that "lead id 'a' …" and "lead id 'b' …" count as one), and the
failures export: the input rows that were not posted, with all their original columns plus
``status`` and ``error``, ready to fix and load again (with a new ``--results`` file: row
numbers refer to the file they were read from).
"""

from __future__ import annotations

import collections
import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkpost.results import RowOutcome, read_outcomes
from bulkpost.resume import Status
from bulkpost.source import input_columns, open_source

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def fold(reason: str) -> str:
    """A reason with its quoted values folded, so one kind of problem is one line."""
    return _QUOTED.sub("'…'", reason)


class ProblemGroups:
    """Invalid rows grouped by column and kind of problem, like a compiler's summary."""

    def __init__(self) -> None:
        # (column, folded reason) -> [rows, first row, first reason]
        self._groups: dict[tuple[str, str], list[Any]] = {}

    def add(self, column: str, reason: str, row: int) -> None:
        group = self._groups.setdefault((column, fold(reason)), [0, row, reason])
        group[0] += 1

    def lines(self, top: int = 20) -> list[str]:
        ranked = sorted(self._groups.items(), key=lambda item: (-item[1][0], item[1][1]))
        out = []
        for (column, _), (count, first, reason) in ranked[:top]:
            where = f"column {column!r}: " if column else ""
            if count == 1:
                out.append(f"{where}1 row (row {first}): {reason}")
            else:
                out.append(f"{where}{count:,} rows, first at row {first}: {reason}")
        if len(ranked) > top:
            out.append(f"… and {len(ranked) - top} more kinds of problem")
        return out


@dataclass(slots=True)
class Report:
    counts: dict[Status, int]
    errors: list[tuple[str, int, int]]  # (error, rows, first row)
    rows: int

    def render(self, top: int = 10) -> str:
        lines = [f"{self.rows} rows"]
        for status in Status:
            lines.append(f"  {status.value:<9} {self.counts[status]:>10}")
        if self.errors:
            lines.append("most common errors:")
            for error, count, first in self.errors[:top]:
                lines.append(f"  {count:>10}  {error}  (first at row {first})")
        return "\n".join(lines)


def latest_outcomes(path: str | Path) -> dict[int, RowOutcome]:
    """The last outcome of every row (a log that was not compacted reads the same)."""
    latest: dict[int, RowOutcome] = {}
    for outcome in read_outcomes(path):
        latest[outcome.row] = outcome
    return latest


_SKIPPED_LABELS = {
    "changed": "its key was posted before with other content (--on-changed skip)",
    "duplicate key": "an earlier row of the input has the same key",
}


def build_report(path: str | Path) -> Report:
    latest = latest_outcomes(path)
    counts = dict.fromkeys(Status, 0)
    errors: collections.Counter[str] = collections.Counter()
    first: dict[str, int] = {}
    for row in sorted(latest):
        outcome = latest[row]
        counts[outcome.status] += 1
        if outcome.status is Status.SKIPPED:
            # Posted earlier (the history): not a problem, unless its content changed or
            # another row of the input had its key; those are counted under one label.
            if outcome.error_type in _SKIPPED_LABELS:
                label = f"skipped: [{outcome.error_type}] {_SKIPPED_LABELS[outcome.error_type]}"
                errors[label] += 1
                first.setdefault(label, row)
        elif outcome.status is not Status.POSTED and outcome.error:
            label = f"{outcome.status.value}: "
            if outcome.error_type:
                label += f"[{outcome.error_type}] "
            label += fold(outcome.error)
            errors[label] += 1
            first.setdefault(label, row)
    ranked = [(label, count, first[label]) for label, count in errors.most_common()]
    return Report(counts, ranked, len(latest))


def export_failures(results: str | Path, input_path: str | Path, out: str | Path, *,
                    encoding: str = "utf-8", delimiter: str | None = None) -> int:
    """Write the input rows not posted, with ``status`` and ``error``; return how many.
    Rows ``skipped`` because their key was posted earlier are not among them."""
    latest = latest_outcomes(results)

    def not_posted(row: int) -> tuple[str, str] | None:
        outcome = latest.get(row)
        if outcome is None:
            return ("pending", "not processed yet: run the same command again to resume")
        if outcome.status is Status.POSTED or outcome.status is Status.SKIPPED:
            return None
        return (outcome.status.value, outcome.error)

    columns = input_columns(input_path, encoding=encoding, delimiter=delimiter)
    extra = ["status", "error"]
    extra = [name if name not in columns else f"{name}_bulkpost" for name in extra]
    written = 0
    source = open_source(input_path, columns, encoding=encoding, delimiter=delimiter)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, *extra])
        while (batch := source.next_batch()) is not None:
            entries: list[tuple[int, list[str]]] = [
                (row, [""] * len(columns)) for row, _reason in batch.broken]
            entries.extend((row, [batch.columns[c][index] for c in columns])
                           for index, row in enumerate(batch.rows))
            entries.sort(key=lambda entry: entry[0])
            for row, values in entries:
                if (state := not_posted(row)) is not None:
                    writer.writerow(values + list(state))
                    written += 1
    return written
