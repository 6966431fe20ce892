"""The command line: the ``bulkpost`` group, its commands, and the last-resort error path.

Each command lives in its own module of this package (``run``: run and validate;
``tools``: check, report and verify; ``history``; ``sandbox``; ``init``; ``types``); this
one gathers them, makes ``-h`` work everywhere, and reports an unexpected
error without leaking keys (exit 3). The exit codes are the README's table.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import traceback

import click

from bulkpost.cli.history import history
from bulkpost.cli.init import init
from bulkpost.cli.run import run, validate
from bulkpost.cli.sandbox import sandbox
from bulkpost.cli.tools import check, report, verify
from bulkpost.cli.types import types
from bulkpost.runner import logs


# -h works on every command: subcommands inherit the group's help option names.
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bulkpost")
def cli() -> None:
    """Load activities into LeadSquared in bulk: at the full rate limit, resumably.

    \b
    Example (keys from the environment; `bulkpost COMMAND -h` for each command):
      export LSQ_ACCESS_KEY=… LSQ_SECRET_KEY=…
      bulkpost run activities.csv --mapping mapping.toml --results results.csv \\
          --host api-in21.leadsquared.com
    """


for command in (run, validate, check, report, verify, history, sandbox):
    cli.add_command(command)
cli.add_command(init)
cli.add_command(types)


def _one_line_unraisable(info: sys.UnraisableHookArgs) -> None:
    # pyarrow reports a ragged CSV row that is also not UTF-8 this way before it fails the
    # read with a clear message of its own: say it in one line, without a traceback.
    click.echo(f"bulkpost: warning: {logs.scrub(str(info.exc_value))}", err=True)


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Console entry point: unexpected errors are reported without leaking keys. ``argv``
    (the arguments after the program's name) and ``prog_name`` default to the process's."""
    # A run lasts days: `kill -USR1 PID` prints every thread's stack (file, line and
    # function names only, no values) to stderr, to see where a stuck run waits.
    # (To the process's own stderr, whatever sys.stderr is made to be meanwhile.)
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    sys.unraisablehook = _one_line_unraisable
    try:
        cli.main(args=argv, prog_name=prog_name, standalone_mode=True)
    except SystemExit:
        raise
    except BaseException:  # last resort: scrub the traceback, exit 3
        click.echo(logs.scrub(traceback.format_exc()), err=True)
        sys.exit(3)
