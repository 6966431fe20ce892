"""Closing the fix loop: ``run FAILURES --fixes RESULTS`` marks the original rows ``fixed``.

``bulkpost report RESULTS --input INPUT --failures to-fix.csv`` writes the rows not posted,
each with its row number in INPUT in the column ``bulkpost_row``
(:data:`~bulkpost.storage.report.ORIGINAL_ROW`). Once fixed, they are loaded with a results file of
their own (row numbers belong to the file they come from) and ``--fixes RESULTS``, the
original results file. This module owns what ``--fixes`` does:

- before the first request, :meth:`FixTarget.open` checks the failures file has the
  column and locks the original results file (no run of the original input may send those
  rows meanwhile; its lock is the one :class:`~bulkpost.storage.results.ResultsLog` takes);
- after the run (:meth:`FixTarget.record`), each row of the failures file that is done in
  its own results file (``posted``, ``updated``, or ``skipped`` because the history holds
  its key with an activity) marks its original row ``fixed`` in the original results file,
  with that activity's Id, the failures file's name (``error_type``) and its row there.
  The original line's key and content hash are kept: the original input still holds the
  broken content, and a ``fixed`` row is passed over whatever its content
  (:func:`bulkpost.core.resume.plan_row`), never sent again, never taken for another input.

A row the original run finished meanwhile (posted, updated, skipped) is not marked: it is
counted in ``already_done`` (the fix created a second activity for it). Marking is
idempotent: a row already ``fixed`` with the same activity is left as it is, so the same
fix command run again writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from bulkpost.core.options import InputSource
from bulkpost.core.results_line import RowOutcome
from bulkpost.core.statuses import Status
from bulkpost.errors import BulkpostError, Given, Setting, UsageError
from bulkpost.reading.source import describe, input_columns, open_source
from bulkpost.storage.kept import keep_section_durably
from bulkpost.storage.report import FIXES_SECTION, ORIGINAL_ROW
from bulkpost.storage.results import ResultsLog
from bulkpost.storage.results_file import read_outcomes

_DONE = frozenset({Status.POSTED, Status.UPDATED, Status.SKIPPED})


@dataclass(slots=True)
class FixesRecorded:
    """What :meth:`FixTarget.record` did to the original results file."""

    fixed: int = 0  # original rows marked fixed now
    already_fixed: int = 0  # marked fixed before, by the same activity
    already_done: list[int] = field(default_factory=list)  # finished by the original run
    not_numbered: list[int] = field(default_factory=list)  # failures rows without a number


class FixTarget:
    """The original results file a run of a failures file fixes rows of, locked while open."""

    def __init__(self, original: Path, failures: InputSource, *, encoding: str = "utf-8",
                 delimiter: str | None = None) -> None:
        self.original = Path(original)
        self.failures = failures
        self._encoding = encoding
        self._delimiter = delimiter
        self._log: ResultsLog | None = None

    def open(self, results: Path) -> FixTarget:
        """Check and lock, before any request. ``results``: this run's own results file."""
        given = Given(Setting("fixes"), str(self.original))
        if not self.original.is_file():
            raise UsageError("{given}: no such results file (give the results file of the "
                             "load the failures file was written from)", given=given)
        if self.original.resolve() == Path(results).resolve() or (
                Path(results).exists() and os.path.samefile(self.original, results)):
            raise UsageError("{given} is this run's own results file: a failures file is "
                             "loaded with a new results file, and --fixes names the original "
                             "one", given=given)
        if isinstance(self.failures, pa.RecordBatchReader):
            raise UsageError("{given}: a record batch stream is read once only; give the "
                             "failures file itself", given=given)
        columns = input_columns(self.failures, encoding=self._encoding,
                                delimiter=self._delimiter)
        if ORIGINAL_ROW not in columns:
            raise UsageError(
                f"{{given}}: {describe(self.failures)} has no {ORIGINAL_ROW!r} column, so its "
                "rows cannot be matched to the original rows: give a failures file written by "
                "`bulkpost report RESULTS --input INPUT --failures FILE`", given=given)
        next(read_outcomes(self.original), None)  # refuses a file that is not results
        self._log = ResultsLog(self.original).open()
        # Which load this one fixes, kept beside its own results file: a failures file of
        # this failures file keeps the first input's row numbers, and `report` then names
        # the first load's results file as --fixes, not this one.
        keep_section_durably(Path(results), FIXES_SECTION,
                             {"version": 1, "of": str(self.original.resolve())})
        return self

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def record(self, results: Path, history: Path | None = None) -> FixesRecorded:
        """Mark fixed, in the original results file, the original row of every failures
        row done in ``results`` (this run's results file); durable when it returns. With
        ``history`` (the run's), a claim the original row's request left there is dropped:
        its content was replaced by the fix, and carried over it would be sent again."""
        assert self._log is not None, "open() first"
        log, done = self._log, FixesRecorded()
        finished = {outcome.row: outcome for outcome in read_outcomes(results)}
        name = describe(self.failures)
        source = open_source(self.failures, [ORIGINAL_ROW], encoding=self._encoding,
                             delimiter=self._delimiter)
        wrote = False
        dropped: list[tuple[str, str]] = []  # (key, content hash) of the originals fixed
        while (batch := source.next_batch()) is not None:
            for row, original_text in zip(batch.rows, batch.columns[ORIGINAL_ROW], strict=True):
                outcome = finished.get(row)
                activity_id = _activity_of(outcome)
                if not activity_id:
                    continue  # not done yet: a later run of the same command marks it
                text = original_text.strip()
                if not text.isdigit() or not text.isascii() or int(text) < 1:
                    done.not_numbered.append(row)
                    continue
                original = int(text)
                recorded = log.recorded(original)
                if recorded is not None and recorded.status in _DONE:
                    done.already_done.append(original)
                    continue
                line = log.last_outcome(original) if recorded is not None else None
                if (line is not None and line.status is Status.FIXED
                        and line.activity_id == activity_id):
                    done.already_fixed += 1
                    continue
                log.record(RowOutcome(
                    original, line.key if line else "", Status.FIXED, activity_id=activity_id,
                    error_type=name, error=f"fixed by row {row} of {name} (results {results})",
                    content_hash=line.content_hash if line else ""))
                done.fixed += 1
                wrote = True
                if line is not None and line.content_hash:
                    dropped.append((line.key or line.content_hash, line.content_hash))
        if wrote:
            log.compact()  # durable: written whole by atomic replace, one line per row
        if history is not None and dropped:
            _drop_claims(history, dropped)
        return done


def _drop_claims(path: Path, originals: list[tuple[str, str]]) -> None:
    """Drop the history's claims of the original rows' contents (a request of the broken
    content that failed or was left unknown): the fix took their place. Claims of other
    contents, and posted keys, are left as they are."""
    from bulkpost.storage.history.database import History
    from bulkpost.storage.history.schema import SETTLED, stored_hash

    store = History(path).open(lock=False)
    try:
        store.commit([(SETTLED, (key, stored_hash(content))) for key, content in originals])
    finally:
        store.close()


def is_failures_file(source: InputSource, encoding: str, delimiter: str | None) -> bool:
    """Whether ``source`` has the failures file's row numbers (False when unreadable: the
    run itself says why)."""
    try:
        return ORIGINAL_ROW in input_columns(source, encoding=encoding, delimiter=delimiter)
    except (BulkpostError, OSError, ValueError):
        return False


def _activity_of(outcome: RowOutcome | None) -> str:
    """The activity a failures row's own results line says it is now ("": not done)."""
    if outcome is None or outcome.status not in _DONE:
        return ""
    if outcome.status is Status.SKIPPED and outcome.error_type != "history":
        return ""  # skipped as changed or as a duplicate key: not posted
    return outcome.activity_id
