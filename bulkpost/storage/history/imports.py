"""Seeding the history from results files: ``bulkpost history import``.

Before the first run with ``--history``, the results files of earlier loads say what was
posted. Each file is imported as a run of its own, in file order (a log that was not
compacted reads right: a file's later lines win over its earlier ones):

- a ``posted`` row's key becomes a posted key, unless another run posted that key (what
  another run posted is kept);
- an ``unknown`` or ``failed`` row may have been created: its key and content become a
  claim, so the next run looks it up before sending it, unless that content is the one the
  key was posted with;
- a ``rejected`` row created nothing: it drops only a claim this import made;
- ``invalid`` and ``skipped`` rows (their key is in some history already), and rows
  without a key or content hash, are counted as ignored;
- a key posted by more than one row of the file (two different calls under one id, or
  identical rows both posted, by a bulkpost that did not check an input's repeated keys)
  holds more than one activity; the history keeps one of them. They are counted and named
  (:data:`SHOWN_KEYS` of them), never merged quietly.

A results file keeps no lead, date-time or event code, which ``--on-changed update`` needs
to update a key's activity in place. Given the input and mapping the results file was
written for (:class:`ResultsInput`), each posted or updated row is mapped again, as a run
without the activity types' schemas maps it, and its key recorded as a run that posted it
would have: event code and identity (lead and date-time). A row whose key or content hash
differs from its results line (another input, another mapping, or values the run's
schemas normalised) is named and its key recorded without them, as is every key of an
import without an input.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulkpost.core.activity import Activity, RowMapper, identity_hash
from bulkpost.core.mapping import Mapping, check_columns
from bulkpost.core.results_line import parse_utc_text
from bulkpost.core.resume import key_digest
from bulkpost.core.statuses import Status
from bulkpost.errors import MappingError
from bulkpost.reading.source import input_columns, open_source
from bulkpost.storage.history.database import History, history_key
from bulkpost.storage.history.schema import POSTED, SETTLED, stored_hash
from bulkpost.storage.results_file import read_outcomes
from bulkpost.storage.row_index import RowIndex

_IMPORT_POSTED = POSTED + " WHERE keys.run = excluded.run"
_IMPORT_CLAIM = """INSERT INTO claims (key, content_hash, event_code, run, at)
SELECT ?1, ?2, NULL, ?3, ?4 WHERE NOT EXISTS (
    SELECT 1 FROM keys WHERE key = ?1 AND content_hash = ?2)
