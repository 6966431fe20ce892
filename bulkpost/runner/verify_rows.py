"""The rows ``bulkpost verify`` reads back: chosen from the results file, mapped again.

Owns choosing the posted rows (all, or a seeded sample: a bottom-k reservoir by a seeded
hash of the row number, so the same seed chooses the same rows however the file's lines are
ordered, in bounded memory) and mapping only those rows again from the input with the run's
preflight rules. The results file is read twice (a row's last line is its state); a results
file whose keys or content hashes the input no longer reproduces is refused.
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
from dataclasses import dataclass
from pathlib import Path

from bulkpost.core import mapping as mapping_file
from bulkpost.core.activity import Activity, FieldRule, InvalidRow, RowMapper
from bulkpost.core.mapping import check_columns
from bulkpost.core.options import InputSource
from bulkpost.core.statuses import Status
from bulkpost.errors import UsageError
from bulkpost.reading.source import describe, input_columns, open_source
from bulkpost.storage.results_file import read_outcomes


@dataclass(frozen=True, slots=True)
class Posted:
    """A row the results file holds as posted, with its activity Id."""

    row: int
    key: str
    activity_id: str
    content_hash: str
    created: bool = False  # posted (created with this content), not updated since
    updated_at: str = ""  # when the results file recorded it (UTC, to the second)
    attempts: int = 0


@dataclass(slots=True)
class Chosen:
    """The rows to read back, and what the results file held."""

    rows: list[Posted]  # in row order
    posted: int  # rows whose state is posted
    without_id: int  # of those, rows with no activity Id (nothing to read back)


def priority(seed: int, row: int) -> int:
    """A row's place in the sample: the rows of the lowest priorities are chosen."""
    digest = hashlib.blake2b(f"{seed}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose_posted(results: Path, sample: int | None, seed: int) -> Chosen:
    """The posted rows of a results file: all of them (``sample`` None), or ``sample``
    chosen uniformly at random.

    The sample is a reservoir of the rows with the lowest seeded hash of their row number
    (a bottom-k sample): uniform, in bounded memory, and the same for the same seed however
    the file's lines are ordered (before or after compaction); a smaller sample with the
    same seed is part of a larger one.
    """
    # First pass: the number of each row's last line, which holds its state.
    last = array("q")
    for number, outcome in enumerate(read_outcomes(results)):
        if outcome.row >= len(last):
            last.extend([-1] * (outcome.row + 1 - len(last)))
        last[outcome.row] = number
    chosen = Chosen([], 0, 0)
    reservoir: list[tuple[int, int, Posted]] = []  # (-priority, row, posted): a max-heap
    for number, outcome in enumerate(read_outcomes(results)):
        if last[outcome.row] != number or outcome.status not in (Status.POSTED,
                                                                  Status.UPDATED):
            continue  # only activities this results file says hold the row's content
        chosen.posted += 1
        if not outcome.activity_id:
            chosen.without_id += 1
            continue
        posted = Posted(outcome.row, outcome.key, outcome.activity_id, outcome.content_hash,
                        outcome.status is Status.POSTED, outcome.updated_at, outcome.attempts)
        if sample is None:
            chosen.rows.append(posted)
            continue
        entry = (-priority(seed, outcome.row), outcome.row, posted)
        if len(reservoir) < sample:
            heapq.heappush(reservoir, entry)
        elif entry > reservoir[0]:
            heapq.heapreplace(reservoir, entry)
    chosen.rows = sorted(chosen.rows + [entry[2] for entry in reservoir], key=lambda p: p.row)
    return chosen


def map_chosen(mapping: mapping_file.Mapping, input_path: InputSource, chosen: list[Posted],
               rules: dict[int, tuple[FieldRule, ...]] | None, *, encoding: str = "utf-8",
               delimiter: str | None = None) -> dict[int, Activity]:
    """The chosen rows' activities, mapped as the run mapped them (only those rows are
    kept). Raises :class:`UsageError` when a chosen row is missing from the input, no
    longer valid, or maps to other content than the results file recorded: the results
    file is then not this input's (or the mapping, or its options, changed)."""
    check_columns(mapping, input_columns(input_path, encoding=encoding, delimiter=delimiter),
                  describe(input_path))
    wanted = {posted.row: posted for posted in chosen}
    source = open_source(input_path, mapping.used_columns(), encoding=encoding,
                         delimiter=delimiter)
    mapper = RowMapper(mapping, source.utc_columns, source.typed_columns, rules)
    items: dict[int, Activity] = {}
    problems: dict[int, str] = {}  # row -> why it does not fit
    with source:
        while len(items) + len(problems) < len(wanted) and (batch := source.next_batch()):
            problems.update((row, f"row {row} is unreadable in the input ({reason})")
                            for row, reason in batch.broken if row in wanted)
            picks = [index for index, row in enumerate(batch.rows) if row in wanted]
            if not picks:
                continue
            rows = [batch.rows[index] for index in picks]
            columns = {name: [values[index] for index in picks]
                       for name, values in batch.columns.items()}
            for mapped in mapper.map_batch(rows, columns):
                posted = wanted[mapped.row]
                if isinstance(mapped, InvalidRow):
                    where = f"column {mapped.column!r}: " if mapped.column else ""
                    problems[mapped.row] = (f"row {mapped.row} was posted but is now invalid "
                                            f"({where}{mapped.reason})")
                elif posted.key and mapped.key != posted.key:
                    problems[mapped.row] = (f"row {mapped.row} has key {mapped.key!r} in the "
                                            f"input, {posted.key!r} in the results file")
                elif posted.content_hash and mapped.content_hash != posted.content_hash:
                    problems[mapped.row] = (f"row {mapped.row} maps to other content than was "
                                            f"posted (content hash {mapped.content_hash}, results "
                                            f"file {posted.content_hash})")
                else:
                    items[mapped.row] = mapped
    for row in sorted(set(wanted) - set(items) - set(problems)):
        problems[row] = f"row {row} is not in the input"
    if problems:
        listed = [problems[row] for row in sorted(problems)]
        raise UsageError(
            f"the results file does not belong to {describe(input_path)} as mapped now "
            "(another input, another mapping, or other --no-preflight/--decimal-comma "
            "than the run):\n  " + "\n  ".join(listed[:5])
            + (f"\n  … and {len(listed) - 5} more" if len(listed) > 5 else ""))
    return items
