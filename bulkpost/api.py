"""The Python API, for notebooks and orchestrators: ``bulkpost.run(source, mapping, results)``.

Owns turning Python objects into a run: the source may be a CSV or Parquet path, a pandas
DataFrame, a pyarrow Table or a RecordBatchReader (streamed, read once); the mapping a
path, a dict shaped like the TOML file, or a :class:`~bulkpost.core.mapping.Mapping`. The run is
the CLI's, with the same guarantees: the same results file, resume and reconciliation.

A DataFrame goes through Arrow without its index, so pandas' own quirks do not leak into
values: ``NaN`` and ``None`` are nulls (sent as ""), an integer column that pandas turned
into floats to hold a ``NaN`` is sent without ".0", nullable ``Int64`` as integers; an
object column mixing text and numbers as each value's own string, one holding bytes or
dicts refused, naming it (:mod:`bulkpost.reading.frames`).

Arguments are checked before any request, by the CLI's own checks, and refused with a
:class:`~bulkpost.errors.UsageError` in this API's words: settings are named as keywords
(``host='ftp://x': …``, ``batch_size=26: …``, never ``--host``), a misspelled keyword is
named with the closest valid one and the list of them, and ``run()`` called inside a running
event loop says to ``await run_async()`` instead (no coroutine is left unawaited).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import structlog

from bulkpost.core.allowance import DOCUMENTED_BULK_MAXIMUM, DOCUMENTED_MAXIMUM, RateSpec
from bulkpost.core.credentials import Credentials, checked_key
from bulkpost.core.mapping import Mapping, parse_mapping
from bulkpost.core.options import InputSource, RunOptions
from bulkpost.core.summary import Summary
from bulkpost.delivery.client import check_host
from bulkpost.errors import ACCESS_KEY, SECRET_KEY, BulkpostError, UsageError
from bulkpost.reading.mapping_file import load_mapping
from bulkpost.runner import logs
from bulkpost.runner.limits import rate_setting
from bulkpost.runner.pipeline import Run


def run_sync(options: RunOptions) -> Summary:
    """Run to completion on a fresh event loop (the CLI's entry)."""
    if not options.dry_run and options.credentials is None:  # no host: found from the keys
        raise UsageError("a real run needs {access} / {secret}", access=ACCESS_KEY,
                         secret=SECRET_KEY)
    return asyncio.run(execute(options))


async def execute(options: RunOptions) -> Summary:
    """One run; with ``fixes``, the original results file is locked for the run's length
    and its rows this run fixed are marked ``fixed`` at the end (:mod:`bulkpost.storage.fixes`)."""
    from bulkpost.storage.fixes import FixTarget, is_failures_file

    if options.fixes is None:
        if is_failures_file(options.input, options.encoding, options.delimiter):
            structlog.get_logger("bulkpost").warning("fixes.not_given")
        return await Run(options).execute()

    target = FixTarget(options.fixes, options.input, encoding=options.encoding,
                       delimiter=options.delimiter).open(options.results)
    try:
        summary = await Run(options).execute()
        if not options.dry_run:
            try:
                done = await asyncio.to_thread(target.record, options.results,
                                               options.history)
            except (OSError, BulkpostError) as exc:
                # The rows are posted, and their own results file says so: the same
                # command marks them fixed when the original can be written again.
                summary.aborted = summary.aborted or (
                    f"{options.fixes}: the fixed rows could not be marked ({exc}); run the "
                    "same command again to mark them (nothing is sent twice)")
                return summary
            summary.marked_fixed = done.fixed + done.already_fixed
            summary.fixed_already_done = len(done.already_done)
            if done.already_done:
                structlog.get_logger("bulkpost").warning(
                    "fixes.already_done", rows=done.already_done[:20],
                    results=str(options.fixes))
            if done.not_numbered:
                structlog.get_logger("bulkpost").warning(
                    "fixes.not_numbered", rows=done.not_numbered[:20])
        summary.fixes = str(options.fixes)
        return summary
    finally:
        target.close()


def _source(data: Any) -> InputSource:
    if isinstance(data, str | Path | pa.Table | pa.RecordBatchReader):
        return data
    import pandas as pd  # imported here: only a DataFrame needs it

    if isinstance(data, pd.DataFrame):
        from bulkpost.reading.frames import frame_table

        return frame_table(data)
    raise UsageError(f"source: expected a path, a pandas DataFrame, a pyarrow Table or a "
                     f"RecordBatchReader, not {type(data).__name__}")


def _mapping(mapping: str | Path | dict[str, Any] | Mapping) -> Mapping:
    if isinstance(mapping, Mapping):
        return mapping
    if isinstance(mapping, dict):
        return parse_mapping(mapping, "<mapping dict>")
    return load_mapping(mapping)


def run(source: Any, mapping: str | Path | dict[str, Any] | Mapping,
        results: str | Path, *, host: str | None = None, access_key: str | None = None,
        secret_key: str | None = None, rate: str | RateSpec | None = None,
        dry_run: bool = False, **options: Any) -> Summary:
    """Post every row of ``source`` as an activity; return the run's summary.

    Blocks until the run ends; inside a running event loop (a notebook) use
    ``await bulkpost.run_async(...)`` with the same arguments.

    Keys and host default to ``LSQ_ACCESS_KEY``, ``LSQ_SECRET_KEY`` and ``LSQ_HOST``.
    ``options`` are :class:`~bulkpost.runner.pipeline.RunOptions` fields (``workers``,
    ``resend_unknown``, ``max_attempts``, ``timeout``, ``preflight``, ``decimal_comma``,
    ``mode``, ``bulk_rate`` ("1/5s"), ``batch_size``…). ``rate`` ("10/5s") and ``bulk_rate``
    left out are learnt from the answers, as on the command line; ``"auto"`` learns afresh.
    ``history`` (a path) left out: the account's own history keeps what was created, so the
    same rows run again under another ``results`` are not created again;
    ``create_again=True`` keeps none.
    Raises :class:`~bulkpost.errors.UsageError` (and its kin) before any request for bad
    arguments, an unknown keyword, or a call inside a running event loop; a run that
    stopped returns a summary with ``aborted`` set.
    """
    with _in_python_terms():
        _no_running_loop()
        _check_keywords("run", options)
        return run_sync(_options(source, mapping, results, host, access_key, secret_key,
                                 rate, dry_run, options))


async def run_async(source: Any, mapping: str | Path | dict[str, Any] | Mapping,
                    results: str | Path, *, host: str | None = None,
                    access_key: str | None = None, secret_key: str | None = None,
                    rate: str | RateSpec | None = None, dry_run: bool = False,
                    **options: Any) -> Summary:
    """:func:`run` for code that already runs an event loop."""
    with _in_python_terms():
        _check_keywords("run_async", options)
        return await execute(_options(source, mapping, results, host, access_key, secret_key,
                                      rate, dry_run, options))


@contextlib.contextmanager
def _in_python_terms() -> Iterator[None]:
    """The API's boundary: errors leaving it name settings as keywords, not CLI options."""
    try:
        yield
    except BulkpostError as exc:
        exc.surface = "api"
        raise


def _no_running_loop() -> None:
    """Refuse to block inside a running event loop, before any coroutine exists: asyncio
    would refuse too, but leave that coroutine unawaited (a RuntimeWarning)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UsageError("bulkpost.run() blocks, so it cannot be called inside a running event "
                     "loop (a notebook, an async application): use "
                     "`await bulkpost.run_async(...)` with the same arguments")


# RunOptions fields that run() fills from its own arguments: not keywords of their own.
_FILLED = frozenset({"input", "mapping", "results", "credentials"})


def _keywords() -> list[str]:
    """The keywords run() takes after source, mapping and results."""
    fields = {field.name for field in dataclasses.fields(RunOptions)} - _FILLED
    return sorted(fields | {"access_key", "secret_key"})


def _check_keywords(function: str, options: dict[str, Any]) -> None:
    """Refuse keywords that are not options, naming the closest valid one of each."""
    valid = _keywords()
    unknown = [name for name in options if name not in valid]
    if not unknown:
        return
    named = []
    for name in unknown:
        closest = difflib.get_close_matches(name, valid, n=1)
        named.append(f"{name}=" + (f" (did you mean {closest[0]}=?)" if closest else ""))
    raise UsageError(f"bulkpost.{function}(): unknown keyword argument"
                     f"{'s' if len(unknown) > 1 else ''} {', '.join(named)}; "
                     f"valid: {', '.join(valid)}")


def _options(source: Any, mapping: str | Path | dict[str, Any] | Mapping,
             results: str | Path, host: str | None, access_key: str | None,
             secret_key: str | None, rate: str | RateSpec | None, dry_run: bool,
             options: dict[str, Any]) -> RunOptions:
    given = [(name, env, (value if value is not None else os.environ.get(env, "")).strip())
             for name, env, value in (("host", "LSQ_HOST", host),
                                      ("access_key", "LSQ_ACCESS_KEY", access_key),
                                      ("secret_key", "LSQ_SECRET_KEY", secret_key))]
    host, access, secret = (value for _name, _env, value in given)
    credentials = None
    if access and secret and (host or not dry_run):
        # No host: a real run finds the keys' regional host (bulkpost.onboarding.region).
        host = check_host(host) if host else ""
        credentials = Credentials(checked_key("access_key=", access),
                                  checked_key("secret_key=", secret))
    elif not dry_run:
        *rest, last = [f"{name}= (or {env})" for name, env, value in given[1:] if not value]
        listed = f"{', '.join(rest)} and {last}" if rest else last
        raise UsageError(f"a real run needs {listed}; dry_run=True sends nothing")
    else:
        host = ""  # a dry run without keys, or without a host: no schemas read
    logs.register_secret(secret, access)
    if not structlog.is_configured():
        logs.configure()
    if options.get("history") is not None:
        options["history"] = Path(options["history"])
    single = rate_setting(rate, DOCUMENTED_MAXIMUM)
    bulk = rate_setting(options.pop("bulk_rate", None), DOCUMENTED_BULK_MAXIMUM)
    return RunOptions(
        input=_source(source), mapping=_mapping(mapping), results=Path(results), host=host,
        credentials=credentials, rate=single[0], learn_rate=single[1], bulk_rate=bulk[0],
        learn_bulk_rate=bulk[1], forget_learnt=single[2] or bulk[2], dry_run=dry_run,
        **options)
