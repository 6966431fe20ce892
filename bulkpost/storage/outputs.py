"""The files a command writes, checked before it reads or sends anything.

Owns one question, asked of every output path (``--failures``, ``--results``,
``--summary-json``, ``--differences``, ``--history``…) at the start of a command: can a
file be created or replaced there? A command that finds out only at the end has done its
work for nothing (a report printed, a read-back made) and ends in a traceback. The answer
names what to fix: the directory that does not exist (and the ``mkdir`` that creates it),
the directory that is not writable, a path that is a directory. Writing stays with each
writer; a check cannot promise the write (a disk fills up), only catch the usual mistakes.
"""

from __future__ import annotations

import os
from pathlib import Path

from bulkpost.errors import UsageError


def output_problem(path: str | Path) -> str | None:
    """Why no file can be written at ``path``, in words for a person; None if it can."""
    path = Path(path)
    if path.is_dir():
        return "it is a directory: give a file name"
    directory = path.parent
    if not directory.exists():
        return f"the directory {directory} does not exist: create it first (mkdir -p {directory})"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory {directory} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file exists and is not writable"
    return None


def check_output(path: str | Path | None, what: str) -> None:
    """Raise :class:`UsageError` if no file can be written at ``path`` (None: no output).

    ``what`` names the output as the person gave it, e.g. ``"--failures"``.
    """
    if path is None:
        return
    problem = output_problem(path)
    if problem is not None:
        raise UsageError(f"{what} {path}: {problem}")


def check_two_files(history: str | Path, results: str | Path) -> None:
    """Refuse a history that is the results file itself."""
    if Path(history).resolve() == Path(results).resolve():
        raise UsageError(f"{history}: the history and the results file must be two files")
