"""The package's one exception root and its branches.

Errors are sorted by what the caller must do next, and each maps to one exit code:
usage, mapping and input problems found before any request (exit 2), and aborts that stop
a run that had started (exit 3). Per-row problems are never exceptions: they become
``invalid``/``rejected``/``failed`` outcomes in the results file and the run goes on.
Messages never carry credentials: the client builds them from status codes and response
text, not from request objects.
"""

from __future__ import annotations


class BulkpostError(Exception):
    """Root of every error bulkpost raises on purpose."""

    exit_code = 1


class UsageError(BulkpostError):
    """The command, its options or its files are wrong; nothing was sent (exit 2)."""

    exit_code = 2


class MappingError(UsageError):
    """The mapping file is unreadable or does not fit the input (exit 2)."""


class InputError(UsageError):
    """The input file cannot be read at all (exit 2); bad rows are not this."""


class Locked(UsageError):
    """Another run holds a file this run needs (exit 2)."""


class ResultsLocked(Locked):
    """Another run holds the results file (exit 2)."""


class HistoryLocked(Locked):
    """Another run holds the history database (exit 2)."""


class AbortRun(BulkpostError):
    """A started run must stop now: wrong keys or host, a signal, a spent quota (exit 3)."""

    exit_code = 3


class ResultsWriteError(AbortRun):
    """The results file cannot be written; no further row may be sent (exit 3)."""
