"""What a run learns of the account, kept for the runs after it.

A lesson (how the account answers look-ups: :mod:`bulkpost.calibration`; its rate limits:
:mod:`bulkpost.limits`) is kept twice: in a JSON file beside the results file
(``RESULTS.<kind>.json``, replaced atomically), which a resumed run finds, and in the
history's ``meta`` table, which the next night's run finds whatever its results file.
Each lesson holds the scope it was learnt for (a host; a host and an account), and a reader
takes it only for that scope. A file that cannot be read, or does not hold what the
reader expects (another version wrote it), is ignored: the run learns again, it never
trusts a guess.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bulkpost.history import History

T = TypeVar("T")


def kept_path(results: Path, kind: str) -> Path:
    return results.with_name(f"{results.name}.{kind}.json")


def _read(text: str | None, accept: Callable[[dict[str, Any]], T | None]) -> T | None:
    if not text:
        return None
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    return accept(data) if isinstance(data, dict) else None


def recall(results: Path, kind: str, name: str, history: History | None,
           accept: Callable[[dict[str, Any]], T | None]) -> T | None:
    """The lesson kept beside the results file, else in the history under ``name``, that
    ``accept`` takes (it returns None for a document of another scope or version)."""
    with contextlib.suppress(OSError):
        found = _read(kept_path(results, kind).read_text(encoding="utf-8"), accept)
        if found is not None:
            return found
    if history is not None:
        return _read(history.meta(name), accept)
    return None


def keep(results: Path, kind: str, name: str, document: dict[str, Any],
         history: History | None) -> str | None:
    """Keep ``document`` beside the results file (atomically) and in the history. Returns
    why the file could not be written, if it could not (the caller says so; the run goes
    on)."""
    text = json.dumps(document, indent=2)
    path = kept_path(results, kind)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(text + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        return exc.strerror or str(exc)
    finally:
        if history is not None:
            history.set_meta(name, text)
    return None
