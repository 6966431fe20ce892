"""What the history holds, for people and scripts: ``bulkpost history stats`` and one key.

Owns the read-only reports of a history database: how many keys are posted, claimed and
waiting (rows a run left unfinished, whose request the history keeps), by event code and
over time; the latest runs; one key's posted activity and open claims. :class:`History`
(:mod:`bulkpost.storage.history.database`) has them as methods; they only read.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from bulkpost.core.results_line import utc_text
from bulkpost.storage.history.schema import NOT_SUPERSEDED, hash_text


def _when(seconds: int | None) -> str:
    return "" if seconds is None else utc_text(seconds)


class HistoryReports:
    """The read-only reports of an open history (the base of :class:`History`)."""

    path: Path
    _lock: threading.Lock
    _run: int

    @property
    def db(self) -> sqlite3.Connection:  # History's own
        raise NotImplementedError

    def held_by_run(self) -> tuple[int, int]:
        """How many posted keys, and how many claims, this run holds now."""
        with self._lock:
            posted, claims = (self.db.execute(f"SELECT count(*) FROM {table} WHERE run = ?",
                                              (self._run,)).fetchone()[0]
                              for table in ("keys", "claims"))
        return int(posted), int(claims)

    def identified_by_run(self) -> int:
        """How many posted keys this run holds with their lead and date-time known (keys an
        update can bring up to date)."""
        with self._lock:
            found = self.db.execute("SELECT count(*) FROM keys WHERE run = ? AND "
                                    "identity_hash IS NOT NULL", (self._run,)).fetchone()[0]
        return int(found)

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
                                 "claims": [{"content_hash": hash_text(content),
                                             "run_id": run_id, "at": utc_text(at)}
                                            for content, run_id, at in claims]}
        if posted is not None:
            activity_id, event, content, run_id, at = posted
            entry.update(activity_id=activity_id, event_code=event,
                         content_hash=hash_text(content), run_id=run_id, at=utc_text(at))
        return entry

    def stats(self, recent_runs: int = 5) -> dict[str, Any]:
        """What the history holds: keys by state and event code, its runs, its size."""
        with self._lock:
            db = self.db
            posted = db.execute("SELECT count(*) FROM keys").fetchone()[0]
            claims = db.execute("SELECT count(*) FROM claims").fetchone()[0]
            # What the next run carries over (History.carried): kept, and not superseded by
            # content posted under the key since.
            waiting = db.execute(
                "SELECT count(DISTINCT c.key) FROM claims c "
                f"WHERE c.body IS NOT NULL AND {NOT_SUPERSEDED}").fetchone()[0]
            unposted = db.execute("SELECT count(DISTINCT key) FROM claims "
                                  "WHERE key NOT IN (SELECT key FROM keys)").fetchone()[0]
            first, last = db.execute("SELECT min(at), max(at) FROM keys").fetchone()
            events = db.execute(
                "SELECT event_code, count(*) AS n FROM keys "
                "GROUP BY event_code ORDER BY n DESC LIMIT 10").fetchall()
            runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
            recent = db.execute(
                "SELECT run_id, started, finished, input, exit_code, posted, skipped, changed, "
                "updated FROM runs ORDER BY id DESC LIMIT ?", (recent_runs,)).fetchall()
        size = sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal"))
                   if os.path.exists(p))
        return {
            "history": str(self.path), "bytes": size,
            "keys": posted + unposted, "posted": posted, "claims": claims, "waiting": waiting,
            "first": _when(first), "last": _when(last),
            "by_event_code": [{"event_code": code, "keys": n} for code, n in events],
            "runs": runs,
            "recent_runs": [
                {"run_id": run_id, "started": utc_text(started), "finished": _when(finished),
                 "input": input_text, "exit_code": code, "posted": posted, "skipped": skipped,
                 "changed": changed, "updated": updated}
                for run_id, started, finished, input_text, code, posted, skipped, changed,
                updated in recent],
        }
