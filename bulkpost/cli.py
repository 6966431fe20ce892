"""The command line: ``bulkpost run``, ``report``, ``history``, ``sandbox``…

Owns parsing options (click), reading credentials from the environment, turning errors
into messages and exit codes, and printing the run's JSON summary as the last line of
stdout. Exit codes: 0 every row posted (now or earlier); 1 finished but some rows are not
posted; 2 usage, mapping or input error before any request; 3 aborted (401, 404, signal,
spent quota, unwritable results file).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import json
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import click
import structlog

from bulkpost import logs
from bulkpost.client import Credentials, check_host, checked_key
from bulkpost.errors import BulkpostError, UsageError
from bulkpost.mapping import load_mapping
from bulkpost.outputs import check_output
from bulkpost.pipeline import RunOptions, Summary, new_run_id, run_sync
from bulkpost.progress import Progress
from bulkpost.ratelimit import RateSpec, parse_rate
from bulkpost.report import build_report, export_failures


def _rate(_ctx: click.Context, _param: click.Parameter, value: str) -> RateSpec:
    try:
        return parse_rate(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def _dry_run_report(to_send: int, invalid: int, seconds: float, problems: list[str],
                    rate: str) -> str:
    lines = [f"dry run: {to_send:,} rows to send, {invalid:,} invalid"]
    lines += [f"  {line}" for line in problems]
    hours, rest = divmod(round(seconds), 3600)
    lines.append(f"a real run would take about {hours}:{rest // 60:02d}:{rest % 60:02d} at "
                 f"{rate} (the rate limit; look-ups and retries come on top)")
    return "\n".join(lines)


def _emit(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def _write_summary(path: Path | None, data: dict[str, Any]) -> None:
    """Write the final summary for an orchestrator: whole or not at all (atomic replace)."""
    if path is None:
        return
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        click.echo(f"bulkpost: error: cannot write --summary-json {path}: {exc.strerror}",
                   err=True)


# Examples without a hyphen: help text wraps at hyphens, and a name cut in two misleads.
_HOST_HELP = ("API host of your account's region, as a name or a URL: api.leadsquared.com "
              "or https://api.leadsquared.com (a name means https://; http:// only for "
              "loopback, as the sandbox).")
_ENCODING_HELP = "Encoding of a CSV input, e.g. cp1252 for Excel exports."
_LOG_LEVEL_HELP = "Least severe log lines shown; debug shows every retry."


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


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--mapping", "mapping_path", required=True, metavar="FILE",
              type=click.Path(path_type=Path),
              help="TOML file mapping input columns to the activity.")
@click.option("--results", required=True, metavar="FILE", type=click.Path(path_type=Path),
              help="Results file: every row's outcome; rerun with the same file to resume.")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help=_HOST_HELP)
@click.option("--rate", default="25/5s", callback=_rate, show_default=True,
              help="Most calls in any window: N/Ts, from your plan.")
@click.option("--rate-margin", default=None, type=click.FloatRange(0, 10),
              help="Seconds added to each window to absorb latency jitter "
                   "[default: 2% of the window, 0.1 s at 25/5s].")
@click.option("--workers", default=0, type=click.IntRange(0, 512),
              help="Concurrent single-call requests. 0 (the default): enough to keep the rate "
                   "busy at 4 s of latency, the calls per second times 4, from 2 to 64 (20 "
                   "at 25/5s; times 2.5 with --mode both). --mode bulk uses none: its "
                   "workers follow --bulk-rate.")
@click.option("--mode", type=click.Choice(["single", "bulk", "both"]), default="single",
              show_default=True,
              help="Create activities one per call, 25 per bulk call, or both at once "
                   "(both allowances add up).")
@click.option("--bulk-rate", default="1/5s", callback=_rate, show_default=True,
              help="Most bulk calls in any window: N/Ts, from your plan.")
@click.option("--batch-size", default=25, show_default=True, type=click.IntRange(1, 25),
              help="Activities per bulk call.")
@click.option("--dry-run", is_flag=True, help="Map and validate every row; send nothing.")
@click.option("--resend-unknown", is_flag=True,
              help="Re-send rows whose earlier outcome is unknown (may create duplicates).")
@click.option("--encoding", default="utf-8", show_default=True, help=_ENCODING_HELP)
@click.option("--delimiter", default=None,
              help="CSV delimiter (default: sniffed from the header: , ; tab |).")
@click.option("--max-attempts", default=5, show_default=True, type=click.IntRange(1, 100),
              help="Attempts per row for retryable errors (5xx, timeouts, resets).")
@click.option("--backoff", default=1.0, show_default=True, type=click.FloatRange(0, 600),
              help="First retry delay in seconds; doubles each attempt, with jitter.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds to wait for one answer.")
@click.option("--max-rate-limited", default=900.0, show_default=True,
              type=click.FloatRange(1, 86400),
              help="Stop (exit 3) after this many seconds of rate limiting without a success.")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
              show_default=True, help="auto: console on a terminal, JSON lines otherwise.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help=_LOG_LEVEL_HELP)
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("--no-preflight", is_flag=True,
              help="Do not read the activity types' schemas (rows are checked less).")
@click.option("--decimal-comma", is_flag=True,
              help="Accept 12,5 in Number fields, sent as 12.5 (without thousands "
                   "separators: 1234,5).")
@click.option("--summary-json", metavar="FILE", type=click.Path(path_type=Path), default=None,
              help="Also write the final summary (counts, rate, elapsed, exit code, run id) "
                   "to this file, atomically, for schedulers.")
@click.option("--history", "history_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="SQLite history of the keys posted by every run using it: rows whose key "
                   "it holds are skipped (nightly loads of overlapping files).")
@click.option("--on-changed", type=click.Choice(["skip", "post", "fail"]), default=None,
              help="With --history: a row whose key was posted with other content is "
                   "skipped (counted, warned), posted again, or made invalid  [default: skip]")
@click.option("--verify-first", default=1, show_default=True, type=click.IntRange(0, 25),
              help="Send this many rows alone first, read them back and calibrate the "
                   "look-ups before sending more; stop (exit 3) if a stored value differs "
                   "from the one sent. 0: off.")
def run(input_path: Path, mapping_path: Path, results: Path, host: str, rate: RateSpec,
        rate_margin: float | None, workers: int, dry_run: bool, resend_unknown: bool, encoding: str,
        max_attempts: int, backoff: float, timeout: float, max_rate_limited: float,
        log_format: str, log_level: str, progress: bool | None, no_preflight: bool,
        decimal_comma: bool, delimiter: str | None, mode: str, bulk_rate: RateSpec,
        batch_size: int, summary_json: Path | None, history_path: Path | None,
        on_changed: str | None, verify_first: int) -> None:
    """Post every row of INPUT (CSV or Parquet) as an activity.

    Keys come from LSQ_ACCESS_KEY and LSQ_SECRET_KEY. Run the same command again to
    resume: posted rows are never sent twice.

    \b
    Example:
      export LSQ_ACCESS_KEY=… LSQ_SECRET_KEY=…
      bulkpost run activities.csv --mapping mapping.toml --results results.csv \\
          --host api-in21.leadsquared.com
    """
    access = os.environ.get("LSQ_ACCESS_KEY", "")
    secret = os.environ.get("LSQ_SECRET_KEY", "")
    logs.register_secret(secret, access)
    logs.configure(log_format, log_level)
    run_id = new_run_id()
    writable: Path | None = None  # where a refusal is written too, once known writable
    try:
        check_output(summary_json, "--summary-json")
        writable = summary_json
        mapping = load_mapping(mapping_path)
        if on_changed is not None and history_path is None:
            raise UsageError("--on-changed needs --history")
        credentials: Credentials | None = None
        if not dry_run or (host and access and secret):
            # A dry run sends no activity, but with keys it reads the types' schemas.
            if not host:
                raise UsageError("--host (or LSQ_HOST) is required for a real run")
            host = check_host(host)
            credentials = Credentials(checked_key("LSQ_ACCESS_KEY", access),
                                      checked_key("LSQ_SECRET_KEY", secret))
        options = RunOptions(
            input=input_path, mapping=mapping, results=results, host=host,
            credentials=credentials, rate=rate, rate_margin=rate_margin, workers=workers,
            dry_run=dry_run, resend_unknown=resend_unknown, encoding=encoding,
            delimiter=delimiter,
            max_attempts=max_attempts, backoff=backoff, timeout=timeout,
            max_rate_limited=max_rate_limited,
            progress=Progress.wanted(sys.stderr) if progress is None else progress,
            preflight=not no_preflight, decimal_comma=decimal_comma, mode=mode,
            bulk_rate=bulk_rate, batch_size=batch_size, run_id=run_id,
            history=history_path, on_changed=on_changed or "skip",
            verify_first=verify_first,
        )
        # The run allocates a few short-lived objects per row and keeps few: the imports'
        # objects are set aside, and young collections run less often (measured: about 8%
        # less CPU per row, docs/BENCHMARKS.md). The process is ours; the Python API's is not.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        _arrow_memory_pool()
        summary = run_sync(options)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        failure = {"error": logs.scrub(str(exc)), "exit_code": exc.exit_code, "run_id": run_id}
        _write_summary(writable, failure)
        _emit(failure)
        sys.exit(exc.exit_code)
    if summary.aborted and not summary.interrupted:
        click.echo(f"bulkpost: aborted: {logs.scrub(summary.aborted)}", err=True)
    if summary.unknown and not summary.dry_run:
        structlog.get_logger("bulkpost").warning(
            "rows may have been created and could not be checked, so they were not sent "
            "again: run the same command again to look them up; --resend-unknown sends them "
            "again (only if you know they were not created)", unknown=summary.unknown,
            report=f"bulkpost report {results}")
    if summary.dry_run:
        allowance = {"single": str(rate), "bulk": f"{bulk_rate} bulk calls of {batch_size}",
                     "both": f"{rate} and {bulk_rate} bulk calls of {batch_size}"}[mode]
        click.echo(_dry_run_report(summary.to_send, summary.invalid, summary.estimated_s,
                                   summary.problems, allowance), err=True)
    _write_summary(summary_json, summary.as_dict())
    _emit(summary.as_dict())
    sys.stdout.flush()
    # After the summary: in a terminal, what to do next is the last thing on the screen.
    for line in _closing_lines(summary, results, input_path, encoding, delimiter):
        click.echo(f"bulkpost: {line}", err=True)
    sys.exit(summary.exit_code)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _closing_lines(summary: Summary, results: Path, input_path: Path, encoding: str,
                   delimiter: str | None) -> list[str]:
    """Plain words after a run that did not post everything: what, how many, what next."""
    if summary.dry_run:
        return []
    lines: list[str] = []
    data = summary.as_dict()
    kinds = [(status, data[status]) for status in ("rejected", "invalid", "failed", "unknown")
             if data[status]]
    if kinds:
        report = ["bulkpost", "report", str(results), "--input", str(input_path)]
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            report += ["--encoding", encoding]
        if delimiter is not None:
            report += ["--delimiter", delimiter]
        lines.append(
            f"{_plural(sum(n for _, n in kinds), 'row')} not posted ("
            + ", ".join(f"{n:,} {status}" for status, n in kinds)
            + f"); see why, and write them to a file to fix: {shlex.join(report)} "
            "--failures to-fix.csv")
    if summary.undecodable and summary.undecodable == summary.invalid == summary.rows:
        lines.append(f"no row of {input_path} could be read as UTF-8: if it was saved by "
                     "Excel or another Windows program, try --encoding cp1252 (or the "
                     "encoding it was saved in)")
    pending = data.get("pending", 0)
    if summary.interrupted or pending:
        not_sent = f" with {_plural(pending, 'row')} not yet sent" if pending else ""
        again = shlex.join(["bulkpost", *sys.argv[1:]])
        if summary.interrupted:
            lines.append(f"stopped as asked{not_sent}: run the same command again to resume, "
                         f"nothing is sent twice: {again}")
        else:
            lines.append(f"stopped{not_sent}: once the cause above is fixed, the same command "
                         f"resumes, nothing is sent twice: {again}")
    return lines


@cli.command()
@click.pass_context
def validate(ctx: click.Context, /, **options: Any) -> None:
    """Check every row of INPUT and report the problems, sending nothing.

    The same as `run --dry-run`: maps and validates every row (against the activity
    types' schemas when --host and the keys are given), records the invalid rows in the
    results file, and prints the problems by column and how long a real run would take.
    Exit 0 when every row is valid, 1 when some are not, 2 for usage or mapping errors.

    \b
    Example:
      bulkpost validate activities.csv --mapping mapping.toml --results results.csv \\
          --host api-in21.leadsquared.com
    """
    ctx.invoke(run, dry_run=True, **options)


# validate takes run's options but those that only matter when sending; a new option of
# run reaches validate too.
_SENDING_ONLY = ("dry_run", "workers", "verify_first")
validate.params = [param for param in run.params if param.name not in _SENDING_ONLY]


@cli.command()
@click.option("--mapping", "mapping_path", required=True, metavar="FILE",
              type=click.Path(path_type=Path),
              help="TOML file mapping input columns to the activity.")
@click.option("--input", "input_path", metavar="FILE", type=click.Path(path_type=Path),
              help="Also check the input's columns, and the types of its event codes.")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help=_HOST_HELP)
@click.option("--encoding", default="utf-8", show_default=True, help=_ENCODING_HELP)
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
    from bulkpost.preflight import check_mapping

    logs.register_secret(os.environ.get("LSQ_SECRET_KEY", ""),
                         os.environ.get("LSQ_ACCESS_KEY", ""))
    logs.configure("auto", "warning")
    try:
        mapping = load_mapping(mapping_path)
        if input_path is not None:
            from bulkpost.mapping import check_columns
            from bulkpost.source import input_columns

            check_columns(mapping, input_columns(input_path, encoding=encoding,
                                                 delimiter=delimiter), str(input_path))
        if not host:
            raise UsageError("--host (or LSQ_HOST) is required to read the schemas")
        environ = os.environ
        credentials = Credentials(checked_key("LSQ_ACCESS_KEY", environ.get("LSQ_ACCESS_KEY", "")),
                                  checked_key("LSQ_SECRET_KEY", environ.get("LSQ_SECRET_KEY", "")))
        lines = asyncio.run(check_mapping(mapping, input_path, check_host(host), credentials,
                                          encoding=encoding, delimiter=delimiter))
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    click.echo("\n".join(lines))
    click.echo("the mapping fits: ok")


@cli.command()
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


@cli.command()
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
              help=_HOST_HELP)
@click.option("--rate", default="25/5s", callback=_rate, show_default=True,
              help="Most calls in any window: N/Ts, from your plan.")
@click.option("--encoding", default="utf-8", show_default=True, help=_ENCODING_HELP)
@click.option("--delimiter", default=None, help="CSV delimiter (default: sniffed).")
@click.option("--no-preflight", is_flag=True,
              help="As the run: do not read the activity types' schemas (values then "
                   "compare as strings).")
@click.option("--decimal-comma", is_flag=True, help="As the run: 12,5 was sent as 12.5.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds to wait for one answer.")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
              show_default=True, help="auto: console on a terminal, JSON lines otherwise.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True, help=_LOG_LEVEL_HELP)
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
def verify(results: Path, input_path: Path, mapping_path: Path, every: bool,
           sample: int | None, seed: int | None, differences_path: Path | None, host: str,
           rate: RateSpec, encoding: str, delimiter: str | None, no_preflight: bool,
           decimal_comma: bool, timeout: float, log_format: str, log_level: str,
           progress: bool | None) -> None:
    """Read posted activities back and compare them with what was sent.

    Exit 0 when every activity read back holds what was sent, 1 when some differ or could
    not be read, 2 for usage errors, 3 when aborted.

    \b
    Example (50 posted rows at random, the differences to a file):
      bulkpost verify results.csv --input activities.csv --mapping mapping.toml \\
          --host api-in21.leadsquared.com --sample 50 --differences diff.csv
    """
    import secrets

    from bulkpost import verify as check

    access = os.environ.get("LSQ_ACCESS_KEY", "")
    secret = os.environ.get("LSQ_SECRET_KEY", "")
    logs.register_secret(secret, access)
    logs.configure(log_format, log_level)
    try:
        if every and sample is not None:
            raise UsageError("give --all or --sample N, not both")
        check_output(differences_path, "--differences")
        for path, what in ((results, "results file"), (input_path, "input")):
            if not path.is_file():
                raise UsageError(f"{what} {path}: no such file")
        mapping = load_mapping(mapping_path)
        if not host:
            raise UsageError("--host (or LSQ_HOST) is required to read activities back")
        options = check.VerifyOptions(
            results=results, input=input_path, mapping=mapping, host=check_host(host),
            credentials=Credentials(checked_key("LSQ_ACCESS_KEY", access),
                                    checked_key("LSQ_SECRET_KEY", secret)),
            rate=rate, sample=None if every else (sample or 20),
            seed=secrets.randbelow(2**32) if seed is None else seed, encoding=encoding,
            delimiter=delimiter, preflight=not no_preflight, decimal_comma=decimal_comma,
            progress=Progress.wanted(sys.stderr) if progress is None else progress,
            timeout=timeout)
        summary = asyncio.run(check.verify(options))
        click.echo(logs.scrub(check.render_report(summary)), err=True)
        if differences_path is not None:
            check.write_differences(differences_path, summary.found)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        _emit({"error": logs.scrub(str(exc)), "exit_code": exc.exit_code})
        sys.exit(exc.exit_code)
    if summary.aborted:
        click.echo(f"bulkpost: aborted: {logs.scrub(summary.aborted)}", err=True)
    _emit(summary.as_dict())
    sys.exit(summary.exit_code)


@cli.group()
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
    from bulkpost.history import import_results

    try:
        done = import_results(history_path, results_files, new_run_id())
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    for path, counts in done:
        click.echo(f"{path}: {counts['lines']:,} lines: {counts['posted']:,} keys posted, "
                   f"{counts['to_look_up']:,} to look up first (may have been created)",
                   err=True)
    _emit({"history": str(history_path),
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
        _emit(stats)
        return
    lines = [f"{stats['history']}: {stats['keys']:,} keys, {stats['bytes'] / 1e6:,.1f} MB",
             f"  posted   {stats['posted']:>12,}",
             f"  claims   {stats['claims']:>12,}  (requests whose answer a stopped run never "
             "recorded: looked up before that content is sent again)",
             f"  from {stats['first'] or '-'} to {stats['last'] or '-'}, {stats['runs']:,} runs"]
    if stats["by_event_code"]:
        lines.append("posted keys by event code:")
        lines += [f"  {'?' if e['event_code'] is None else e['event_code']:>9}  {e['keys']:>12,}"
                  for e in stats["by_event_code"]]
    if stats["recent_runs"]:
        lines.append("latest runs:")
        for r in stats["recent_runs"]:
            ended = (f"exit {r['exit_code']}, {r['posted'] or 0:,} posted, "
                     f"{r['skipped'] or 0:,} skipped" if r["finished"] else "did not finish")
            lines.append(f"  {r['run_id']}  {r['started']}  {ended}  {r['input']}")
    click.echo("\n".join(lines))


def _sandbox_announcement(url: str, demo_keys: tuple[str, str] | None) -> str:
    """The sandbox's start-up lines for stderr: where it listens, the keys it accepts.

    ``demo_keys`` (access, secret) are printed: they are the sandbox's, no one's secret.
    Keys given on the command line (``demo_keys`` None) never are.
    """
    lines = [f"bulkpost sandbox: listening on {url} (loopback only; Ctrl-C stops it)"]
    if demo_keys is None:
        lines += ["it accepts the custom keys given by --access-key/--secret-key (not shown);",
                  "to use it, set LSQ_ACCESS_KEY and LSQ_SECRET_KEY to them, and:"]
    else:
        access, secret = demo_keys
        lines += [f"it accepts the demo keys {access} / {secret}; to use it:",
                  f"  export LSQ_ACCESS_KEY={access} LSQ_SECRET_KEY={secret}"]
    lines.append(f"  export LSQ_HOST={url}")
    return "\n".join(lines)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Loopback address to serve on: 127.0.0.1, ::1 or localhost.")
@click.option("--port", default=8750, show_default=True, help="0 picks a free port.")
@click.option("--rate", default="25/5s", callback=_rate, show_default=True,
              help="Most calls per access key in any window (a strict sliding window): N/Ts.")
@click.option("--bulk-rate", default="1/5s", callback=_rate, show_default=True,
              help="The bulk endpoints' own limit.")
@click.option("--latency", default="0.05:0.2", show_default=True,
              help="Answer latency A:B seconds, uniform.")
@click.option("--latency-tail", default="0:0", show_default=True,
              help="P:MAX: a share P of the answers takes B..MAX seconds instead.")
@click.option("--arrival-latency", default="0", show_default=True,
              help="A:B seconds each request travels before the server counts it.")
@click.option("--faults", default="", help="KIND:P,… e.g. 500-before:0.05,html:0.02")
@click.option("--slow-seconds", default=5.0, show_default=True,
              help="Extra latency of the 'slow' fault.")
@click.option("--seed", default=None, type=int, help="Seed for latency and faults.")
@click.option("--ledger", metavar="FILE", type=click.Path(path_type=Path),
              help="Append every created activity to this JSON-lines file.")
# The defaults are bulkpost.sandbox.DEFAULT_ACCESS_KEY/DEFAULT_SECRET_KEY (tests/test_help.py
# holds the two together); spelled out so that -h does not import the server.
@click.option("--access-key", default=None,
              help="The access key it accepts  [default: demo-access-key]")
@click.option("--secret-key", default=None,
              help="The secret key it accepts  [default: demo-secret-key]")
@click.option("--dialect", "dialect_spec", default="classic", show_default=True,
              metavar="SPEC",
              help="How look-ups answer: a preset, a preset with KEY=VALUE overrides "
                   "(captured,offset=pages0) or overrides of classic. "
                   "Presets: classic, captured, arrival, pages. Keys: "
                   "fields=data|activity-fields|data-list, entities=true|false, "
                   "created_on=posted|arrival, offset=rows|pages0|pages1, "
                   "record_count=total|page, typed=true|false.")
@click.option("--alter-stored", default="", metavar="FIELDS",
              help="SchemaNames (mx_Custom_2,mx_Custom_3) stored as the first half of the "
                   "value sent, to test reading back.")
def sandbox(host: str, port: int, rate: RateSpec, bulk_rate: RateSpec, latency: str,
            latency_tail: str,
            arrival_latency: str, faults: str,
            slow_seconds: float, seed: int | None, ledger: Path | None,
            access_key: str | None, secret_key: str | None, dialect_spec: str,
            alter_stored: str) -> None:
    """Serve a LeadSquared look-alike on loopback for demos and tests.

    It accepts the keys demo-access-key / demo-secret-key (unless --access-key and
    --secret-key say otherwise). When ready it prints {"sandbox": URL} on stdout, and on
    stderr the URL and the keys to export; Ctrl-C stops it.

    \b
    Example (then, in another shell, the export lines it prints, and bulkpost run):
      bulkpost sandbox --port 0 --faults 500-before:0.05,html:0.02 --seed 1
    """
    from bulkpost.client import is_loopback
    from bulkpost.dialect import parse_dialect
    from bulkpost.sandbox import (
        DEFAULT_ACCESS_KEY,
        DEFAULT_SECRET_KEY,
        Sandbox,
        parse_altered,
        parse_faults,
        parse_latency,
        parse_tail,
        serve,
    )

    try:
        if not is_loopback(host):
            raise UsageError("the sandbox serves on loopback only (127.0.0.1, ::1, localhost)")
        fake = Sandbox(rate=rate, bulk_rate=bulk_rate, latency=parse_latency(latency),
                       latency_tail=parse_tail(latency_tail),
                       arrival=parse_latency(arrival_latency, "--arrival-latency"),
                       faults=parse_faults(faults),
                       seed=seed, ledger=ledger, slow_seconds=slow_seconds,
                       keys={access_key or DEFAULT_ACCESS_KEY: secret_key or DEFAULT_SECRET_KEY},
                       dialect=parse_dialect(dialect_spec),
                       altered=parse_altered(alter_stored))
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {exc}", err=True)
        sys.exit(exc.exit_code)

    demo_keys = (None if access_key is not None or secret_key is not None
                 else (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY))

    def announce(url: str) -> None:
        _emit({"sandbox": url, "rate": str(rate), "faults": faults, "seed": seed,
               "dialect": fake.dialect.name})
        sys.stdout.flush()
        click.echo(_sandbox_announcement(url, demo_keys), err=True)
        sys.stderr.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(fake, host, port, announce))


def _arrow_memory_pool() -> None:
    """Read with jemalloc (else the system allocator), unless ARROW_DEFAULT_MEMORY_POOL says.

    pyarrow's default, mimalloc, keeps what a long run's read blocks freed: peak memory of a
    200,000-row run was 1.31 times that of a 20,000-row run with it, 1.12 with jemalloc
    (docs/BENCHMARKS.md), at the same speed.
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())


def _one_line_unraisable(info: sys.UnraisableHookArgs) -> None:
    # pyarrow reports a ragged CSV row that is also not UTF-8 this way before it fails the
    # read with a clear message of its own: say it in one line, without a traceback.
    click.echo(f"bulkpost: warning: {logs.scrub(str(info.exc_value))}", err=True)


def main() -> None:
    """Console entry point: unexpected errors are reported without leaking keys."""
    # A run lasts days: `kill -USR1 PID` prints every thread's stack (file, line and
    # function names only, no values) to stderr, to see where a stuck run waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.unraisablehook = _one_line_unraisable
    try:
        cli(standalone_mode=True)
    except SystemExit:
        raise
    except BaseException:  # last resort: scrub the traceback, exit 3
        click.echo(logs.scrub(traceback.format_exc()), err=True)
        sys.exit(3)
