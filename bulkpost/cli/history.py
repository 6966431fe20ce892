"""``bulkpost history import`` and ``history stats``: the keys posted across runs."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bulkpost.cli.common import ENCODING_HELP, HOST_HELP, emit, environment_keys
from bulkpost.core.options import new_run_id
from bulkpost.errors import BulkpostError, UsageError
from bulkpost.runner import logs

if TYPE_CHECKING:
    from bulkpost.storage.history.imports import Imported


@click.group()
def history() -> None:
    """The history: where it is, seed it from results files, see what it holds.

    Every run keeps one: --history FILE, else this account's own (bulkpost history where).

    \b
    Example:
      bulkpost history import results-2026-*.csv --history history.db
      bulkpost history stats --history history.db
    """


@history.command("import")
@click.argument("results_files", metavar="RESULTS...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--history", "history_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The history database (created if missing).")
@click.option("--input", "input_path", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The input the results were written for: each posted row's lead, "
                   "date-time and event code are recorded, so --on-changed update can "
                   "update it later (needs --mapping).")
@click.option("--mapping", "mapping_path", metavar="FILE",
              type=click.Path(path_type=Path), help="The mapping that loaded --input.")
@click.option("--encoding", default="utf-8", show_default=True, help=ENCODING_HELP)
@click.option("--delimiter", default=None, help="CSV delimiter (default: sniffed).")
def history_import(results_files: tuple[Path, ...], history_path: Path,
                   input_path: Path | None, mapping_path: Path | None, encoding: str,
                   delimiter: str | None) -> None:
    """Seed the history from existing results files.

    Posted rows become posted keys (key column, else content hash); rows that may have
    been created (unknown, failed) are marked to be looked up before a run sends them.
    With --input and --mapping (those the results were written for, with run's
    --encoding and --delimiter) each posted row's lead, date-time and event code are
    recorded too, as a run that posted it would have: later runs with --on-changed update
    can update it in place. Each row's content must match its results line.

    \b
    Example (a migration loaded without --history, before the first nightly load):
      bulkpost history import migration-results.csv --history history.db \\
          --input migration.csv --mapping mapping.toml
    """
    from bulkpost.reading.mapping_file import load_mapping
    from bulkpost.storage.history.imports import ResultsInput, import_results

    try:
        if (input_path is None) != (mapping_path is None):
            raise UsageError("--input and --mapping go together: the input the results "
                             "were written for, and the mapping that loaded it")
        source = None
        if input_path is not None and mapping_path is not None:
            source = ResultsInput(input_path, load_mapping(mapping_path), encoding, delimiter)
        done = import_results(history_path, results_files, new_run_id(), source)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    for imported in done:
        counts = imported.counts
        identified = (f", {counts['identified']:,} of them with their lead, date-time and "
                      "event code (updatable)" if source is not None else "")
        click.echo(f"{imported.path}: {counts['lines']:,} lines: {counts['posted']:,} keys "
                   f"posted{identified}, {counts['to_look_up']:,} to look up first (may have "
                   "been created)", err=True)
        if twice := counts["posted_more_than_once"]:
            keys = counts["keys_posted_more_than_once"]
            shown = ", ".join(map(repr, keys)) + (" …" if twice > len(keys) else "")
            click.echo(f"{imported.path}: {twice:,} key{'' if twice == 1 else 's'} posted by "
                       "more than one row (an activity each; the history keeps one): "
                       f"{shown}", err=True)
        for line in _not_updatable_lines(imported, source is not None):
            click.echo(f"{imported.path}: {line}", err=True)
    emit({"history": str(history_path),
          "imported": [{"results": str(imported.path), **imported.counts,
                        "rows_not_matching": imported.not_matching[:100]}
                       for imported in done]})


def _not_updatable_lines(imported: Imported, with_input: bool) -> list[str]:
    """What the import could not record, what that means, and how to fix it."""
    counts = imported.counts
    missing = counts["not_identified"]
    if not missing:
        return []
    what = (f"{missing:,} posted keys recorded without their lead, date-time and event "
            "code: a later run with --on-changed update cannot update them (it skips them "
            "as changed)")
    if not with_input:
        return [f"{what}; import again with --input and --mapping (the input these results "
                "were written for, and its mapping) to record them"]
    lines = [f"{what}: {counts['not_matching']:,} rows recorded posted do not match the "
             "input (another input or mapping, or values the run's activity-type schemas "
             "normalised, such as dates or dropdowns):"]
    lines += [f"  {problem}" for problem in imported.not_matching[:10]]
    if len(imported.not_matching) > 10:
        lines.append(f"  … and {len(imported.not_matching) - 10:,} more (the JSON summary "
                     "lists the first 100)")
    return lines


def _account_history(host: str) -> Path:
    """The history runs keep by default for the keys in the environment (on ``host``, else
    on the keys' region, cached or found)."""
    from bulkpost.onboarding.account import account_for
    from bulkpost.storage.history.accounts import account_history_path

    account = account_for(host, environment_keys())
    return account_history_path(account.url, account.credentials.access_key)


@history.command("where")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help=HOST_HELP)
def history_where(host: str) -> None:
    """Print where this account's history is: the one runs keep when no --history is given.

    It is found from the keys (LSQ_ACCESS_KEY, LSQ_SECRET_KEY) and the API host; the
    folder is BULKPOST_DATA_DIR, else the user's data directory. To move it, move the file
    and give --history; to start afresh, delete it (when no run is using it).

    \b
    Example:
      bulkpost history where --host api-in21.leadsquared.com
      bulkpost history stats --host api-in21.leadsquared.com
    """
    try:
        path = _account_history(host)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    click.echo(str(path))


