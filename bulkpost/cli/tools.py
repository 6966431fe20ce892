"""``bulkpost check``, ``report`` and ``verify``: look at a mapping, a results file, the CRM."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path

import click

from bulkpost.cli.common import (
    ENCODING_HELP,
    HOST_HELP,
    SHARE_HELP,
    TIMEZONE_HELP,
    emit,
    environment_keys,
    learnt_rate_option,
    what_you_see,
)
from bulkpost.core.allowance import DOCUMENTED_MAXIMUM, RateSpec
from bulkpost.core.share import ShareSchedule
from bulkpost.errors import BulkpostError, UsageError
from bulkpost.onboarding.account import Account, account_for
from bulkpost.reading.mapping_file import load_mapping
from bulkpost.runner import logs
from bulkpost.runner.limits import rate_setting
from bulkpost.runner.progress import Progress
from bulkpost.storage.outputs import check_output
from bulkpost.storage.report import build_report, export_failures


@click.command()
@click.option("--mapping", "mapping_path", required=True, metavar="FILE",
              type=click.Path(path_type=Path),
              help="TOML file mapping input columns to the activity.")
@click.option("--input", "input_path", metavar="FILE", type=click.Path(path_type=Path),
              help="Also check the input's columns, and the types of its event codes.")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help=HOST_HELP)
@click.option("--encoding", default="utf-8", show_default=True, help=ENCODING_HELP)
@click.option("--delimiter", default=None, help="CSV delimiter (default: sniffed).")
def check(mapping_path: Path, input_path: Path | None, host: str, encoding: str,
          delimiter: str | None) -> None:
    """Check the keys, the host and the mapping against the activity types' schemas.

    The preflight of a run, alone: sends no activity. Keys come from LSQ_ACCESS_KEY and
    LSQ_SECRET_KEY.

    \b
    Example:
      bulkpost check --mapping mapping.toml --input activities.csv \\
          --host api-in21.leadsquared.com
    """
    from bulkpost.runner.preflight import check_mapping

    keys = environment_keys()
    logs.configure("auto", "warning")
    try:
        mapping = load_mapping(mapping_path)
        if input_path is not None:
            from bulkpost.core.mapping import check_columns
            from bulkpost.reading.source import input_columns

            check_columns(mapping, input_columns(input_path, encoding=encoding,
                                                 delimiter=delimiter), str(input_path))
        def read(on: Account) -> list[str]:
            return asyncio.run(check_mapping(mapping, input_path, on.url, on.credentials,
                                             encoding=encoding, delimiter=delimiter))

        # No --host: the keys' region's; a cached host that now refuses is found again.
        lines = account_for(host, keys).retried(read)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    click.echo("\n".join(lines))
    click.echo("the mapping fits: ok")


@click.command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path),
              metavar="FILE", help="The input the results belong to (for --failures).")
@click.option("--failures", type=click.Path(path_type=Path), metavar="FILE",
              help="Write the rows not posted, with their columns plus status and error, "
                   "in the input's encoding and delimiter (Parquet: a UTF-8 CSV).")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Encoding of a CSV input, as given to run (e.g. cp1252).")
@click.option("--delimiter", default=None,
              help="CSV delimiter, as given to run (default: sniffed from the header).")
@click.option("--top", default=10, show_default=True, help="How many error kinds to list.")
def report(results: Path, input_path: Path | None, failures: Path | None, encoding: str,
           delimiter: str | None, top: int) -> None:
    """Counts by status and the most common errors of a RESULTS file.

    \b
    Example (the report, then the rows not posted to a file, to fix and load again):
      bulkpost report results.csv
      bulkpost report results.csv --input activities.csv --failures to-fix.csv
    """
    written = None
    try:
        if failures is not None:
            if input_path is None:
                raise UsageError("--failures needs --input (the file the results belong to)")
            check_output(failures, "--failures")
            for path, what in ((input_path, "the input"), (results, "the results file")):
                if failures.exists() and failures.samefile(path):
                    raise UsageError(f"--failures {failures} is {what}: give a new file")
            # Before the report: an input that does not decode stops here, nothing printed.
            try:
                written = export_failures(results, input_path, failures, encoding=encoding,
                                          delimiter=delimiter)
            except OSError as exc:
                raise UsageError(f"--failures {failures}: cannot write it: "
                                 f"{exc.strerror}") from None
        click.echo(build_report(results).render(top))
        if written is not None:
            click.echo(written.describe(), err=True)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {exc}", err=True)
        sys.exit(exc.exit_code)


@click.command()
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "input_path", required=True, metavar="FILE",
              type=click.Path(path_type=Path),
              help="The input the results file was written for.")
@click.option("--mapping", "mapping_path", required=True, metavar="FILE",
              type=click.Path(path_type=Path), help="The run's mapping.")
@click.option("--all", "every", is_flag=True, help="Read back every posted row.")
@click.option("--sample", default=None, type=click.IntRange(1, None), metavar="N",
              help="Read back N posted rows chosen at random  [default: 20]")
@click.option("--seed", default=None, type=click.IntRange(0, None),
              help="Seed of the sample (printed in the summary), to repeat a check.")
@click.option("--differences", "differences_path",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write one CSV line per difference (row, activity_id, column, field, "
                   "sent, stored).")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help=HOST_HELP)
@click.option("--rate", default=None, callback=learnt_rate_option, metavar="N/Ts",
              help="Most calls in any window, from your plan. Not given: what the run "
                   "learnt for this account (beside the results file), else learnt from the "
                   "answers, starting at 25/5s.")
@click.option("--encoding", default="utf-8", show_default=True, help=ENCODING_HELP)
@click.option("--delimiter", default=None, help="CSV delimiter (default: sniffed).")
@click.option("--no-preflight", is_flag=True,
              help="As the run: do not read the activity types' schemas (values then "
                   "compare as strings).")
@click.option("--decimal-comma", is_flag=True, help="As the run: 12,5 was sent as 12.5.")
@click.option("--one-per-activity", is_flag=True,
              help="Read every activity with a call of its own, never by its lead's pages "
                   "(the note is then not compared).")
@click.option("--share", default=None, metavar="P%|SCHEDULE", help=SHARE_HELP)
@click.option("--timezone", default=None, metavar="ZONE", help=TIMEZONE_HELP)
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds to wait for one answer.")
@what_you_see(log_level="warning")
def verify(results: Path, input_path: Path, mapping_path: Path, every: bool,
           sample: int | None, seed: int | None, differences_path: Path | None, host: str,
           rate: str | RateSpec | None, encoding: str, delimiter: str | None,
           no_preflight: bool, decimal_comma: bool, one_per_activity: bool,
           share: str | None, timezone: str | None, timeout: float,
           log_format: str, log_level: str, progress: bool | None) -> None:
    """Read posted activities back and compare them with what was sent.

    Exit 0 when every activity read back holds what was sent, 1 when some differ or could
    not be read, 2 for usage errors, 3 when aborted.

    \b
    Example (50 posted rows at random, the differences to a file):
      bulkpost verify results.csv --input activities.csv --mapping mapping.toml \\
          --host api-in21.leadsquared.com --sample 50 --differences diff.csv
    """
    import secrets

    from bulkpost.runner import verify as check
    from bulkpost.runner.verify_report import render_report, write_differences

    keys = environment_keys()
    logs.configure(log_format, log_level)
    try:
        if every and sample is not None:
            raise UsageError("give --all or --sample N, not both")
        check_output(differences_path, "--differences")
        for path, what in ((results, "results file"), (input_path, "input")):
            if not path.is_file():
                raise UsageError(f"{what} {path}: no such file")
        mapping = load_mapping(mapping_path)
        account = account_for(host, keys)  # no --host: the keys' region's
        setting = rate_setting(rate, DOCUMENTED_MAXIMUM)
        options = check.VerifyOptions(
            results=results, input=input_path, mapping=mapping, host=account.url,
            credentials=account.credentials,
            rate=setting.start, learn_rate=setting.learn, forget_learnt=setting.forget_learnt,
            sample=None if every else (sample or 20),
            seed=secrets.randbelow(2**32) if seed is None else seed, encoding=encoding,
            delimiter=delimiter, preflight=not no_preflight, decimal_comma=decimal_comma,
            progress=Progress.wanted(sys.stderr) if progress is None else progress,
            timeout=timeout, by_page=not one_per_activity,
            share=ShareSchedule.parse(share) if share is not None else None,
            timezone=timezone)
        # A cached host that refused the keys: found again, read back again.
        summary = account.retried(
            lambda on: asyncio.run(check.verify(dataclasses.replace(options, host=on.url))),
            failed=lambda done: bool(done.aborted))
        click.echo(logs.scrub(render_report(summary)), err=True)
        if differences_path is not None:
            write_differences(differences_path, summary.found)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        emit({"error": logs.scrub(str(exc)), "exit_code": exc.exit_code})
        sys.exit(exc.exit_code)
    if summary.aborted:
        click.echo(f"bulkpost: aborted: {logs.scrub(summary.aborted)}", err=True)
    emit(summary.as_dict())
    sys.exit(summary.exit_code)
