"""``bulkpost init``: a first mapping file drafted from an export's header and sampled rows.

Owns the command's shell: the sample read with :mod:`bulkpost.reading.source` (so encodings,
delimiters and Parquet read as a run reads them), its first bytes checked against the
encoding first (when they do not decode, nothing is written and the command to run again
names the ``--encoding`` that reads them: :mod:`bulkpost.reading.encodings`), the activity type's
fields read when the keys are in the environment (one "Get Activity Type Details" call
through the call layer, as ``bulkpost types CODE`` makes it, on ``--host`` or else the
keys' host, found by :mod:`bulkpost.onboarding.region` and found again once if a cached one
refuses),
the file written (never over an existing one without ``--force``), and what to check and
what to run next. The guesses are :mod:`bulkpost.onboarding.sampled_columns`',
:mod:`bulkpost.onboarding.sampled_datetimes`' and :mod:`bulkpost.onboarding.field_matching`'s,
the text :mod:`bulkpost.onboarding.mapping_draft`'s. Exit codes: 0 written, 2 a usage or
input error (nothing written), 3 the keys or the host refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from bulkpost.cli.common import ENCODING_HELP, HOST_HELP, environment_keys
from bulkpost.cli.types import read_types
from bulkpost.core.allowance import RateSpec
from bulkpost.core.mapping import parse_mapping
from bulkpost.core.schema import ActivityType, parse_activity_type
from bulkpost.delivery.client import check_host
from bulkpost.errors import BulkpostError, InputError, MappingError, UsageError
from bulkpost.onboarding.account import Account, GivenKeys, account_for
from bulkpost.onboarding.mapping_draft import draft_mapping
from bulkpost.onboarding.sampled_columns import ColumnSample
from bulkpost.onboarding.sampled_datetimes import DateOrder
from bulkpost.reading.csv_dialect import sniff_delimiter, sniff_encoding
from bulkpost.reading.encodings import EncodingAdvice, advise, first_undecodable
from bulkpost.reading.source import _is_parquet as is_parquet
from bulkpost.reading.source import input_columns, open_source, regular_file
from bulkpost.runner import logs
from bulkpost.storage.report import undecodable_at

SAMPLE_ROWS = 5000  # enough rows for a day above 12 to show, few enough to read at once
SAMPLE_BYTES = 8 << 20  # the bytes checked against the encoding: the sampled rows' and more


def undecodable_sample(path: Path, encoding: str,
                       delimiter: str | None) -> tuple[str, EncodingAdvice | None] | None:
    """Where the first sampled bytes of a CSV ``path`` do not decode in ``encoding`` (a
    byte-order mark wins, as a run reads it), and the encoding to give instead; None when
    they decode (or the input is Parquet, or the encoding unknown: reading says so)."""
    if is_parquet(regular_file(path)):  # a pipe is refused before it is opened
        return None
    used = sniff_encoding(path, encoding)
    try:
        with open(path, "rb") as handle:
            sample = handle.read(SAMPLE_BYTES)
            complete = not handle.read(1)
        offset = first_undecodable(sample, used, complete=complete)
    except (OSError, LookupError):
        return None
    if offset is None:
        return None
    where, _cell = undecodable_at(path, used, delimiter or sniff_delimiter(path, used), offset)
    return where, advise(sample, used, complete=complete)


def read_sample(path: Path, *, encoding: str, delimiter: str | None,
                rows: int = SAMPLE_ROWS) -> tuple[list[ColumnSample], int, list[str]]:
    """The first ``rows`` rows of every column, how many were read, and the columns whose
    type has no string form (left out)."""
    columns = input_columns(path, encoding=encoding, delimiter=delimiter)
    readable = columns
    try:
        source = open_source(path, columns, encoding=encoding, delimiter=delimiter)
    except InputError:  # a Parquet list or struct column: find which, read the others
        readable = [c for c in columns if _readable(path, c, encoding, delimiter)]
        source = open_source(path, readable, encoding=encoding, delimiter=delimiter)
    values: dict[str, list[str]] = {c: [] for c in readable}
    numbers: list[int] = []
    read = 0
    with source:
        while read < rows and (batch := source.next_batch()) is not None:
            take = min(len(batch.rows), rows - read)
            for column in readable:
                values[column] += batch.columns[column][:take]
            numbers += batch.rows[:take]
            read += take
    samples = [ColumnSample(c, tuple(values[c]), typed=c in source.typed_columns,
                            aware=c in source.utc_columns, numbers=tuple(numbers))
               for c in readable]
    return samples, read, [c for c in columns if c not in readable]


def _readable(path: Path, column: str, encoding: str, delimiter: str | None) -> bool:
    try:
        open_source(path, [column], encoding=encoding, delimiter=delimiter).close()
    except InputError:
        return False
    return True


def read_activity_type(host: str, keys: GivenKeys, code: int) -> ActivityType:
    """The type's schema as ``bulkpost types CODE`` reads it ("Get Activity Type Details",
    under the documented rate limit), on ``host`` or else the keys' host; a cached host
    that now refuses the keys is found again, once."""
    def read(on: Account) -> Any:
        return asyncio.run(read_types(on.url, on.credentials, RateSpec(25, 5.0), 30.0, code))

    return parse_activity_type(account_for(host, keys).retried(read), code)


def _exists(output: Path) -> UsageError:
    return UsageError(f"{output} exists: give --force to overwrite it, or --output another "
                      "file")


def _write(output: Path, text: str, force: bool) -> None:
    """Write the file whole; without ``force``, only if it does not exist."""
    try:
        if not force:
            with open(output, "x", encoding="utf-8") as handle:
                handle.write(text)
            return
        temp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temp, output)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    except FileExistsError:
        raise _exists(output) from None
    except OSError as exc:
        raise UsageError(f"--output {output}: cannot write it: {exc.strerror}") from None


def init_again(input_path: Path, event: int, output: Path, host: str, encoding: str,
               delimiter: str | None, day_first: bool | None, timezone: str | None) -> str:
    """This ``init`` command with another ``--encoding`` (the other options as given)."""
    words = ["bulkpost", "init", str(input_path), "--event", str(event)]
    if output != Path("mapping.toml"):
        words += ["--output", str(output)]
    if host:
        words += ["--host", host]
    words += ["--encoding", encoding]
    if delimiter is not None:
        words += ["--delimiter", delimiter]
    if day_first is not None:
        words.append("--day-first" if day_first else "--month-first")
    if timezone is not None:
        words += ["--timezone", timezone]
    return shlex.join(words)


def next_command(input_path: Path, output: Path, host: str, encoding: str,
                 delimiter: str | None) -> str:
    """The dry run to make with the mapping written."""
    words = ["bulkpost", "run", str(input_path), "--mapping", str(output), "--results",
             "results.csv", "--dry-run"]
    if host:
        words += ["--host", host]
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        words += ["--encoding", encoding]
    if delimiter is not None:
        words += ["--delimiter", delimiter]
    return shlex.join(words)


@click.command()
@click.argument("input_path", metavar="INPUT",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--event", required=True, type=click.IntRange(1), metavar="CODE",
              help="The activity type's event code (ActivityEvent) the rows are posted as.")
@click.option("--output", default=Path("mapping.toml"), show_default=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The mapping file to write.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help=HOST_HELP)
@click.option("--encoding", default="utf-8", show_default=True, help=ENCODING_HELP)
@click.option("--delimiter", default=None, help="CSV delimiter (default: sniffed).")
@click.option("--day-first/--month-first", "day_first", default=None,
              help="How to read dates that every sampled value leaves open (03/04/2024). "
                   "Without either, day-first is written with a warning to confirm it.")
@click.option("--timezone", default=None, metavar="ZONE",
              help="IANA time zone the date-times were written in, e.g. Asia/Kolkata. "
                   "Without it, a commented timezone line asks you to confirm one.")
def init(input_path: Path, event: int, output: Path, force: bool, host: str, encoding: str,
         delimiter: str | None, day_first: bool | None, timezone: str | None) -> None:
    """Write a first mapping for INPUT: its lead, date-time, note and key columns, and (with
    the keys) its other columns matched to the activity type's fields by display name.

    Every guess to check is marked CONFIRM or !!! in the file and said on stderr; columns
    not matched are listed as comments. Keys come from LSQ_ACCESS_KEY and LSQ_SECRET_KEY
    (without --host, the account's host is found from them); without them the fields are
    left as comments. Never overwrites a file without --force.

    \b
    Example (then the dry run it prints):
      bulkpost init export.csv --event 310 --host api-in21.leadsquared.com
      bulkpost run export.csv --mapping mapping.toml --results results.csv --dry-run
    """
    keys = environment_keys()
    logs.configure("auto", "warning")
    try:
        if output.exists() and output.resolve() == input_path.resolve():
            raise UsageError(f"--output {output} is the input: give another file")
        if output.exists() and not force:
            raise _exists(output)
        if timezone is not None:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise UsageError(f"--timezone {timezone!r}: unknown time zone (use an IANA "
                                 "name such as Asia/Kolkata or UTC)") from None
        if (undecodable := undecodable_sample(input_path, encoding, delimiter)) is not None:
            where, advice = undecodable
            click.echo(f"bulkpost: error: {input_path} does not decode as {encoding} at "
                       f"{where}: it was saved in another encoding. Nothing was written.",
                       err=True)
            if advice is None:
                click.echo("bulkpost: give --encoding with the encoding it was saved in",
                           err=True)
            else:
                click.echo(f"bulkpost: {advice.reason}. Run init again with --encoding "
                           f"{advice.encoding}:", err=True)
                click.echo("  " + init_again(input_path, event, output, host, advice.encoding,
                                             delimiter, day_first, timezone), err=True)
            sys.exit(2)
        samples, rows, unreadable = read_sample(input_path, encoding=encoding,
                                                delimiter=delimiter)
        activity: ActivityType | None = None
        if keys.access or keys.secret:
            activity = read_activity_type(host, keys, event)
        elif host:
            check_host(host)
        order: DateOrder | None = (None if day_first is None else
                                   "day-first" if day_first else "month-first")
        draft = draft_mapping(samples, event, activity, source=input_path.name, rows=rows,
                              order=order, timezone=timezone, unreadable=unreadable)
        try:
            parse_mapping(tomllib.loads(draft.text), str(output))
        except MappingError as exc:
            draft.warnings.append(f"edit the mapping before a run: {exc}")
        _write(output, draft.text, force)
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    for warning in draft.warnings:
        click.echo(f"bulkpost: warning: {warning}", err=True)
    click.echo(f"wrote {output}: {', '.join(draft.found)}; check the lines marked CONFIRM "
               "or !!!, then make a dry run (it sends nothing):")
    click.echo(f"  {next_command(input_path, output, host, encoding, delimiter)}")
