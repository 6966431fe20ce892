"""The history's SQLite database: its tables, the statements a run writes them with, opening it.

Owns the layout every history user shares, so that it is read in one place: the ``meta``,
``runs``, ``keys`` and ``claims`` tables and the connection's temporary ``seen`` table; the
schema version (a database of version 1 is brought to version 2 by adding columns; a later
version is refused, never rewritten); how a content
hash is stored (its 64 bits as a signed integer, SQLite's); the statements that claim,
post and settle a key; and how the database is opened: WAL mode, a commit durable when it
returns (``synchronous = FULL``), transactions begun and committed explicitly; a new file
readable by its owner only. What the rows mean, and when each statement runs, is
:mod:`bulkpost.storage.history.database`'s.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from bulkpost.errors import UsageError

SCHEMA_VERSION = "2"
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
    changed INTEGER,
    updated INTEGER                    -- schema 2
);
-- Posted keys: the activity each holds (the latest, when posted again with new content).
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY,
    activity_id TEXT NOT NULL,
    event_code INTEGER,                -- NULL when imported from a results file
    content_hash INTEGER NOT NULL,     -- the posted content's 64-bit hash, signed
    run INTEGER NOT NULL,              -- runs.id of the run that posted it
    at INTEGER NOT NULL,               -- when, in Unix seconds (UTC)
    identity_hash INTEGER              -- schema 2: its lead and date-time (NULL: not known)
) WITHOUT ROWID;
-- Activities held by posted keys, by content: a look-up must not claim another key's.
CREATE INDEX IF NOT EXISTS keys_by_content ON keys (content_hash);
-- Claims: a request for this key with this content went out (or may have) and its outcome
-- is not known yet; one per content, so that no claim hides another. A claim is a row
-- left unfinished: the next run sharing the history finishes it, from its own input or,
-- when that no longer holds the key, from the request kept here (schema 2).
CREATE TABLE IF NOT EXISTS claims (
    key TEXT NOT NULL,
    content_hash INTEGER NOT NULL,
    event_code INTEGER,
    run INTEGER NOT NULL,              -- runs.id of the run whose request it was
    at INTEGER NOT NULL,               -- when its (last) request went out
    update_of TEXT NOT NULL DEFAULT '',  -- schema 2: an update of this activity ('': a create)
    body BLOB,                         -- schema 2: the create's body (NULL: not kept)
    lead TEXT NOT NULL DEFAULT '',     -- schema 2: the row's lead
    origin TEXT NOT NULL DEFAULT '',   -- schema 2: the input it came from
    row INTEGER NOT NULL DEFAULT 0,    -- schema 2: its row number there
    PRIMARY KEY (key, content_hash)
) WITHOUT ROWID;
"""
# This connection's rows so far: each key's first row of the input, and its content.
_SEEN = """CREATE TEMP TABLE IF NOT EXISTS seen (
    key TEXT PRIMARY KEY, row INTEGER NOT NULL, content_hash INTEGER NOT NULL
) WITHOUT ROWID"""

CLAIM = """INSERT INTO claims (key, content_hash, event_code, run, at, update_of, body, lead,
    origin, row) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key, content_hash) DO UPDATE SET event_code = excluded.event_code,
    run = excluded.run, at = excluded.at, update_of = excluded.update_of,
    body = excluded.body, lead = excluded.lead, origin = excluded.origin, row = excluded.row"""
POSTED = """INSERT INTO keys (key, activity_id, event_code, content_hash, run, at, identity_hash)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET activity_id = excluded.activity_id,
    event_code = coalesce(excluded.event_code, keys.event_code),
    content_hash = excluded.content_hash, run = excluded.run, at = excluded.at,
    identity_hash = excluded.identity_hash"""
