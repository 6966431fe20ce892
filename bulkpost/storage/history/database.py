"""The history: every row key that runs sharing it have posted, across runs and input files.

A results file protects one input; nightly exports overlap (yesterday's file and today's
share rows), so ``--history PATH`` keeps, in one SQLite database (stdlib ``sqlite3``, WAL
mode), every posted row key: its activity Id, event code, content hash, the run that posted
it and when; and every *claim*: a request for a key with a given content that went out and
whose answer a run has not recorded yet. A row's key is its ``key_column`` value; without one
(or with an empty cell) it is the row's content hash, so identical rows are one key.

The rules, enforced with the results file's own durability:

- before a row's create request is sent, its claim (key, content) is committed with the
  same group commit that puts the row's ``unknown`` line on disk; the answer settles that
  claim, and only that one: created, the key is posted with the activity Id; refused,
  the claim is dropped. Claims of other contents for the same key are never touched;
- a later run (any input, any results file) skips a key posted with the row's content (the
  row is ``skipped``); a claim for the row's very content, left by a run that stopped, is
  looked up first, as an ``unknown`` row is, and the row sent only if it was not created;
  a key with claims of other contents only is sent (those contents cannot be looked up,
  and the key may hold nothing);
- a key posted with other content is handled by ``--on-changed``: ``skip`` (the default,
  counted and warned about), ``post`` (a new activity, which the key then holds) or ``fail``
  (the row is ``invalid``, naming the key column);
- the first row of an input with a key is the key's row: later ones are ``skipped`` (same
  content) or handled by ``--on-changed`` (other content). What a row's key holds is read
  by :func:`~bulkpost.core.key_holder.key_holder_of`, and the row planned by the planner;
- the database is locked by a run (a lock file beside it): a second run refuses, exit 2.

Commits are made from the results file's sync thread; reads for a batch of rows from the
feeder's thread; one lock serialises them on the one connection. Keys of this run are
remembered in a temporary table, so memory stays flat whatever the input size.

This module owns :class:`History`, what a run (or a command) does with the database. Its
tables and the statements that write them are :mod:`bulkpost.storage.history.schema`'s; seeding it
from results files is :mod:`bulkpost.storage.history.imports`'s.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bulkpost.core.activity import Activity, identity_hash
from bulkpost.core.key_holder import KeyHolder, key_holder_of
from bulkpost.core.options import OnChanged
from bulkpost.errors import HistoryLocked, ResultsWriteError
from bulkpost.storage.history.reports import HistoryReports
from bulkpost.storage.history.schema import (
    CLAIM,
    LATEST_CLAIM,
    NOT_SUPERSEDED,
    POSTED,
    POSTED_SETTLED,
    SETTLED,
    damaged,
    hash_text,
    open_database,
    stored_hash,
)
from bulkpost.storage.locking import lock_beside, release

if TYPE_CHECKING:
    from bulkpost.core.options import RunOptions
    from bulkpost.core.summary import Summary

log = structlog.get_logger("bulkpost")

_CHUNK = 500  # keys per IN (...) query: well under SQLite's variable limit


@dataclass(frozen=True, slots=True)
class CarriedRow:
    """A row an earlier run left unfinished, as its claim kept it."""

    activity: Activity  # its number is the one it had in ``origin``
    key: str  # its key in the history
    update_of: str  # the activity it updates ("": a create)
    origin: str  # the input it came from
    at: int  # when its last request went out (Unix seconds)


def history_key(item: Activity) -> str:
    """The row's key in the history: its key column's value, else its content hash."""
    return item.key or item.content_hash


class History(HistoryReports):
    """An open history database, for one run or one command. Use :meth:`open`."""

    def __init__(self, path: str | Path, run_id: str = "") -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._lock_fd = -1
        self._run = 0  # runs.id of this run; 0 until registered
        self._input = ""  # the input this run reads, which its claims name as their origin
        self._pending: list[tuple[str, tuple[Any, ...]]] = []

    def __enter__(self) -> History:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- opening and closing -------------------------------------------------------------
    def open(self, *, lock: bool = True) -> History:
        """Open (creating it if need be); ``lock``: keep other runs out while open."""
        if lock:
            self._lock_fd = lock_beside(self.path, "history database", HistoryLocked)
        try:
            self._db = open_database(self.path)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise damaged(self.path, exc) from None
        except BaseException:
            self.close()
            raise
        return self

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the history is not open"
        return self._db

    @property
    def run_row(self) -> int:
        """This run's ``runs.id``, which its keys and claims name; 0 until registered."""
        return self._run

    def register(self, input_text: str, results: str) -> None:
        """Record this run's start; a run id given again (by a caller's own ids) goes on
        as the same run."""
        self._input = input_text
        with self._lock:
            self.db.execute(
                "INSERT INTO runs (run_id, started, input, results) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET started = excluded.started, "
                "finished = NULL, input = excluded.input, results = excluded.results",
                (self.run_id, int(time.time()), input_text, results))
            self._run = self.db.execute("SELECT id FROM runs WHERE run_id = ?",
                                        (self.run_id,)).fetchone()[0]

    def finish(self, exit_code: int, posted: int, skipped: int, changed: int,
               updated: int = 0) -> None:
        """Commit what is pending and record how the run ended."""
        if not self._run:
            return
        self.commit(self.take())
        with self._lock:
            self.db.execute(
                "UPDATE runs SET finished = ?, exit_code = ?, posted = ?, skipped = ?, "
                "changed = ?, updated = ? WHERE id = ?",
                (int(time.time()), exit_code, posted, skipped, changed, updated, self._run))

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None
        if self._lock_fd >= 0:
            release(self._lock_fd)
            self._lock_fd = -1

    # -- a run's writes: buffered on the event loop, committed with the results file ------
    def sending(self, item: Activity, update_of: str = "",
                origin: tuple[str, int] | None = None) -> None:
        """The row's request (a create, or an update of ``update_of``) is about to go out
        (committed before it does). The claim keeps the request and where it came from
        (``origin``: an input and its row; default this run's input and the row's number),
        so that a later run can finish it from another input."""
        where, row = origin or (self._input, item.row)
        self._pending.append((CLAIM, (history_key(item), stored_hash(item.content_hash),
                                      item.event, self._run, int(time.time()), update_of,
                                      item.body, item.lead, where, row)))

    def posted(self, item: Activity, activity_id: str) -> None:
        """The key holds ``activity_id`` with the row's content (created, or updated)."""
        key, content = history_key(item), stored_hash(item.content_hash)
        self._pending.append((POSTED, (key, activity_id, item.event, content, self._run,
                                       int(time.time()), stored_hash(identity_hash(item)))))
        self._pending.append((POSTED_SETTLED, (key, content)))

    def released(self, item: Activity) -> None:
        """The request was refused: nothing was created; its claim is dropped."""
        self._pending.append((SETTLED, (history_key(item), stored_hash(item.content_hash))))

    def set_meta(self, name: str, value: str) -> None:
        """Keep a note for later runs (a learned calibration), committed with the next
        group commit."""
        self._pending.append(("INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                              "SET value = excluded.value", (name, value)))

    def meta(self, name: str) -> str | None:
        with self._reading() as db:
            found = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if found is None else str(found[0])

    def take(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The writes recorded so far (on the event loop), for :meth:`commit`."""
        batch, self._pending = self._pending, []
        return batch

    def commit(self, batch: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Make ``batch`` durable, in one transaction (called from a worker thread)."""
        if not batch:
            return
        try:
            with self._lock:
                if self._db is None:  # closed under a run that was cancelled at once
                    raise sqlite3.ProgrammingError("the history was closed")
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    for statement, parameters in batch:
                        db.execute(statement, parameters)
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            hint = (f"; {damaged(self.path, exc)}" if "malformed" in str(exc)
                    or type(exc) is sqlite3.DatabaseError else "")
            raise ResultsWriteError(f"{self.path}: cannot write the history ({exc}); "
                                    f"stopped sending{hint}") from None

    # -- reads ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a file SQLite cannot read (damaged pages) is said
        as such, naming the file and how to rebuild it, never as an internal error."""
        with self._lock:
            try:
                yield self.db
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                    raise
                raise damaged(self.path, exc) from None

    def screen(self, items: Sequence[Activity]) -> dict[int, KeyHolder]:
        """For each row (by number) whose key an earlier row of this input or the history
        holds: its :class:`~bulkpost.core.key_holder.KeyHolder` (read by
        :func:`~bulkpost.core.key_holder.key_holder_of`). Rows are taken in order; each key's first
        row is remembered. Called from the feeder's thread, a batch at a time."""
        found: dict[int, KeyHolder] = {}
        if not items:
            return found
        keys = [history_key(item) for item in items]
        with self._reading() as db:
            seen = {key: (row, content) for key, row, content in self._rows_in(
                db, "SELECT key, row, content_hash FROM temp.seen WHERE key IN ({})", keys)}
            posted = {key: (activity_id, content, run_id or "?", at, event_code,
                            "" if identity is None else hash_text(identity))
                      for key, activity_id, content, run_id, at, event_code, identity
                      in self._rows_in(
                db, "SELECT k.key, k.activity_id, k.content_hash, r.run_id, k.at, "
                    "k.event_code, k.identity_hash "
                    "FROM keys k LEFT JOIN runs r ON r.id = k.run WHERE k.key IN ({})", keys)}
            claims: dict[str, dict[int, tuple[str, int, str]]] = {}
            for key, content, run_id, at, update_of in self._rows_in(
                    db, "SELECT c.key, c.content_hash, r.run_id, c.at, c.update_of "
                        "FROM claims c LEFT JOIN runs r ON r.id = c.run WHERE c.key IN ({})",
                    keys):
                claims.setdefault(key, {})[content] = (run_id or "?", at, update_of)
            fresh: list[tuple[str, int, int]] = []
            for item, key in zip(items, keys, strict=True):
                content = stored_hash(item.content_hash)
                first = seen.get(key)
                holder = key_holder_of(content, first, posted.get(key), claims.get(key, {}))
                if holder is not None:
                    found[item.row] = holder
                if first is None:
                    seen[key] = (item.row, content)
                    fresh.append((key, item.row, content))
            db.executemany("INSERT OR IGNORE INTO temp.seen VALUES (?, ?, ?)", fresh)
        return found

    def carried(self, after: str = "", limit: int = 1000) -> list[CarriedRow]:
        """Rows earlier runs left unfinished (failed or unknown, their request kept) whose
        key no row of this run's input has, a page at a time in key order (keys after
        ``after``). Call once the input is read. A key's latest claim only, and only if no
        content was posted under the key since: an older content stays to be looked up
        when the key comes again, never brought back over a newer one."""
        with self._reading() as db:
            found = db.execute(
                "SELECT c.key, c.content_hash, c.event_code, c.update_of, c.body, c.lead, "
                "c.origin, c.row, c.at FROM claims c "
                "WHERE c.key > ? AND c.body IS NOT NULL "
                "AND c.key NOT IN (SELECT key FROM temp.seen) "
                f"AND {LATEST_CLAIM} AND {NOT_SUPERSEDED} "
                "ORDER BY c.key LIMIT ?", (after, limit)).fetchall()
        rows: list[CarriedRow] = []
        for key, content, event, update_of, body, lead, origin, row, at in found:
            text = hash_text(content)
            if rows and rows[-1].key == key:
                continue  # two claims of one key by one run in one second: the first
            item = Activity(row, "" if key == text else key, lead, bytes(body), text,
                            event or 0)
            rows.append(CarriedRow(item, key, update_of, origin, at))
        return rows

    @staticmethod
    def _rows_in(db: sqlite3.Connection, query: str, keys: Sequence[str]) -> Iterator[Any]:
        """The query's records for these keys (its ``IN ({})``), a chunk of keys at a time."""
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start:start + _CHUNK]
            yield from db.execute(query.format(",".join("?" * len(chunk))), chunk)

    def claimed_ids(self, content_hash: str) -> set[str]:
        """Activity Ids that posted keys with this content hold."""
        with self._reading() as db:
            cursor = db.execute("SELECT activity_id FROM keys WHERE content_hash = ?",
                                (stored_hash(content_hash),))
            return {activity_id for (activity_id,) in cursor if activity_id}


# What a run with --on-changed skip or update may do next with the changed rows it skipped.
_CHANGED_NEXT: dict[OnChanged, str] = {
    "skip": "--on-changed update updates them in place (note and custom fields), fail lists "
            "them as invalid; post creates a new activity beside each (a second copy)",
    "update": "an update cannot change their lead, event code or date-time (or the history "
              "does not know them); post creates a new activity beside each (a second copy)",
}


def finish_history(history: History, summary: Summary, options: RunOptions,
                   exit_code: int | None = None) -> None:
    """At the end of a run: commit the history's last writes and how the run ended; warn of
    changed keys skipped."""
    if summary.changed and options.on_changed in ("skip", "update"):
        log.warning("history.changed_skipped", rows=summary.changed,
                    on_changed=options.on_changed, next=_CHANGED_NEXT[options.on_changed])
    if options.dry_run:
        return
    try:
        history.finish(summary.exit_code if exit_code is None else exit_code,
                       summary.posted, summary.skipped, summary.changed, summary.updated)
    except ResultsWriteError as exc:
        # Its claims were committed before each send; only the last posted marks and the
        # run's line are missing, and the next run repairs them from the results file.
        log.error("history.not_finished", reason=str(exc))
        if not summary.aborted:
            summary.aborted = str(exc)
