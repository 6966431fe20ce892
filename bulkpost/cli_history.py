"""``bulkpost history import`` and ``history stats``: the keys posted across runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bulkpost.cli_common import (
    emit,
)
from bulkpost.errors import BulkpostError
from bulkpost.options import new_run_id


@click.group()
def history() -> None:
    """The --history database: seed it from results files, see what it holds.

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
def history_import(results_files: tuple[Path, ...], history_path: Path) -> None:
    """Seed the history from existing results files.

    Posted rows become posted keys (key column, else content hash); rows that may have
    been created (unknown, failed) are marked to be looked up before a run sends them.

    \b
    Example (the results of earlier nightly loads, before the first run with --history):
      bulkpost history import results-2026-*.csv --history history.db
    """
    from bulkpost.history_import import import_results

    try:
        done = import_results(history_path, results_files, new_run_id())
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    for path, counts in done:
        click.echo(f"{path}: {counts['lines']:,} lines: {counts['posted']:,} keys posted, "
                   f"{counts['to_look_up']:,} to look up first (may have been created)",
                   err=True)
        if twice := counts["posted_more_than_once"]:
            keys = counts["keys_posted_more_than_once"]
            shown = ", ".join(map(repr, keys)) + (" …" if twice > len(keys) else "")
            click.echo(f"{path}: {twice:,} key{'' if twice == 1 else 's'} posted by more than "
                       f"one row (an activity each; the history keeps one): {shown}", err=True)
    emit({"history": str(history_path),
           "imported": [{"results": str(path), **counts} for path, counts in done]})


@history.command("stats")
@click.option("--history", "history_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The history database.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(0, 1000),
              help="How many of the latest runs to list.")
def history_stats(history_path: Path, as_json: bool, runs: int) -> None:
    """What the history holds: keys by state and event code, runs, size on disk.

    Readable while a run writes the history.

    \b
    Example:
      bulkpost history stats --history history.db --runs 10
    """
    from bulkpost.history import History

    try:
        store = History(history_path).open(lock=False)  # readable while a run writes
        try:
            stats = store.stats(runs)
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
