"""``bulkpost run`` and ``bulkpost validate``: options in, a run, its summary and exit code out.

Reads the keys from the environment, builds the run's options, prints the summary (the
JSON line last on stdout for a program; in words for a person at a terminal, once) and,
after it on stderr, plain lines on what was not posted and how to resume. The exit codes
are the README's table.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import structlog

from bulkpost.api import run_sync
from bulkpost.cli.common import (
    ENCODING_HELP,
    HOST_HELP,
    SHARE_HELP,
    TIMEZONE_HELP,
    emit,
    environment_keys,
    learnt_rate_option,
    what_you_see,
    write_summary,
)
from bulkpost.cli.summary_text import summary_lines
from bulkpost.core.allowance import DOCUMENTED_BULK_MAXIMUM, DOCUMENTED_MAXIMUM, RateSpec
from bulkpost.core.credentials import Credentials
from bulkpost.core.options import MODES, ON_CHANGED, Mode, OnChanged, RunOptions, new_run_id
from bulkpost.core.share import ShareSchedule
from bulkpost.core.summary import Summary
from bulkpost.errors import BulkpostError, UsageError
from bulkpost.onboarding.account import Account, account_for
from bulkpost.onboarding.region import cached_url
from bulkpost.reading.mapping_file import load_mapping
from bulkpost.runner import logs
from bulkpost.runner.limits import rate_setting
from bulkpost.runner.progress import Progress
from bulkpost.storage.outputs import check_output


def dry_run_report(to_send: int, invalid: int, seconds: float, problems: list[str],
                    rate: str, created_before: int = 0,
                    repeated_keys: Sequence[str] = ()) -> str:
    lines = [f"dry run: {to_send:,} rows to send, {invalid:,} invalid"]
    if created_before:
        lines.append(f"  {_plural(created_before, 'row')} not to send: created before from "
                     "the same rows (the history holds their keys); --create-again would "
                     "create them a second time")
    lines += [f"  {line}" for line in problems]
    lines += [f"  {line}" for line in repeated_keys]
    hours, rest = divmod(round(seconds), 3600)
    lines.append(f"a real run would take about {hours}:{rest // 60:02d}:{rest % 60:02d} at "
                 f"{rate} (the rate limit; look-ups and retries come on top)")
    return "\n".join(lines)


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--mapping", "mapping_path", required=True, metavar="FILE",
              type=click.Path(path_type=Path),
              help="TOML file mapping input columns to the activity.")
@click.option("--results", required=True, metavar="FILE", type=click.Path(path_type=Path),
              help="Results file: every row's outcome; rerun with the same file to resume.")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help=HOST_HELP)
@click.option("--rate", default=None, callback=learnt_rate_option, metavar="N/Ts",
              help="Most calls in any window, from your plan (e.g. 10/5s). Not given: "
                   "learnt from the answers, starting at what an earlier run learnt for "
                   "this account, else at 25/5s; auto: learnt afresh.")
@click.option("--share", default=None, metavar="P%|SCHEDULE", help=SHARE_HELP)
@click.option("--timezone", default=None, metavar="ZONE", help=TIMEZONE_HELP)
@click.option("--daily-calls", default=None, type=click.IntRange(1), metavar="N",
              help="Spend at most N API calls per day (since the account's midnight, across "
                   "runs sharing the history); then stop cleanly, exit 4: run again after "
                   "midnight.")
@click.option("--rate-margin", default=None, type=click.FloatRange(0, 10),
              help="Seconds added to each window to absorb latency jitter "
                   "[default: 2% of the window, 0.1 s at 25/5s].")
@click.option("--workers", default=0, type=click.IntRange(0, 512),
              help="Concurrent single-call requests. 0 (the default): enough to keep the rate "
                   "busy at 4 s of latency, the calls per second times 4, from 2 to 64 (20 "
                   "at 25/5s; times 2.5 with --mode both). --mode bulk uses none: its "
                   "workers follow --bulk-rate.")
@click.option("--mode", type=click.Choice(MODES), default="single",
              show_default=True,
              help="Create activities one per call, 25 per bulk call, or both at once "
                   "(both allowances add up).")
@click.option("--bulk-rate", default=None, callback=learnt_rate_option, metavar="N/Ts",
              help="Most bulk calls in any window, from your plan (e.g. 1/5s). Not given: "
                   "learnt as --rate is, starting at 10/5s.")
@click.option("--batch-size", default=25, show_default=True, type=click.IntRange(1, 25),
              help="Activities per bulk call.")
@click.option("--dry-run", is_flag=True, help="Map and validate every row; send nothing.")
@click.option("--resend-unknown", is_flag=True,
              help="Re-send rows whose earlier outcome is unknown (may create duplicates).")
@click.option("--encoding", default="utf-8", show_default=True, help=ENCODING_HELP)
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
@what_you_see(log_level="info")
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
                   "it holds are skipped (nightly loads of overlapping files). Not given: "
                   "the account's own, in the user's data directory (BULKPOST_DATA_DIR).")
@click.option("--create-again", is_flag=True,
              help="Keep no history: create every row, even those this account's history "
                   "shows were created before from the same row (duplicates).")
@click.option("--on-changed", type=click.Choice(ON_CHANGED),
              default=None,
              help="A row whose key the history holds with other content is "
                   "skipped (counted, warned), posted as a new activity, updated in place "
                   "(its note and custom fields; a changed lead, event or date-time is "
                   "skipped, saying why), or made invalid  [default: skip]")
@click.option("--verify-first", default=1, show_default=True, type=click.IntRange(0, 25),
              help="Send this many rows alone first, read them back and calibrate the "
                   "look-ups before sending more; stop (exit 3) if a stored value differs "
                   "from the one sent. 0: off.")
@click.option("--fixes", "fixes", metavar="FILE", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="INPUT is a failures file (report --failures) of the results FILE of an "
                   "earlier load: its rows, once posted, are marked fixed there, and that "
                   "load's command passes over them.")
def run(input_path: Path, mapping_path: Path, results: Path, host: str,
        rate: str | RateSpec | None,
        rate_margin: float | None, workers: int, dry_run: bool, resend_unknown: bool, encoding: str,
        max_attempts: int, backoff: float, timeout: float, max_rate_limited: float,
        log_format: str, log_level: str, progress: bool | None, no_preflight: bool,
        decimal_comma: bool, delimiter: str | None, mode: Mode,
        bulk_rate: str | RateSpec | None,
        batch_size: int, summary_json: Path | None, history_path: Path | None,
        create_again: bool, on_changed: OnChanged | None, verify_first: int,
        fixes: Path | None, share: str | None = None, timezone: str | None = None,
        daily_calls: int | None = None) -> None:
    """Post every row of INPUT (CSV or Parquet) as an activity.

    Keys come from LSQ_ACCESS_KEY and LSQ_SECRET_KEY. Run the same command again to
    resume: posted rows are never sent twice.

    \b
    Example:
      export LSQ_ACCESS_KEY=… LSQ_SECRET_KEY=…
      bulkpost run activities.csv --mapping mapping.toml --results results.csv \\
          --host api-in21.leadsquared.com
    """
    keys = environment_keys()
    logs.configure(log_format, log_level)
    run_id = new_run_id()
    writable: Path | None = None  # where a refusal is written too, once known writable
    try:
        check_output(summary_json, "--summary-json")
        writable = summary_json
        mapping = load_mapping(mapping_path)
        if create_again and (history_path is not None or on_changed is not None):
            raise UsageError("--create-again runs without a history: not with "
                             + ("--history" if history_path is not None else "--on-changed"))
        credentials: Credentials | None = None
        account: Account | None = None
        if not dry_run or (host and keys.complete):
            # A dry run sends no activity, but with keys it reads the types' schemas.
            account = account_for(host, keys)  # no --host: the keys' region's
            credentials, host = account.credentials, account.url
        elif keys.complete:
            # A dry run asks no host which region holds the keys, but uses one found before
            # (by init, types or a run): then it reads the types' schemas too.
            checked = keys.checked()
            if (cached := cached_url(checked)) is not None:
                credentials, host = checked, cached
        single = rate_setting(rate, DOCUMENTED_MAXIMUM)
        bulk = rate_setting(bulk_rate, DOCUMENTED_BULK_MAXIMUM)
        options = RunOptions(
            input=input_path, mapping=mapping, results=results, host=host,
            credentials=credentials, rate=single.start, learn_rate=single.learn,
            forget_learnt=single.forget_learnt or bulk.forget_learnt, rate_margin=rate_margin,
            workers=workers,
            dry_run=dry_run, resend_unknown=resend_unknown, encoding=encoding,
            delimiter=delimiter,
            max_attempts=max_attempts, backoff=backoff, timeout=timeout,
            max_rate_limited=max_rate_limited,
            progress=Progress.wanted(sys.stderr) if progress is None else progress,
            preflight=not no_preflight, decimal_comma=decimal_comma, mode=mode,
            bulk_rate=bulk.start, learn_bulk_rate=bulk.learn, batch_size=batch_size,
            run_id=run_id,
            history=history_path, create_again=create_again, on_changed=on_changed or "skip",
            verify_first=verify_first, fixes=fixes,
            share=ShareSchedule.parse(share) if share is not None else None,
            timezone=timezone, daily_calls=daily_calls,
        )
        # The run allocates a few short-lived objects per row and keeps few: the imports'
        # objects are set aside, and young collections run less often (less CPU per row:
        # docs/BENCHMARKS.md). The process is ours; the Python API's is not.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        _arrow_memory_pool()

        def attempt(on: Account) -> Summary:
            nonlocal run_id
            if on is account:
                return run_sync(options)
            # The cached host refused the keys: found again, the run runs again (resumes).
            run_id = new_run_id()
            return run_sync(dataclasses.replace(options, host=on.url, run_id=run_id))

        summary = run_sync(options) if account is None else account.retried(
            attempt, failed=lambda done: bool(done.aborted) and not done.interrupted)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        failure = {"error": logs.scrub(str(exc)), "exit_code": exc.exit_code, "run_id": run_id}
        write_summary(writable, failure)
        if not sys.stdout.isatty():  # a person was told in words, above
            emit(failure)
        sys.exit(exc.exit_code)
    if summary.aborted and not summary.interrupted:
        click.echo(f"bulkpost: aborted: {logs.scrub(summary.aborted)}", err=True)
    if summary.unknown and not summary.dry_run:
        structlog.get_logger("bulkpost").warning(
            "rows.unknown", unknown=summary.unknown,
            report=f"bulkpost report {results}")
    if summary.dry_run:
        rates = summary.rate
        allowance = {"single": rates.get("single", ""),
                     "bulk": f"{rates.get('bulk')} bulk calls of {batch_size}",
                     "both": f"{rates.get('single')} and {rates.get('bulk')} bulk calls of "
                             f"{batch_size}"}[mode]
        click.echo(dry_run_report(summary.to_send, summary.invalid, summary.estimated_s,
                                   summary.problems, allowance, summary.created_before,
                                   summary.repeated_keys),
                   err=True)
    write_summary(summary_json, summary.as_dict())
    # The summary once: in words for a person at a terminal, as JSON for a program.
    if not sys.stdout.isatty():
        emit(summary.as_dict())
    if not summary.dry_run and (sys.stdout.isatty() or sys.stderr.isatty()):
        for line in summary_lines(summary):
            click.echo(line, err=not sys.stdout.isatty())
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
    if summary.created_before and summary.created_before == summary.rows:
        # Every row was created before: the same export loaded again, under a new results
        # file. Said apart, with the way to create them again, for whoever meant to.
        where = "this account's history" if summary.account_history else "the history"
        lines.append(f"nothing sent: {where} shows all {_plural(summary.rows, 'row')} "
                     "created before from the same rows (under another results file or "
                     "input); to create them a second time, run with --create-again and a "
                     "new --results file")
    if summary.carried_left or summary.carried_rejected:
        left = (f"{_plural(summary.carried_left, 'row')} still failed or unknown: the next "
                "run sharing the history tries again" if summary.carried_left else "")
        refused = (f"{_plural(summary.carried_rejected, 'row')} refused (their "
                   "row.carried_over log lines say why)" if summary.carried_rejected else "")
        lines.append("rows carried over from earlier runs not posted: "
                     + "; ".join(filter(None, (left, refused))))
    if summary.fixes and summary.marked_fixed:
        lines.append(f"{_plural(summary.marked_fixed, 'row')} of {summary.fixes} marked fixed: "
                     f"the command that wrote {summary.fixes} passes over them")
    if summary.fixed_already_done:
        lines.append(f"{_plural(summary.fixed_already_done, 'row')} of {summary.fixes} were "
                     "posted by their own run meanwhile: not marked fixed, and now held twice "
                     "(the fixes.already_done log line names them)")
    if summary.undecodable and summary.undecodable == summary.invalid == summary.rows:
        lines.append(f"no row of {input_path} could be read as UTF-8: if it was saved by "
                     "Excel or another Windows program, try --encoding cp1252 (or the "
                     "encoding it was saved in)")
    pending = data.get("pending", 0)
    if summary.budget_spent:
        again = shlex.join(["bulkpost", *sys.argv[1:]])
        not_sent = f" with {_plural(pending, 'row')} not yet sent" if pending else ""
        lines.append(f"stopped{not_sent}: the day's budget of "
                     f"{_plural(int(str(summary.budget['daily_calls'])), 'call')} "
                     "(--daily-calls) is spent, nothing is wrong; it renews at the account's "
                     f"midnight, {summary.budget_renews}: run the same command again after "
                     f"that to resume, nothing is sent twice: {again}")
    elif summary.interrupted or pending:
        not_sent = f" with {_plural(pending, 'row')} not yet sent" if pending else ""
        again = shlex.join(["bulkpost", *sys.argv[1:]])
        if summary.interrupted:
            lines.append(f"stopped as asked{not_sent}: run the same command again to resume, "
                         f"nothing is sent twice: {again}")
        else:
            lines.append(f"stopped{not_sent}: once the cause above is fixed, the same command "
                         f"resumes, nothing is sent twice: {again}")
    return lines


@click.command()
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
_SENDING_ONLY = ("dry_run", "workers", "verify_first", "daily_calls")
validate.params = [param for param in run.params if param.name not in _SENDING_ONLY]


def _arrow_memory_pool() -> None:
    """Read with jemalloc (else the system allocator), unless ARROW_DEFAULT_MEMORY_POOL says.

    pyarrow's default, mimalloc, keeps what a long run's read blocks freed, so a long run's
    peak memory grows with its length; with jemalloc it stays nearly flat, at the same speed
    (docs/BENCHMARKS.md, memory).
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())
