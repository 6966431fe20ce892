"""``bulkpost report``: what a results file says, and the rows to fix and load again.

Owns reading a results file for people: counts by status, the most common errors (one
cause is one line: :func:`fold` folds the values that vary from row to row, so "lead id
'a' …" and "lead id 'b' …", "Lead with Id <guid 1> does not exist" and "… <guid 2> …",
"… at byte 17" and "… at byte 1234" count as one), and the failures export.

The failures file holds the input rows not posted, with all their original columns plus
``bulkpost_row`` (the row's number in the input; a failures file's own is kept as it is),
``status`` and ``error``, ready to fix and load again with the command that loaded the
input, a new ``--results`` file (row numbers refer to the file they were read from) and
``--fixes RESULTS``, which marks the original rows ``fixed`` (:mod:`bulkpost.storage.fixes`).
So it is written as that command reads: a CSV input's encoding (its byte-order mark too)
and delimiter (given, or sniffed as :mod:`bulkpost.reading.csv_dialect` does); a Parquet input
gives a CSV in UTF-8 with commas (and zone-aware timestamps with their ``+00:00``). The input must
decode whole before anything is written: else the error names the row, column and byte,
and suggests ``--encoding``. The file is written whole or not at all (atomic replace).
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import csv
import dataclasses
import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkpost.core.activity import EMAIL, GUID
from bulkpost.core.results_line import RowOutcome
from bulkpost.core.row_numbers import row_and_line, spreadsheet_line
from bulkpost.core.statuses import Status
from bulkpost.errors import InputError
from bulkpost.reading.csv_dialect import dialect
from bulkpost.reading.source import Source, input_columns, open_source
from bulkpost.reading.source import _is_parquet as is_parquet
from bulkpost.storage.kept import recall_section
from bulkpost.storage.results_file import Damage, read_outcomes

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# Lead Ids and e-mail addresses: "Lead with Id … does not exist" is one cause for any lead.
_LEAD = re.compile(rf"\b{GUID.pattern}\b|{EMAIL.pattern}")
# Where in a text a parser stopped: "at byte 1234", "position 17", "line 1 column 5 (char 4)".
_POSITION = re.compile(r"\b(byte|bytes|offset|position|pos|char|character|line|column|col|"
                       r"index)( |: ?)\d+\b", re.IGNORECASE)
# Other rows a row names: "row 17", "rows 17, 903 and 4 more".
_ROWS = re.compile(r"\b(rows?) \d+(?:, \d+)*(?: and [\d,]+ more)?\b")


def fold(reason: str) -> str:
    """A reason with what varies from row to row folded (quoted values, lead Ids and
    e-mail addresses, positions and offsets, other rows), so one kind of problem is one
    line."""
    reason = _QUOTED.sub("'…'", reason)
    reason = _ROWS.sub(r"\1 …", reason)
    reason = _LEAD.sub("…", reason)
    return _POSITION.sub(r"\1\2…", reason)


def rows_text(count: int) -> str:
    """``1 row``, ``2 rows``, ``1,234 rows``."""
    return f"{count:,} row" if count == 1 else f"{count:,} rows"


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
                out.append(f"{where}1 row, {row_and_line(first)}: {reason}")
            else:
                out.append(f"{where}{count:,} rows, first at {row_and_line(first)}: {reason}")
        if len(ranked) > top:
            more = len(ranked) - top
            out.append(f"… and {more} more kind{'' if more == 1 else 's'} of problem")
        return out


ORIGINAL_ROW = "bulkpost_row"  # the failures file's column: the row's number in the input


@dataclass(slots=True)
class Report:
    counts: dict[Status, int]
    errors: list[tuple[str, int, int]]  # (error, rows, first row)
    rows: int
    fixed_by: dict[str, int] = dataclasses.field(default_factory=dict)  # failures file: rows
    damaged: list[Damage] = dataclasses.field(default_factory=list)  # lines a run refuses

    def render(self, top: int = 10) -> str:
        lines = [rows_text(self.rows)]
        for status in Status:
            lines.append(f"  {status.value:<9} {self.counts[status]:>10}")
        for name, count in sorted(self.fixed_by.items()):
            lines.append(f"fixed (by {name}): {count:,}")
        for damage in self.damaged:
            lines.append(f"damaged line {damage.line}: {damage.reason}: {damage.text!r}")
        if any(not damage.reason.startswith("torn") for damage in self.damaged):
            lines.append("a run refuses this file until each damaged line is fixed or deleted "
                         "(check its row first: it may have been posted)")
        if self.errors:
            lines.append("most common errors:")
            for error, count, first in self.errors[:top]:
                lines.append(f"  {count:>10}  {error}  (first at row {first}, line "
                             f"{spreadsheet_line(first)} in a spreadsheet)")
        return "\n".join(lines)


def latest_outcomes(path: str | Path, damaged: Callable[[Damage], None] | None = None
                    ) -> dict[int, RowOutcome]:
    """The last outcome of every row (a log that was not compacted reads the same). A
    damaged line raises :class:`~bulkpost.storage.results_file.DamagedLine`, or is given to
    ``damaged``."""
    latest: dict[int, RowOutcome] = {}
    for outcome in read_outcomes(path, damaged):
        latest[outcome.row] = outcome
    return latest


_SKIPPED_LABELS = {
    "changed": "its key was posted before with other content, and not sent (--on-changed "
               "skip, or update where an update cannot change what changed)",
    "duplicate key": "an earlier row of the input has the same key",
    "repeat": "a repeat of an earlier row of the input (the same key and content): created "
              "once, by that row",
}


def build_report(path: str | Path) -> Report:
    damaged: list[Damage] = []
    latest = latest_outcomes(path, damaged.append)
    counts = dict.fromkeys(Status, 0)
    errors: collections.Counter[str] = collections.Counter()
    first: dict[str, int] = {}
    fixed_by: collections.Counter[str] = collections.Counter()
    for row in sorted(latest):
        outcome = latest[row]
        counts[outcome.status] += 1
        if outcome.status is Status.FIXED:
            fixed_by[outcome.error_type] += 1  # the failures file that fixed it
        elif outcome.status is Status.SKIPPED:
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
    return Report(counts, ranked, len(latest), dict(fixed_by), damaged)


FIXES_SECTION = "fixes"  # beside a fix run's results file: the results file it fixed


def fixes_of(results: Path) -> Path | None:
    """The results file of the load that the load writing ``results`` fixed (the --fixes it
    was given), or None."""
    kept = recall_section(results, FIXES_SECTION)
    of = kept.get("of") if kept is not None else None
    return Path(of) if isinstance(of, str) and of else None


@dataclass(frozen=True, slots=True)
class FailuresFile:
    """What :func:`export_failures` wrote, and how: what a person needs to load it again."""

    path: Path
    rows: int
    encoding: str  # the codec written with: utf-8-sig and utf-16 write a byte-order mark
    delimiter: str
    parquet: bool  # the input was Parquet: the file is a CSV in UTF-8 all the same
    # The results file whose rows bulkpost_row numbers: --fixes when loaded (None: a failures
    # file of a failures file whose fix run kept no note of the first load's file).
    results: Path | None

    def describe(self) -> str:
        encoding = {"utf-8-sig": "utf-8 with a byte-order mark",
                    "utf-16": "utf-16 with a byte-order mark"}.get(self.encoding, self.encoding)
        text = (f"wrote {rows_text(self.rows)} not posted to {self.path} "
                f"(encoding {encoding}, delimiter {self.delimiter!r}")
        fixes = (shlex.join(["--fixes", str(self.results)]) if self.results is not None else
                 "--fixes naming the results file of the first load (the one its "
                 f"{ORIGINAL_ROW} numbers belong to)")
        if self.parquet:
            return text + "; the input is Parquet, this file is a CSV: once fixed, load it " \
                          f"with --encoding utf-8, a new --results file and {fixes}, which " \
                          "marks the rows fixed there)"
        return text + ", as the input: once fixed, load it with the command that loaded " \
                      f"the input, a new --results file and {fixes}, which marks the rows " \
                      "fixed there)"


def export_failures(results: str | Path, input_path: str | Path, out: str | Path, *,
                    encoding: str = "utf-8", delimiter: str | None = None) -> FailuresFile:
    """Write the input rows not posted, with ``status`` and ``error``, as the input is
    written (see the module's docstring). Rows ``skipped`` because their key was posted
    earlier are not among them.

    Raises :class:`InputError` before writing anything when the input does not decode in
    ``encoding`` (naming row, column and byte), and, leaving no file, when a value cannot
    be written in it; ``OSError`` when ``out`` cannot be written.
    """
    latest = latest_outcomes(results)

    def not_posted(row: int) -> tuple[str, str] | None:
        outcome = latest.get(row)
        if outcome is None:
            return ("pending", "not processed yet: run the same command again to resume")
        if outcome.status in (Status.POSTED, Status.SKIPPED, Status.UPDATED, Status.FIXED):
            return None
        return (outcome.status.value, outcome.error)

    input_path, out = Path(input_path), Path(out)
    parquet = is_parquet(input_path)
    if parquet:
        encoding, delimiter, written_as = "utf-8", ",", "utf-8"
    else:
        encoding, delimiter = dialect(input_path, encoding, delimiter)
        check_decodes(input_path, encoding, delimiter)
        written_as = _with_byte_order_mark(input_path, encoding)
    columns = input_columns(input_path, encoding=encoding, delimiter=delimiter)
    # A failures file's own failures keep its bulkpost_row: the number in the first input.
    numbered = ORIGINAL_ROW not in columns
    extra = [ORIGINAL_ROW] if numbered else []
    extra += [name if name not in columns else f"{name}_bulkpost" for name in ("status", "error")]
    written = 0
    source = open_source(input_path, columns, encoding=encoding, delimiter=delimiter)
    # Read as UTC and written without a zone, these would load again in the mapping's zone.
    utc = [columns.index(name) for name in source.utc_columns] if parquet else []
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", newline="", encoding=written_as) as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow([*columns, *extra])
            for row, values in _rows_in_order(source, columns):
                if (state := not_posted(row)) is None:
                    continue
                for index in utc:
                    values[index] += "+00:00" if values[index] else ""
                _check_encodes(values, columns, row, written_as, input_path)
                status, error = state
                # Our own text, not the input's: what the encoding lacks is shown escaped.
                error = error.encode(written_as, "backslashreplace").decode(written_as)
                writer.writerow([*values, *([str(row)] if numbered else []), status, error])
                written += 1
        os.replace(temp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    # A failures file of a failures file keeps the first input's numbers: --fixes is then
    # the first load's results file, which the fix run noted beside its own.
    target = Path(results) if numbered else fixes_of(Path(results))
    return FailuresFile(out, written, written_as, delimiter, parquet, target)


def _rows_in_order(source: Source, columns: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Every input row by number, its cells in ``columns`` order; a broken row's are empty
    (its ``error`` holds its text)."""
    while (batch := source.next_batch()) is not None:
        entries: list[tuple[int, list[str]]] = [
            (row, [""] * len(columns)) for row, _reason in batch.broken]
        entries.extend((row, [batch.columns[c][index] for c in columns])
                       for index, row in enumerate(batch.rows))
        entries.sort(key=lambda entry: entry[0])
        yield from entries


def _check_encodes(values: list[str], columns: list[str], row: int, encoding: str,
                   input_path: Path) -> None:
    """Raise :class:`InputError` naming the row and column of a value ``encoding`` lacks.

    Values read from a file in that encoding always encode: this only makes sure that a
    value that does not never becomes a ``?`` or an error half-way through the file."""
    try:
        "".join(values).encode(encoding)
    except UnicodeEncodeError:
        for name, value in zip(columns, values, strict=True):
            try:
                value.encode(encoding)
            except UnicodeEncodeError as exc:
                raise InputError(
                    f"{input_path}: {row_and_line(row)}, column {name!r}: "
                    f"{value[exc.start:exc.end]!r} cannot be written in {encoding}, the "
                    "input's encoding, so the failures file could not be loaded again as "
                    "the input was; no failures file was written") from None


def _with_byte_order_mark(path: Path, encoding: str) -> str:
    """The codec that writes as ``path`` is written: its byte-order mark too, since a mark
    decides how the file is read whatever ``--encoding`` says."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    if start.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return encoding


# -- does the input decode? ------------------------------------------------------------------
_CHUNK = 1 << 20
_ESCAPED = re.compile("[\udc80-\udcff]")  # a byte surrogateescape could not decode


def check_decodes(path: Path, encoding: str, delimiter: str) -> None:
    """Raise :class:`InputError` if some byte of the CSV ``path`` does not decode in
    ``encoding``, naming the row, the column and the byte, and suggesting ``--encoding``.

    One pass at the codec's speed; a second, slower one (Python's CSV reader) only for a
    file that does not decode, to name the row and column as a run numbers them.
    """
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}") from None
    offset = 0
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(_CHUNK)
                buffered = decoder.getstate()[0]
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:
                    offset += exc.start - len(buffered)
                    break
                if not chunk:
                    return
                offset += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the input: {exc.strerror}") from None
    raise InputError(f"{path}: {_undecodable(path, encoding, delimiter, offset)}")


def _undecodable(path: Path, encoding: str, delimiter: str, offset: int) -> str:
    """Where the first byte that does not decode is, and what to do about it."""
    lead, cell = undecodable_at(path, encoding, delimiter, offset)
    try:
        cell.decode("cp1252")
        other = codecs.lookup(encoding).name != "cp1252"
    except UnicodeDecodeError:
        other = False
    suggestion = ("--encoding cp1252, as Excel on Windows writes" if other
                  else "--encoding with the encoding the file was written in")
    return (f"does not decode as {encoding} at {lead}: the file is in another encoding; "
            f"give {suggestion}. Nothing was written")


def undecodable_at(path: Path, encoding: str, delimiter: str, offset: int) -> tuple[str, bytes]:
    """Where the byte at ``offset`` that does not decode is, in words (its row, column and
    cell, as a run numbers them; else its offset), and the cell's bytes."""
    where, cell = f"byte {offset:,} of the file", b""
    try:
        with open(path, encoding=encoding, errors="surrogateescape", newline="") as handle:
            header: list[str] = []
            number = -1
            for record in csv.reader(handle, delimiter=delimiter):
                if not record:
                    continue  # blank lines are no rows (pyarrow skips them too)
                number += 1
                header = header or record
                bad = next((i for i, v in enumerate(record) if _ESCAPED.search(v)), None)
                if bad is None:
                    continue
                column = repr(header[bad]) if number and bad < len(header) else bad + 1
                row = row_and_line(number) if number else "the header row"
                where = f"{row}, column {column}, {where}"
                cell = record[bad].encode(encoding, "surrogateescape")
                break
    except (UnicodeError, csv.Error, OSError):
        pass  # the byte's offset alone, then
    return (f"{where} ({cell[:60]!r})" if cell else where), cell
