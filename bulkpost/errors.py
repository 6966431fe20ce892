"""The package's one exception root and its branches.

Errors are sorted by what the caller must do next, and each maps to one exit code:
usage, mapping and input problems found before any request (exit 2), and aborts that stop
a run that had started (exit 3). Per-row problems are never exceptions: they become
``invalid``/``rejected``/``failed`` outcomes in the results file and the run goes on.
Messages never carry credentials: the client builds them from status codes and response
text, not from request objects.

A message names a setting the way the person gave it: the CLI's ``--batch-size 26`` (or
``LSQ_ACCESS_KEY``), the Python API's ``batch_size=26``. Code shared by both raises with
:class:`Setting` fields; they render for the CLI until the API, the one other public
boundary, marks the error it lets through (``surface = "api"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Surface = Literal["cli", "api"]


@dataclass(frozen=True, slots=True)
class Setting:
    """A setting an error message names: ``--on-changed`` on the command line, ``on_changed=``
    from Python."""

    name: str  # the keyword of ``bulkpost.run()``, and the RunOptions field
    cli: str = ""  # the CLI's spelling when it is not --name-with-dashes (LSQ_ACCESS_KEY)

    def spelled(self, surface: Surface) -> str:
        if surface == "api":
            return f"{self.name}="
        return self.cli or "--" + self.name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class Given:
    """A setting with the value it was given: ``--mode 'fast'``, ``mode='fast'``."""

    setting: Setting
    value: object

    def spelled(self, surface: Surface) -> str:
        gap = "" if surface == "api" else " "
        return f"{self.setting.spelled(surface)}{gap}{self.value!r}"


HOST = Setting("host")
# The CLI takes the keys from the environment only: no option would keep them out of `ps`.
ACCESS_KEY = Setting("access_key", cli="LSQ_ACCESS_KEY")
SECRET_KEY = Setting("secret_key", cli="LSQ_SECRET_KEY")


class BulkpostError(Exception):
    """Root of every error bulkpost raises on purpose.

    ``fields`` fill the message's ``{name}`` fields; a :class:`Setting` or :class:`Given`
    is spelled for ``surface``. A message without fields is shown as it is, braces and all.
    """

    exit_code = 1
    surface: Surface = "cli"  # the Python API sets "api" on the errors it lets through

    def __init__(self, message: str = "", /, **fields: object) -> None:
        super().__init__(message)
        self.fields = fields

    def __str__(self) -> str:
        return self.render(self.surface)

    def render(self, surface: Surface) -> str:
        """The message, its settings spelled as ``surface`` spells them."""
        message = str(self.args[0]) if self.args else ""
        if not self.fields:
            return message
        return message.format_map({
            name: value.spelled(surface) if isinstance(value, Setting | Given) else value
            for name, value in self.fields.items()})


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


class BudgetSpent(AbortRun):
    """The day's budget of calls (``--daily-calls``) is spent: the run stopped cleanly,
    nothing is wrong; run it again after the account's midnight (exit 4)."""

    exit_code = 4
