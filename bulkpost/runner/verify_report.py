"""What ``bulkpost verify`` found, for people and for programs.

Owns the check's summary (its counts, exit code and JSON form), the report in words (counts,
how the activities were read, then the differences grouped by column and field, a few rows
of each with the values sent and stored), and the ``--differences`` CSV file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulkpost.delivery.readback import Difference
from bulkpost.errors import UsageError
from bulkpost.runner.verify_reading import Checked

FIRST_ROWS = 5  # rows named per group of differences in the report
SHOWN_VALUES = 3  # of those, how many show sent and stored values
DIFFERENCES_HEADER = ["row", "activity_id", "column", "field", "sent", "stored"]


@dataclass(slots=True)
class VerifySummary:
    """What a check found; ``as_dict`` is the command's JSON summary."""

    results: str
    input: str
    seed: int | None
    sample: int | None
    posted: int = 0
    without_id: int = 0
    sampled: int = 0
    checks: list[Checked] = field(default_factory=list)
    calls: int = 0  # API calls made, the preflight's included
    elapsed_s: float = 0.0
    aborted: str = ""
    by_page: int = 0  # activities settled by their lead's pages (found, or missing)
    page_calls: int = 0  # calls that took (pages, e-mail look-ups, retries)
    by_activity: int = 0  # activities read one call per activity
    activity_calls: int = 0  # calls that took (retries included)
    pages_unused: str = ""  # why no activity was read by lead page ("": some were)

    @property
    def checked(self) -> int:
        return sum(1 for check in self.checks if not (check.unreadable or check.missing))

    @property
    def missing(self) -> int:
        return sum(1 for check in self.checks if check.missing)

    @property
    def differ(self) -> int:
        return sum(1 for check in self.checks if check.differences)

    @property
    def unreadable(self) -> int:
        return sum(1 for check in self.checks if check.unreadable)

    @property
    def found(self) -> list[Difference]:
        return [d for check in self.checks for d in check.differences]

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 3
        return 1 if self.differ or self.unreadable or self.missing else 0

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "results": self.results, "input": self.input, "posted": self.posted,
            "posted_without_id": self.without_id,
            "sample": "all" if self.sample is None else self.sample,
            "seed": self.seed, "sampled": self.sampled, "checked": self.checked,
            "equal": self.checked - self.differ, "differ": self.differ,
            "differences": len(self.found), "missing": self.missing,
            "unreadable": self.unreadable,
            "calls": self.calls,
            "read": {"by_page": self.by_page, "page_calls": self.page_calls,
                     "one_per_activity": self.by_activity,
                     "one_per_activity_calls": self.activity_calls},
            "elapsed_s": round(self.elapsed_s, 1), "exit_code": self.exit_code}
        if self.aborted:
            data["aborted"] = self.aborted
        return data


def _value(text: str | None) -> str:
    if text is None:
        return "(not in the answer)"
    return repr(text if len(text) <= 60 else text[:60] + "…")


def render_report(summary: VerifySummary) -> str:
    """The report for people: counts, then the differences grouped by column and field."""
    chosen = (f"all {summary.posted:,} posted rows" if summary.sample is None
              else f"a sample of {summary.sampled:,} of {summary.posted:,} posted rows, "
                   f"seed {summary.seed}")
    lines = [f"verify: {summary.checked:,} activities read back ({chosen}): "
             f"{summary.checked - summary.differ:,} as sent, {summary.differ:,} differ, "
             + (f"{summary.missing:,} missing or deleted, " if summary.missing else "")
             + f"{summary.unreadable:,} unreadable"]
    if summary.without_id:
        lines.append(f"  {summary.without_id:,} posted rows have no activity Id in the "
                     "results file: not read back")
    if summary.checks:
        lines.append("  " + read_how(summary))
    groups: dict[tuple[str, str], list[Difference]] = {}
    for difference in summary.found:
        groups.setdefault((difference.column, difference.label), []).append(difference)
    for (column, label), found in sorted(groups.items(),
                                         key=lambda group: (-len(group[1]), group[1][0].row)):
        rows = ", ".join(str(d.row) for d in found[:FIRST_ROWS])
        more = ", …" if len(found) > FIRST_ROWS else ""
        where = f"column {column!r} → {label}" if column else label
        lines.append(f"  {where}: {len(found):,} rows differ (rows {rows}{more})")
        lines += [f"      row {d.row} (activity {d.activity_id}): sent {_value(d.sent)}, "
                  f"stored {_value(d.stored)}" for d in found[:SHOWN_VALUES]]
    missing = [check for check in summary.checks if check.missing]
    if missing:
        lines.append(f"  missing or deleted in LeadSquared: {len(missing):,} activities the "
                     "results file holds as posted (the API does not know their Ids)")
        lines += [f"      row {c.posted.row} (activity {c.posted.activity_id}): {c.missing}"
                  for c in missing[:SHOWN_VALUES]]
    unreadable = [check for check in summary.checks if check.unreadable]
    if unreadable:
        lines.append(f"  unreadable: {len(unreadable):,} activities (not counted as equal)")
        lines += [f"      row {c.posted.row} (activity {c.posted.activity_id}): {c.unreadable}"
                  for c in unreadable[:SHOWN_VALUES]]
    return "\n".join(lines)


def read_how(summary: VerifySummary) -> str:
    """How the activities were read, and the calls each way took."""
    parts = []
    if summary.by_page:
        parts.append(f"{summary.by_page:,} by lead page in {summary.page_calls:,} calls "
                     "(note compared)")
    if summary.by_activity or not summary.by_page:
        parts.append(f"{summary.by_activity:,} one per activity in "
                     f"{summary.activity_calls:,} calls")
    why = ""
    if summary.pages_unused:
        spent = (f"; {summary.page_calls:,} calls spent calibrating"
                 if summary.page_calls else "")
        why = f" ({summary.pages_unused}{spent})"
    return "read " + ", ".join(parts) + why


def write_differences(path: Path, found: list[Difference]) -> None:
    """One CSV line per difference; ``stored`` is empty for a field the answer left out."""
    try:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(DIFFERENCES_HEADER)
            writer.writerows([d.row, d.activity_id, d.column, d.field, d.sent, d.stored or ""]
                             for d in found)
    except OSError as exc:
        raise UsageError(f"cannot write --differences {path}: {exc.strerror}") from None