@history.command("stats")
@click.option("--history", "history_path", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The history database [default: this account's, from the keys and "
                   "--host].")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help="Without --history: the API host whose account's history to read.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(0, 1000),
              help="How many of the latest runs to list.")
def history_stats(history_path: Path | None, host: str, as_json: bool, runs: int) -> None:
    """What the history holds: keys by state and event code, runs, size on disk.

    Readable while a run writes the history. Without --history: this account's own.

    \b
    Example:
      bulkpost history stats --history history.db --runs 10
    """
    from bulkpost.storage.history.database import History
    from bulkpost.storage.history.schema import damaged

    try:
        if history_path is None:
            history_path = _account_history(host)
        if not history_path.is_file():
            raise UsageError(f"{history_path}: no such history (no run has kept one there)")
        store = History(history_path).open(lock=False)  # readable while a run writes
        try:
            stats = store.stats(runs)
        except sqlite3.DatabaseError as exc:
            raise damaged(history_path, exc) from None
        finally:
            store.close()
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    if as_json:
        emit(stats)
        return
    lines = [f"{stats['history']}: {stats['keys']:,} keys, {stats['bytes'] / 1e6:,.1f} MB",
             f"  posted   {stats['posted']:>12,}",
             f"  claims   {stats['claims']:>12,}  (requests whose answer no run recorded as "
             "final: looked up before that content is sent again)",
             f"  waiting  {stats['waiting']:>12,}  (rows left failed or unknown: the next run "
             "finishes them, even if its input no longer has them)",
             f"  from {stats['first'] or '-'} to {stats['last'] or '-'}, {stats['runs']:,} runs"]
    if stats["by_event_code"]:
        lines.append("posted keys by event code:")
        lines += [f"  {'?' if e['event_code'] is None else e['event_code']:>9}  {e['keys']:>12,}"
                  for e in stats["by_event_code"]]
    if stats["recent_runs"]:
        lines.append("latest runs:")
        for r in stats["recent_runs"]:
            ended = (f"exit {r['exit_code']}, {r['posted'] or 0:,} posted, "
                     f"{r['updated'] or 0:,} updated, {r['skipped'] or 0:,} skipped"
                     if r["finished"] else "did not finish")
            lines.append(f"  {r['run_id']}  {r['started']}  {ended}  {r['input']}")
    click.echo("\n".join(lines))
