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
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bulkpost.history import History
from bulkpost.history_schema import POSTED, SETTLED, stored_hash
from bulkpost.outcomes import parse_utc_text, read_outcomes
from bulkpost.resume import Status

_IMPORT_POSTED = POSTED + " WHERE keys.run = excluded.run"
_IMPORT_CLAIM = """INSERT INTO claims (key, content_hash, event_code, run, at)
SELECT ?1, ?2, NULL, ?3, ?4 WHERE NOT EXISTS (
    SELECT 1 FROM keys WHERE key = ?1 AND content_hash = ?2)
ON CONFLICT (key, content_hash) DO NOTHING"""
_IMPORT_SETTLED = "DELETE FROM claims WHERE key = ? AND content_hash = ? AND run = ?"
_BATCH = 10_000  # statements per transaction
SHOWN_KEYS = 20  # keys posted more than once, named
# The file's posted rows (a row's last line wins), to find the keys posted more than once.
_POSTED_ROWS = ("CREATE TEMP TABLE IF NOT EXISTS imported_rows "
                "(row INTEGER PRIMARY KEY, key TEXT NOT NULL)")
_POSTED_ROW = "INSERT OR REPLACE INTO temp.imported_rows VALUES (?, ?)"


def import_results(history: Path, results: Iterable[Path], run_id: str
                   ) -> list[tuple[Path, dict[str, Any]]]:
    """``bulkpost history import``: every results file into the history, one run each."""
    done = []
    for index, path in enumerate(results):
        store = History(history, f"import-{run_id}-{index + 1}").open()
        try:
            done.append((path, import_file(store, path)))
        finally:
            store.close()
    return done


def import_file(store: History, path: str | Path) -> dict[str, Any]:
    """Seed ``store`` from one results file, as a run of its own. Returns the lines read,
    the keys posted and the claims this import made, and the keys the file posted more than
    once (how many, and the first of them)."""
    lines = ignored = 0
    store.db.execute(_POSTED_ROWS)
    store.db.execute("DELETE FROM temp.imported_rows")
    store.register("", str(path))
    run = store.run_row
    batch: list[tuple[str, tuple[Any, ...]]] = []
    for outcome in read_outcomes(path):
        lines += 1
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
    posted, claims = store.held_by_run()
    twice = store.db.execute(
        "SELECT key FROM temp.imported_rows GROUP BY key HAVING count(*) > 1 "
        "ORDER BY min(row)").fetchall()
    store.finish(0, posted, 0, 0)
    return {"lines": lines, "posted": posted, "to_look_up": claims, "ignored": ignored,
            "posted_more_than_once": len(twice),
            "keys_posted_more_than_once": [key for (key,) in twice[:SHOWN_KEYS]]}


def _parse_time(text: str) -> int:
    try:
        return int(parse_utc_text(text).timestamp())
    except ValueError:
        return int(time.time())
