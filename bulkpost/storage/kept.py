"""What a run learns of the account, kept for the runs after it.

A lesson (how the account answers look-ups: :mod:`bulkpost.core.calibration`; its rate limits:
:mod:`bulkpost.runner.limits`) is kept twice: in one JSON file beside the results file
(``RESULTS.learnt.json``, one section per kind of lesson, replaced atomically), which a
resumed run finds, and in the history's ``meta`` table, which the next night's run finds
whatever its results file. Earlier versions kept one file per kind (``RESULTS.<kind>.json``):
those are still read, so that their results still resume, and a kind's old file is removed
once its lesson is kept in the one file. Each lesson holds the scope it was learnt for (a
host; a host and an account), and a reader takes it only for that scope. A file that
cannot be read, or does not hold what the reader expects (another version wrote it), is
ignored: the run learns again, it never trusts a guess.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from bulkpost.core.reconcile import Reading
from bulkpost.storage.results_file import sync_directory

if TYPE_CHECKING:
    from bulkpost.storage.history.database import History

T = TypeVar("T")


def kept_path(results: Path) -> Path:
    """The one file of lessons beside ``results``."""
    return results.with_name(f"{results.name}.learnt.json")


def former_path(results: Path, kind: str) -> Path:
    """Where earlier versions kept a kind of lesson (still read)."""
    return results.with_name(f"{results.name}.{kind}.json")


def _document(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _accepted(data: Any, accept: Callable[[dict[str, Any]], T | None]) -> T | None:
    return accept(data) if isinstance(data, dict) else None


def recall(results: Path, kind: str, name: str, history: History | None,
           accept: Callable[[dict[str, Any]], T | None]) -> T | None:
    """The lesson kept beside the results file (its section of the one file, else an
    earlier version's file of that kind), else in the history under ``name``, that
    ``accept`` takes (it returns None for a document of another scope or version)."""
    lessons = _document(_read_text(kept_path(results))) or {}
    for data in (lessons.get(kind), _document(_read_text(former_path(results, kind)))):
        found = _accepted(data, accept)
        if found is not None:
            return found
    if history is not None:
        return _accepted(_document(history.meta(name)), accept)
    return None


def keep(results: Path, kind: str, name: str, document: dict[str, Any],
         history: History | None) -> str | None:
    """Keep ``document`` as the ``kind`` section of the file beside the results file
    (atomically; the other sections as they were) and in the history. Returns why the
    file could not be written, if it could not (the caller says so; the run goes on)."""
    text = json.dumps(document, indent=2)
    path = kept_path(results)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    lessons = _document(_read_text(path)) or {}
    lessons[kind] = document
    try:
        temp.write_text(json.dumps(lessons, indent=2) + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        return exc.strerror or str(exc)
    finally:
        if history is not None:
            history.set_meta(name, text)
    with contextlib.suppress(OSError):  # kept in the one file now
        former_path(results, kind).unlink(missing_ok=True)
    return None


def recall_section(results: Path, kind: str) -> dict[str, Any] | None:
    """The ``kind`` section of the file beside the results file, or None."""
    section = (_document(_read_text(kept_path(results))) or {}).get(kind)
    return section if isinstance(section, dict) else None


def keep_section_durably(results: Path, kind: str, document: dict[str, Any]) -> None:
    """Keep ``document`` as the ``kind`` section (the others as they were), on disk when this
    returns: written, fsynced and renamed, the folder fsynced. Raises OSError."""
    path = kept_path(results)
    lessons = _document(_read_text(path)) or {}
    lessons[kind] = document
    temp = path.with_name(f".{path.name}.{os.getpid()}.{kind}.tmp")  # not keep()'s
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (json.dumps(lessons, indent=2) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    sync_directory(path)

log = structlog.get_logger("bulkpost")


# -- keeping a calibrated reading for the runs after -----------------------------------
def _reading_for(host: str) -> Callable[[dict[str, Any]], Reading | None]:
    def accept(data: dict[str, Any]) -> Reading | None:
        if data.get("host") != host:
            return None
        reading = Reading.from_json(data.get("reading"))
        return reading if reading is not None and reading.calibrated else None
    return accept


def load_reading(results: Path, host: str, history: History | None) -> Reading | None:
    """The calibrated reading saved for ``host`` beside the results file, else in the
    history; None when neither holds one."""
    return recall(results, "calibration", f"calibration {host}", history, _reading_for(host))


def save_reading(results: Path, host: str, reading: Reading, history: History | None,
                 run_id: str) -> None:
    """Save ``reading`` beside the results file (atomically) and in the history."""
    failed = keep(results, "calibration", f"calibration {host}",
                  {"host": host, "run_id": run_id, "reading": reading.to_json()}, history)
    if failed is not None:
        log.warning("lookup.calibration_not_saved", reason=failed)