# An answer settles the claim of its own content only.
SETTLED = "DELETE FROM claims WHERE key = ? AND content_hash = ?"
# A key posted (created or updated) with a content: that content's claim is settled, and
# the updates (idempotent) still waiting for the key are dropped, superseded by it.
POSTED_SETTLED = "DELETE FROM claims WHERE key = ? AND (content_hash = ? OR update_of != '')"
# Conditions on a claim ``c``, in run order (runs.id grows; ``at`` has whole seconds only, and
# two runs may fall in one second): the key's latest claim, and one no content posted under
# the key since supersedes (a key posted by the claim's run or a later one).
LATEST_CLAIM = ("NOT EXISTS (SELECT 1 FROM claims o WHERE o.key = c.key AND (o.run > c.run "
                "OR (o.run = c.run AND o.at > c.at)))")
NOT_SUPERSEDED = "NOT EXISTS (SELECT 1 FROM keys k WHERE k.key = c.key AND k.run >= c.run)"


def stored_hash(content_hash: str) -> int:
    """A content hash (16 hex digits; "" for none) as stored: a signed 64-bit integer."""
    value = int(content_hash, 16) if content_hash else 0
    return value - (1 << 64) if value >= 1 << 63 else value


def hash_text(stored: int) -> str:
    """A stored content hash as the 16 hex digits of results files."""
    return f"{stored & ((1 << 64) - 1):016x}"


# Schema 1 → 2: columns added (NULL or empty in rows written before), nothing rewritten.
_UPGRADE_FROM_1 = (
    "ALTER TABLE runs ADD COLUMN updated INTEGER",
    "ALTER TABLE keys ADD COLUMN identity_hash INTEGER",
    "ALTER TABLE claims ADD COLUMN update_of TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE claims ADD COLUMN body BLOB",
    "ALTER TABLE claims ADD COLUMN lead TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE claims ADD COLUMN origin TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE claims ADD COLUMN row INTEGER NOT NULL DEFAULT 0",
)


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Bring a schema 1 history to schema 2, in one transaction. Keys posted before keep no
    lead and date-time: they cannot be updated in place (``--on-changed update`` says so)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _UPGRADE_FROM_1:
            db.execute(statement)
        db.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def damaged(path: Path, error: sqlite3.Error) -> UsageError:
    """The error for a history SQLite cannot read (a damaged file, or not a database):
    naming the file, and how to rebuild it from the results files."""
    return UsageError(
        f"{path}: the history cannot be read ({error}): it is damaged, or not a history. "
        "Move it aside (keep it for inspection) and rebuild it from the results files of the "
        f"runs that used it: bulkpost history import RESULTS... --history {path} --input "
        "INPUT --mapping MAPPING (the input and mapping of those results)")


def stored_version(path: Path) -> str | None:
    """The schema version of the history at ``path``, read without changing the file in any
    way (no journal mode set, no table created); None for a new or empty file. Raises
    sqlite3.DatabaseError for a file that is not a database."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
                      ).fetchone() is None:
            return None
        found = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        return None if found is None else str(found[0])
    finally:
        db.close()


def open_database(path: Path) -> sqlite3.Connection:
    """The history at ``path`` (created if need be), its schema checked: a connection in
    WAL mode with durable commits, to be shared by threads under one lock (transactions are
    begun and committed explicitly). Raises UsageError for another schema version (before
    anything in the file is changed), and sqlite3.DatabaseError for a file that is not a
    database. A new file is created readable by its owner only (SQLite gives its journal
    files the database's mode): it keeps request bodies, lead ids and notes."""
    version = stored_version(path)
    if version not in (None, "1", SCHEMA_VERSION):
        raise UsageError(f"{path}: history schema {version}, this bulkpost reads schema "
                         f"{SCHEMA_VERSION}: upgrade bulkpost (the file was left as it is)")
    with contextlib.suppress(OSError):  # there already, or not creatable: SQLite says why
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")  # a commit is on disk when it returns
        db.execute("PRAGMA cache_size = -32768")  # 32 MiB of pages
        db.execute("PRAGMA temp_store = FILE")
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif version[0] == "1":
            _upgrade_from_1(db)
        elif version[0] != SCHEMA_VERSION:
            raise UsageError(f"{path}: history schema {version[0]}, this bulkpost reads "
                             f"schema {SCHEMA_VERSION}: upgrade bulkpost")
        db.execute(_SEEN)
    except BaseException:
        db.close()
        raise
    return db