ON CONFLICT (key, content_hash) DO NOTHING"""
_IMPORT_SETTLED = "DELETE FROM claims WHERE key = ? AND content_hash = ? AND run = ?"
# A key this import posted, with the content its row maps to: what an update needs of it.
_IDENTIFIED = ("UPDATE keys SET event_code = ?, identity_hash = ? "
               "WHERE key = ? AND content_hash = ? AND run = ?")
_BATCH = 10_000  # statements per transaction
SHOWN_KEYS = 20  # keys posted more than once, named
# The file's posted rows (a row's last line wins), to find the keys posted more than once.
_POSTED_ROWS = ("CREATE TEMP TABLE IF NOT EXISTS imported_rows "
                "(row INTEGER PRIMARY KEY, key TEXT NOT NULL)")
_POSTED_ROW = "INSERT OR REPLACE INTO temp.imported_rows VALUES (?, ?)"
_DONE = (Status.POSTED, Status.UPDATED)


@dataclass(frozen=True, slots=True)
class ResultsInput:
    """The input and mapping a results file was written for, read as ``run`` reads them."""

    path: Path
    mapping: Mapping
    encoding: str = "utf-8"
    delimiter: str | None = None


@dataclass(slots=True)
class Imported:
    """What importing one results file did."""

    path: Path
    counts: dict[str, Any]
    not_matching: list[str] = field(default_factory=list)  # rows whose input differs, why


def import_results(history: Path, results: Iterable[Path], run_id: str,
                   source: ResultsInput | None = None) -> list[Imported]:
    """``bulkpost history import``: every results file into the history, one run each;
    with ``source``, its keys identified from the input they were written for."""
    if source is not None and source.mapping.display_names:
        raise MappingError(
            f"{source.mapping.source}: fields given by display name need the activity "
            "type's schema, which history import does not read: use SchemaNames")
    if source is not None:
        check_columns(source.mapping, input_columns(
            source.path, encoding=source.encoding, delimiter=source.delimiter),
            str(source.path))
    done = []
    for index, path in enumerate(results):
        store = History(history, f"import-{run_id}-{index + 1}").open()
        try:
            done.append(import_file(store, path, source))
        finally:
            store.close()
    return done


def import_file(store: History, path: str | Path, source: ResultsInput | None = None
                ) -> Imported:
    """Seed ``store`` from one results file, as a run of its own. Counts the lines read,
    the keys posted, the claims this import made, the posted keys identified (their lead,
    date-time and event code recorded, from ``source``) and not, and the keys the file
    posted more than once (how many, and the first of them)."""
    store.db.execute(_POSTED_ROWS)
    store.db.execute("DELETE FROM temp.imported_rows")
    lines = ignored = 0
    input_text = "" if source is None else str(source.path)
    store.register(input_text, str(path))
    run = store.run_row
    batch: list[tuple[str, tuple[Any, ...]]] = []
    index = RowIndex() if source is not None else None
    for outcome in read_outcomes(path):
        lines += 1
        if index is not None:
            index.remember(outcome, 0)
        key = outcome.key or outcome.content_hash
        if len(batch) >= _BATCH:
            store.commit(batch)
            batch = []
        at = _parse_time(outcome.updated_at)
        content = stored_hash(outcome.content_hash)
        if not key:
            ignored += 1
        elif outcome.status in (Status.POSTED, Status.UPDATED) and outcome.activity_id:
            # Results files keep no lead or date-time: imported keys cannot be updated.
            batch.append((_IMPORT_POSTED, (key, outcome.activity_id, None, content, run, at,
                                           None)))
            batch.append((SETTLED, (key, content)))
            batch.append((_POSTED_ROW, (outcome.row, key)))
        elif outcome.status in (Status.UNKNOWN, Status.FAILED):
            batch.append((_IMPORT_CLAIM, (key, content, run, at)))
        elif outcome.status is Status.REJECTED:
            batch.append((_IMPORT_SETTLED, (key, content, run)))
        else:  # invalid, skipped (its key is in some history already)
            ignored += 1
    store.commit(batch)
    not_matching = [] if index is None or source is None else _identify(
        store, index, source, path)
    posted, claims = store.held_by_run()
    identified = store.identified_by_run()
    twice = store.db.execute(
        "SELECT key FROM temp.imported_rows GROUP BY key HAVING count(*) > 1 "
        "ORDER BY min(row)").fetchall()
    counts = {"lines": lines, "posted": posted, "to_look_up": claims, "ignored": ignored,
              "identified": identified, "not_identified": posted - identified,
              "not_matching": len(not_matching), "posted_more_than_once": len(twice),
              "keys_posted_more_than_once": [key for (key,) in twice[:SHOWN_KEYS]]}
    store.finish(0, posted, 0, 0)
    return Imported(Path(path), counts, not_matching)


def _identify(store: History, index: RowIndex, source: ResultsInput, path: str | Path
              ) -> list[str]:
    """Record the event code and identity of every key this import posted whose row, in
    the input, maps to the content its results line holds. Returns why each other row
    recorded posted (or updated) does not fit, in row order."""
    mapping, run = source.mapping, store.run_row
    reader = open_source(source.path, mapping.used_columns(), encoding=source.encoding,
                         delimiter=source.delimiter)
    mapper = RowMapper(mapping, reader.utc_columns, reader.typed_columns)
    problems: dict[int, str] = {}
    seen: set[int] = set()
    batch: list[tuple[str, tuple[Any, ...]]] = []
    while (rows := reader.next_batch()) is not None:
        for row, reason in rows.broken:
            recorded = index.recorded(row)
            if recorded is not None and recorded.status in _DONE:
                seen.add(row)
                problems[row] = f"row {row}: unreadable in the input ({reason})"
        for item in mapper.map_batch(rows.rows, rows.columns):
            recorded = index.recorded(item.row)
            if recorded is None or recorded.status not in _DONE:
                continue
            seen.add(item.row)
            if not isinstance(item, Activity):
                where = f"column {item.column!r}: " if item.column else ""
                problems[item.row] = f"row {item.row}: invalid in the input ({where}{item.reason})"
            elif recorded.key_digest and recorded.key_digest != key_digest(item.key):
                problems[item.row] = f"row {item.row}: key {item.key!r} in the input, another " \
                                     "in the results file"
            elif recorded.content_hash and recorded.content_hash != item.content_hash:
                problems[item.row] = (f"row {item.row}: maps to content {item.content_hash}, "
                                      f"the results file holds {recorded.content_hash}")
            else:
                batch.append((_IDENTIFIED, (item.event, stored_hash(identity_hash(item)),
                                            history_key(item), stored_hash(item.content_hash),
                                            run)))
        if len(batch) >= _BATCH:
            store.commit(batch)
            batch = []
    store.commit(batch)
    for outcome in read_outcomes(path):
        if outcome.row not in seen and outcome.row not in problems:
            recorded = index.recorded(outcome.row)
            if recorded is not None and recorded.status in _DONE:
                problems[outcome.row] = f"row {outcome.row}: not in the input"
    return [problems[row] for row in sorted(problems)]


def _parse_time(text: str) -> int:
    try:
        return int(parse_utc_text(text).timestamp())
    except ValueError:
        return int(time.time())
