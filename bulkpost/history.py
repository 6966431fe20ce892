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
  content) or handled by ``--on-changed`` (other content);
- the database is locked by a run (a lock file beside it): a second run refuses, exit 2.

Commits are made from the results file's sync thread; reads for a batch of rows from the
feeder's thread; one lock serialises them on the one connection. Keys of this run are
remembered in a temporary table, so memory stays flat whatever the input size.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkpost.activity import Activity
from bulkpost.errors import HistoryLocked, ResultsWriteError, UsageError
from bulkpost.locking import lock_beside, release
from bulkpost.results import parse_utc_text, read_outcomes, utc_text
from bulkpost.resume import Status

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    started INTEGER NOT NULL,
    finished INTEGER,
    input TEXT NOT NULL DEFAULT '',
    results TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    posted INTEGER,
    skipped INTEGER,
    changed INTEGER
);
-- Posted keys: the activity each holds (the latest, when posted again with new content).
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY,
    activity_id TEXT NOT NULL,
    event_code INTEGER,                -- NULL when imported from a results file
    content_hash INTEGER NOT NULL,     -- the posted content's 64-bit hash, signed
    run INTEGER NOT NULL,              -- runs.id of the run that posted it
    at INTEGER NOT NULL                -- when, in Unix seconds (UTC)
) WITHOUT ROWID;
-- Activities held by posted keys, by content: a look-up must not claim another key's.
CREATE INDEX IF NOT EXISTS keys_by_content ON keys (content_hash);
-- Claims: a request for this key with this content went out (or may have) and its outcome
-- is not known yet; one per content, so that no claim hides another.
CREATE TABLE IF NOT EXISTS claims (
    key TEXT NOT NULL,
    content_hash INTEGER NOT NULL,
    event_code INTEGER,
    run INTEGER NOT NULL,              -- runs.id of the run whose request it was
    at INTEGER NOT NULL,               -- when its (last) request went out
    PRIMARY KEY (key, content_hash)
) WITHOUT ROWID;
"""
_CHUNK = 500  # keys per IN (...) query: well under SQLite's variable limit

_CLAIM = """INSERT INTO claims (key, content_hash, event_code, run, at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (key, content_hash) DO UPDATE SET event_code = excluded.event_code,
    run = excluded.run, at = excluded.at"""
_POSTED = """INSERT INTO keys (key, activity_id, event_code, content_hash, run, at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET activity_id = excluded.activity_id,
    event_code = coalesce(excluded.event_code, keys.event_code),
    content_hash = excluded.content_hash, run = excluded.run, at = excluded.at"""
# An answer settles the claim of its own content only.
_SETTLED = "DELETE FROM claims WHERE key = ? AND content_hash = ?"
# Imports never override a key another run posted (a file's later lines win over its
# earlier ones); a "may have been created" is claimed unless that content is the posted one;
# a refusal drops only the import's own claim.
_IMPORT_POSTED = _POSTED + " WHERE keys.run = excluded.run"
_IMPORT_CLAIM = """INSERT INTO claims (key, content_hash, event_code, run, at)
SELECT ?1, ?2, NULL, ?3, ?4 WHERE NOT EXISTS (
    SELECT 1 FROM keys WHERE key = ?1 AND content_hash = ?2)
ON CONFLICT (key, content_hash) DO NOTHING"""
_IMPORT_SETTLED = "DELETE FROM claims WHERE key = ? AND content_hash = ? AND run = ?"


def history_key(item: Activity) -> str:
    """The row's key in the history: its key column's value, else its content hash."""
    return item.key or item.content_hash


def _signed(content_hash: str) -> int:
    value = int(content_hash, 16) if content_hash else 0
    return value - (1 << 64) if value >= 1 << 63 else value


def _hex(value: int) -> str:
    return f"{value & ((1 << 64) - 1):016x}"


def _when(seconds: int | None) -> str:
    return "" if seconds is None else utc_text(seconds)


@dataclass(frozen=True, slots=True)
class Earlier:
    """What the history, or an earlier row of this input, holds for a row's key."""

    posted: bool  # False: claimed, sent by a run that stopped before knowing
    same_content: bool
    activity_id: str = ""
    run_id: str = ""
    at: int = 0
    row: int = 0  # non-zero: the earlier row of this input that has the key

    def describe(self) -> str:
        """Where the key was, to follow "key 'K' was …"."""
        if self.row:
            return f"in row {self.row} of this input"
        what = "posted" if self.posted else "sent (outcome unknown)"
        held = f" as activity {self.activity_id}" if self.activity_id and self.posted else ""
        return f"{what}{held} by run {self.run_id} at {utc_text(self.at)}"


class History:
    """An open history database, for one run or one command. Use :meth:`open`."""

    def __init__(self, path: str | Path, run_id: str = "") -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._lock_fd = -1
        self._run = 0  # runs.id of this run; 0 until registered
        self._pending: list[tuple[str, tuple[Any, ...]]] = []

    # -- opening and closing -------------------------------------------------------------
    def open(self, *, lock: bool = True) -> History:
        """Open (creating it if need be); ``lock``: keep other runs out while open."""
        if lock:
            self._lock_fd = lock_beside(self.path, "history database", HistoryLocked)
        try:
            self._db = self._connect(self.path)
            with self._lock:
                self._db.executescript(_SCHEMA)
                version = self._db.execute(
                    "SELECT value FROM meta WHERE name = 'schema'").fetchone()
                if version is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema', ?)",
                                     (SCHEMA_VERSION,))
                elif version[0] != SCHEMA_VERSION:
                    raise UsageError(f"{self.path}: history schema {version[0]}, this bulkpost "
                                     f"reads schema {SCHEMA_VERSION}: upgrade bulkpost")
                self._db.execute("""CREATE TEMP TABLE IF NOT EXISTS seen (
                    key TEXT PRIMARY KEY, row INTEGER NOT NULL, content_hash INTEGER NOT NULL
                ) WITHOUT ROWID""")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise UsageError(f"{self.path}: not a usable history database ({exc})") from None
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        """A connection in WAL mode with durable commits, shared by our threads under
        :attr:`_lock` (transactions are begun and committed explicitly)."""
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")  # a commit is on disk when it returns
        db.execute("PRAGMA cache_size = -32768")  # 32 MiB of pages
        db.execute("PRAGMA temp_store = FILE")
        return db

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the history is not open"
        return self._db

    def register(self, input_text: str, results: str) -> None:
        """Record this run's start; a run id given again (by a caller's own ids) goes on
        as the same run."""
        with self._lock:
            self.db.execute(
                "INSERT INTO runs (run_id, started, input, results) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET started = excluded.started, "
                "finished = NULL, input = excluded.input, results = excluded.results",
                (self.run_id, int(time.time()), input_text, results))
            self._run = self.db.execute("SELECT id FROM runs WHERE run_id = ?",
                                        (self.run_id,)).fetchone()[0]

    def finish(self, exit_code: int, posted: int, skipped: int, changed: int) -> None:
        """Commit what is pending and record how the run ended."""
        if not self._run:
            return
        self.commit(self.take())
        with self._lock:
            self.db.execute(
                "UPDATE runs SET finished = ?, exit_code = ?, posted = ?, skipped = ?, "
                "changed = ? WHERE id = ?",
                (int(time.time()), exit_code, posted, skipped, changed, self._run))

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None
        if self._lock_fd >= 0:
            release(self._lock_fd)
            self._lock_fd = -1

    # -- a run's writes: buffered on the event loop, committed with the results file ------
    def sending(self, item: Activity) -> None:
        """The row's create request is about to go out (committed before it does)."""
        self._pending.append((_CLAIM, (history_key(item), _signed(item.content_hash),
                                       item.event, self._run, int(time.time()))))

    def posted(self, item: Activity, activity_id: str) -> None:
        key, content = history_key(item), _signed(item.content_hash)
        self._pending.append((_POSTED, (key, activity_id, item.event, content, self._run,
                                        int(time.time()))))
        self._pending.append((_SETTLED, (key, content)))

    def released(self, item: Activity) -> None:
        """The request was refused: nothing was created; its claim is dropped."""
        self._pending.append((_SETTLED, (history_key(item), _signed(item.content_hash))))

    def set_meta(self, name: str, value: str) -> None:
        """Keep a note for later runs (a learned calibration), committed with the next
        group commit."""
        self._pending.append(("INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                              "SET value = excluded.value", (name, value)))

    def meta(self, name: str) -> str | None:
        with self._lock:
            found = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
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
            raise ResultsWriteError(f"{self.path}: cannot write the history ({exc}); "
                                    "stopped sending") from None

    # -- reads ---------------------------------------------------------------------------
    def screen(self, items: Sequence[Activity]) -> dict[int, Earlier]:
        """For each row (by number) whose key an earlier row of this input or the history
        holds: what it holds. Rows are taken in order; each key's first row is remembered.
        Called from the feeder's thread, a batch at a time."""
        found: dict[int, Earlier] = {}
        if not items:
            return found
        keys = [history_key(item) for item in items]
        with self._lock:
            db = self.db
            seen = {key: (row, content) for key, row, content in self._rows_in(
                db, "SELECT key, row, content_hash FROM temp.seen WHERE key IN ({})", keys)}
            posted = {key: rest for key, *rest in self._rows_in(
                db, "SELECT k.key, k.activity_id, k.content_hash, r.run_id, k.at "
                    "FROM keys k LEFT JOIN runs r ON r.id = k.run WHERE k.key IN ({})", keys)}
            claims: dict[str, dict[int, tuple[str, int]]] = {}
            for key, content, run_id, at in self._rows_in(
                    db, "SELECT c.key, c.content_hash, r.run_id, c.at FROM claims c "
                        "LEFT JOIN runs r ON r.id = c.run WHERE c.key IN ({})", keys):
                claims.setdefault(key, {})[content] = (run_id or "?", at)
            fresh: list[tuple[str, int, int]] = []
            for item, key in zip(items, keys, strict=True):
                content = _signed(item.content_hash)
                earlier_row = seen.get(key)
                if earlier_row is not None:
                    row, earlier_content = earlier_row
                    found[item.row] = Earlier(posted=False, same_content=content ==
                                              earlier_content, row=row)
                    continue
                seen[key] = (item.row, content)
                fresh.append((key, item.row, content))
                entry, claimed = posted.get(key), claims.get(key, {})
                if entry is not None and (entry[1] == content or content not in claimed):
                    # Posted: with this content, or with another and this one never sent.
                    activity_id, posted_content, run_id, at = entry
                    found[item.row] = Earlier(posted=True,
                                              same_content=posted_content == content,
                                              activity_id=activity_id, run_id=run_id or "?",
                                              at=at)
                elif content in claimed:  # this very content may be on the API already
                    run_id, at = claimed[content]
                    found[item.row] = Earlier(posted=False, same_content=True, run_id=run_id,
                                              at=at)
                elif claimed:  # only other content was sent under this key
                    run_id, at = max(claimed.values(), key=lambda claim: claim[1])
                    found[item.row] = Earlier(posted=False, same_content=False, run_id=run_id,
                                              at=at)
            db.executemany("INSERT OR IGNORE INTO temp.seen VALUES (?, ?, ?)", fresh)
        return found

    @staticmethod
    def _rows_in(db: sqlite3.Connection, query: str, keys: Sequence[str]) -> Iterator[Any]:
        """The query's records for these keys (its ``IN ({})``), a chunk of keys at a time."""
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start:start + _CHUNK]
            yield from db.execute(query.format(",".join("?" * len(chunk))), chunk)

    def claimed_ids(self, content_hash: str) -> set[str]:
        """Activity Ids that posted keys with this content hold."""
        with self._lock:
            cursor = self.db.execute(
                "SELECT activity_id FROM keys WHERE content_hash = ?",
                (_signed(content_hash),))
            return {activity_id for (activity_id,) in cursor if activity_id}

    def lookup(self, key: str) -> dict[str, Any] | None:
        """One key's posted activity and open claims, for people and tests."""
        with self._lock:
            posted = self.db.execute(
                "SELECT k.activity_id, k.event_code, k.content_hash, r.run_id, k.at "
                "FROM keys k LEFT JOIN runs r ON r.id = k.run WHERE k.key = ?",
                (key,)).fetchone()
            claims = self.db.execute(
                "SELECT c.content_hash, r.run_id, c.at FROM claims c "
                "LEFT JOIN runs r ON r.id = c.run WHERE c.key = ? ORDER BY c.at",
                (key,)).fetchall()
        if posted is None and not claims:
            return None
        entry: dict[str, Any] = {"key": key, "posted": posted is not None,
                                 "claims": [{"content_hash": _hex(content), "run_id": run_id,
                                             "at": utc_text(at)}
                                            for content, run_id, at in claims]}
        if posted is not None:
            activity_id, event, content, run_id, at = posted
            entry.update(activity_id=activity_id, event_code=event, content_hash=_hex(content),
                         run_id=run_id, at=utc_text(at))
        return entry

    def stats(self, recent_runs: int = 5) -> dict[str, Any]:
        """What the history holds: keys by state and event code, its runs, its size."""
        with self._lock:
            db = self.db
            posted = db.execute("SELECT count(*) FROM keys").fetchone()[0]
            claims = db.execute("SELECT count(*) FROM claims").fetchone()[0]
            unposted = db.execute("SELECT count(DISTINCT key) FROM claims "
                                  "WHERE key NOT IN (SELECT key FROM keys)").fetchone()[0]
            first, last = db.execute("SELECT min(at), max(at) FROM keys").fetchone()
            events = db.execute(
                "SELECT event_code, count(*) AS n FROM keys "
                "GROUP BY event_code ORDER BY n DESC LIMIT 10").fetchall()
            runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
            recent = db.execute(
                "SELECT run_id, started, finished, input, exit_code, posted, skipped, changed "
                "FROM runs ORDER BY id DESC LIMIT ?", (recent_runs,)).fetchall()
        size = sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal"))
                   if os.path.exists(p))
        return {
            "history": str(self.path), "bytes": size,
            "keys": posted + unposted, "posted": posted, "claims": claims,
            "first": _when(first), "last": _when(last),
            "by_event_code": [{"event_code": code, "keys": n} for code, n in events],
            "runs": runs,
            "recent_runs": [
                {"run_id": run_id, "started": utc_text(started), "finished": _when(finished),
                 "input": input_text, "exit_code": code, "posted": posted, "skipped": skipped,
                 "changed": changed}
                for run_id, started, finished, input_text, code, posted, skipped, changed
                in recent],
        }

    # -- seeding from results files ------------------------------------------------------
    def import_results(self, path: str | Path) -> dict[str, int]:
        """Seed the history from a results file: its posted rows become posted keys; rows
        that may have been created (``unknown``, ``failed``) become claims, so the next run
        looks them up first. In file order, so a log that was not compacted reads right.
        What another run posted is kept. Returns the lines read, and the keys posted and
        the claims this import made."""
        lines = ignored = 0
        self.register("", str(path))
        batch: list[tuple[str, tuple[Any, ...]]] = []
        for outcome in read_outcomes(path):
            lines += 1
            key = outcome.key or outcome.content_hash
            if len(batch) >= 10_000:
                self.commit(batch)
                batch = []
            at = _parse_time(outcome.updated_at)
            content = _signed(outcome.content_hash)
            if not key:
                ignored += 1
            elif outcome.status is Status.POSTED and outcome.activity_id:
                batch.append((_IMPORT_POSTED, (key, outcome.activity_id, None, content,
                                               self._run, at)))
                batch.append((_SETTLED, (key, content)))
            elif outcome.status in (Status.UNKNOWN, Status.FAILED):
                batch.append((_IMPORT_CLAIM, (key, content, self._run, at)))
            elif outcome.status is Status.REJECTED:
                batch.append((_IMPORT_SETTLED, (key, content, self._run)))
            else:  # invalid, skipped (its key is in some history already)
                ignored += 1
        self.commit(batch)
        with self._lock:
            made = [self.db.execute(f"SELECT count(*) FROM {table} WHERE run = ?",
                                    (self._run,)).fetchone()[0] for table in ("keys", "claims")]
        counts = {"lines": lines, "posted": made[0], "to_look_up": made[1], "ignored": ignored}
        self.finish(0, counts["posted"], 0, 0)
        return counts


def _parse_time(text: str) -> int:
    try:
        return int(parse_utc_text(text).timestamp())
    except ValueError:
        return int(time.time())


def import_results(history: Path, results: Iterable[Path], run_id: str
                   ) -> list[tuple[Path, dict[str, int]]]:
    """``bulkpost history import``: every results file into the history, one run each."""
    done = []
    for index, path in enumerate(results):
        store = History(history, f"import-{run_id}-{index + 1}").open()
        try:
            done.append((path, store.import_results(path)))
        finally:
            store.close()
    return done
