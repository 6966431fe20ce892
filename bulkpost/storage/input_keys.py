"""The input's keys: every key of one input, its first rows and whether its contents differ.

A private temporary SQLite database (on disk, deleted when closed; SQLite keeps a bounded
page cache), so that memory stays flat for an input of millions of rows. Per key: its first
row, the first row's content, whether another row's content differs, how many rows have it
and its first :data:`~bulkpost.core.repeats.LISTED` rows. The rules these feed are
:mod:`bulkpost.core.repeats`' (the planner applies them).

Two ways to use it, by what the input allows:

- read twice (a file): :meth:`InputKeys.take` every batch before the first row is sent, then
  :meth:`InputKeys.repeats_of` each batch as it is planned: every row of a repeated key
  knows all the key's rows;
- read once (a stream): :meth:`InputKeys.add` each batch as it is planned, and use what it
  returns: a row knows the rows before it.

Called from the feeder's threads; a lock keeps a call that outlived its cancelled task
from meeting :meth:`InputKeys.close`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bulkpost.core.activity import Activity, InvalidRow
from bulkpost.core.repeats import LISTED, SHOWN_KEYS, Repeat, repeated_lines
from bulkpost.storage.history.database import history_key
from bulkpost.storage.history.schema import stored_hash

_CHUNK = 500  # keys per IN (...) query: well under SQLite's variable limit


def _tracked(item: Activity | InvalidRow) -> tuple[str, str, int] | None:
    """The row's key as the input's keys hold it, the key column's value ("": none) and its
    content; None: a row that does not validate and has no key (it has no key to share)."""
    if isinstance(item, Activity):
        return history_key(item), item.key, stored_hash(item.content_hash)
    if not item.key:
        return None
    # Its fingerprint is of its cells, not of a request: never a valid row's content.
    return item.key, item.key, stored_hash(item.content_hash) ^ 1


@dataclass(slots=True)
class _Key:
    """What is held of one key, while a batch is taken."""

    shown: str
    first: int
    content: int
    differ: bool
    rows: int
    listed: list[int]

    @classmethod
    def read(cls, shown: str, first: int, content: int, differ: int, rows: int,
             listed: str) -> _Key:
        return cls(shown, first, content, bool(differ), rows, [int(r) for r in listed.split(",")])

    def record(self, key: str) -> tuple[Any, ...]:
        return (key, self.shown, self.first, self.content, int(self.differ), self.rows,
                ",".join(map(str, self.listed)))

    def repeat(self) -> Repeat:
        return Repeat(self.shown, self.first, self.rows, tuple(self.listed), self.differ)


_COLUMNS = "shown, first, content, differ, rows, listed"
# One row taken: its key's first row, or one more (listed while fewer than LISTED are).
_TAKE = f"""INSERT INTO keys VALUES (?1, ?2, ?3, ?4, 0, 1, ?3)
ON CONFLICT (key) DO UPDATE SET differ = differ OR content IS NOT excluded.content,
    rows = rows + 1,
    listed = CASE WHEN rows < {LISTED} THEN listed || ',' || excluded.first ELSE listed END"""


class InputKeys:
    """The keys of one input, in a temporary database."""

    def __init__(self) -> None:
        # "": a private temporary database, on disk once it outgrows the page cache.
        self._lock = threading.Lock()
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(
            "CREATE TABLE keys (key TEXT PRIMARY KEY, shown TEXT, first INTEGER, "
            "content INTEGER, differ INTEGER, rows INTEGER, listed TEXT) WITHOUT ROWID")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def take(self, items: Sequence[Activity | InvalidRow]) -> None:
        """Take a batch's rows (in row order, after every earlier batch), telling nothing:
        the read ahead, whose rows ask :meth:`repeats_of` once every batch is taken."""
        with self._lock:
            self._take(items)

    def add(self, items: Sequence[Activity | InvalidRow]) -> dict[int, Repeat]:
        """Take a batch's rows (in row order, after every earlier batch). Returns, for each
        row whose key an earlier row has, the key's rows up to it."""
        with self._lock:
            return self._add(items)

    def repeats_of(self, items: Sequence[Activity | InvalidRow]) -> dict[int, Repeat]:
        """For each row of a repeated key (once every batch was taken): all the key's
        rows."""
        with self._lock:
            return self._repeats_of(items)

    def counts(self) -> tuple[int, int, int]:
        """How many keys repeat, how many of them with differing contents, and in how many
        rows."""
        with self._lock:
            return self._counts()

    def report(self, top: int = SHOWN_KEYS) -> list[str]:
        """The repeated keys so far, for people: how many, and the first ``top`` (those
        with differing contents first); empty when none repeats."""
        with self._lock:
            return self._report(top)

    def _take(self, items: Sequence[Activity | InvalidRow]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(_TAKE, [(key, shown, item.row, content)
                                     for item in items if (taken := _tracked(item))
                                     for key, shown, content in (taken,)])
        self._db.execute("COMMIT")

    def _add(self, items: Sequence[Activity | InvalidRow]) -> dict[int, Repeat]:
        tracked = [(item.row, *taken) for item in items if (taken := _tracked(item))]
        if not tracked:
            return {}
        state = {key: _Key.read(*rest) for key, *rest in self._select(
            f"SELECT key, {_COLUMNS} FROM keys WHERE key IN ({{}})",
            [key for _, key, _, _ in tracked])}
        repeats: dict[int, Repeat] = {}
        for row, key, shown, content in tracked:
            held = state.get(key)
            if held is None:
                state[key] = _Key(shown, row, content, False, 1, [row])
                continue
            held.differ = held.differ or held.content != content
            held.rows += 1
            if len(held.listed) < LISTED:
                held.listed.append(row)
            repeats[row] = held.repeat()
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [held.record(key) for key, held in state.items()])
        self._db.execute("COMMIT")
        return repeats

    def _repeats_of(self, items: Sequence[Activity | InvalidRow]) -> dict[int, Repeat]:
        tracked = {item.row: taken[0] for item in items if (taken := _tracked(item))}
        if not tracked:
            return {}
        keys = {key: _Key.read(*rest).repeat() for key, *rest in self._select(
            f"SELECT key, {_COLUMNS} FROM keys WHERE rows > 1 AND key IN ({{}})",
            list(tracked.values()))}
        return {row: keys[key] for row, key in tracked.items() if key in keys}

    def _counts(self) -> tuple[int, int, int]:
        keys, differing, rows = self._db.execute(
            "SELECT count(*), coalesce(sum(differ), 0), coalesce(sum(rows), 0) FROM keys "
            "WHERE rows > 1").fetchone()
        return int(keys), int(differing), int(rows)

    def _report(self, top: int) -> list[str]:
        shown = [_Key.read(*found).repeat() for found in self._db.execute(
            f"SELECT {_COLUMNS} FROM keys WHERE rows > 1 ORDER BY differ DESC, first "
            "LIMIT ?", (top,))]
        return repeated_lines(*self._counts(), shown)

    def _select(self, query: str, keys: Sequence[str]) -> Iterator[Any]:
        """The query's records for these keys (its ``IN ({})``), a chunk at a time."""
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start:start + _CHUNK]
            yield from self._db.execute(query.format(",".join("?" * len(chunk))), chunk)
