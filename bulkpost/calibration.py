"""What a run learned of the account's look-ups, kept for the runs after it.

Owns the file beside the results file (``RESULTS.calibration.json``) and the history's copy
(its ``meta`` table, per host) of a :class:`~bulkpost.reconcile.Reading`: a resumed run, or
the next night's, trusts look-ups from its first row instead of calibrating again. A reading
is reused only for the host it was learned on; a file that cannot be read or was written by
another version is ignored (the run calibrates again), never trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import structlog

from bulkpost.history import History
from bulkpost.reconcile import Reading

log = structlog.get_logger("bulkpost")


def reading_path(results: Path) -> Path:
    return results.with_name(results.name + ".calibration.json")


def _from_text(text: str | None, host: str) -> Reading | None:
    if not text:
        return None
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("host") != host:
        return None
    reading = Reading.from_json(data.get("reading"))
    return reading if reading is not None and reading.calibrated else None


def load_reading(results: Path, host: str, history: History | None) -> Reading | None:
    """The calibrated reading saved for ``host`` beside the results file, else in the
    history; None when neither holds one."""
    with contextlib.suppress(OSError):
        reading = _from_text(reading_path(results).read_text(encoding="utf-8"), host)
        if reading is not None:
            return reading
    if history is not None:
        return _from_text(history.meta(f"calibration {host}"), host)
    return None


def save_reading(results: Path, host: str, reading: Reading, history: History | None,
                 run_id: str) -> None:
    """Save ``reading`` beside the results file (atomically) and in the history."""
    text = json.dumps({"host": host, "run_id": run_id, "reading": reading.to_json()},
                      indent=2)
    path = reading_path(results)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(text + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        log.warning("calibration not saved beside the results file", reason=exc.strerror)
        with contextlib.suppress(OSError):
            temp.unlink()
    if history is not None:
        history.set_meta(f"calibration {host}", text)
