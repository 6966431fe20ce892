"""The Python API, for notebooks and orchestrators: ``bulkpost.run(source, mapping, results)``.

Owns turning Python objects into a run: the source may be a CSV or Parquet path, a pandas
DataFrame, a pyarrow Table or a RecordBatchReader (streamed, read once); the mapping a
path, a dict shaped like the TOML file, or a :class:`~bulkpost.core.mapping.Mapping`. The run is
the CLI's, with the same guarantees: the same results file, resume and reconciliation.

``bulkpost.run()`` and ``bulkpost.run_async()`` name and type every option (the CLI's
choices as ``Literal`` types); logging is the caller's to configure
(:func:`configure_logging`, or the application's own structlog configuration): a run
configures none.

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
import difflib
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TextIO, TypeAlias, TypeVar

import pyarrow as pa
import structlog

from bulkpost.core.allowance import DOCUMENTED_BULK_MAXIMUM, DOCUMENTED_MAXIMUM, RateSpec
from bulkpost.core.mapping import Mapping, parse_mapping
from bulkpost.core.options import InputSource, Mode, OnChanged, RunOptions
from bulkpost.core.share import ShareSchedule
from bulkpost.core.summary import Summary
from bulkpost.errors import ACCESS_KEY, SECRET_KEY, BulkpostError, UsageError
from bulkpost.onboarding.account import GivenKeys, python_host_and_keys
from bulkpost.reading.mapping_file import load_mapping
from bulkpost.runner import logs
from bulkpost.runner.limits import rate_setting
from bulkpost.runner.pipeline import Run
from bulkpost.storage.outputs import check_two_files

if TYPE_CHECKING:
    import pandas as pd

# What run() reads, and the mapping it is given.
Source: TypeAlias = "str | Path | pd.DataFrame | pa.Table | pa.RecordBatchReader"
MappingSource: TypeAlias = "str | Path | dict[str, Any] | Mapping"
P = ParamSpec("P")
R = TypeVar("R")


def run_sync(options: RunOptions) -> Summary:
    """Run to completion on a fresh event loop (the CLI's entry)."""
    return asyncio.run(execute(options))


async def execute(options: RunOptions) -> Summary:
    """One run; with ``fixes``, the original results file is locked for the run's length
    and its rows this run fixed are marked ``fixed`` at the end (:mod:`bulkpost.storage.fixes`).
    Refused first: a history that is the results file itself, a real run without keys."""
    from bulkpost.storage.fixes import FixTarget, is_failures_file

    if options.history is not None:
        check_two_files(options.history, options.results)
    if not options.dry_run and options.credentials is None:  # no host: found from the keys
        raise UsageError("a real run needs {access} / {secret}", access=ACCESS_KEY,
                         secret=SECRET_KEY)
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


def _source(data: Source) -> InputSource:
    if isinstance(data, str | Path | pa.Table | pa.RecordBatchReader):
        return data
    import pandas as pd  # imported here: only a DataFrame needs it

    if isinstance(data, pd.DataFrame):
        from bulkpost.reading.frames import frame_table

        return frame_table(data)
    raise UsageError(f"source: expected a path, a pandas DataFrame, a pyarrow Table or a "
                     f"RecordBatchReader, not {type(data).__name__}")


def _mapping(mapping: MappingSource) -> Mapping:
    if isinstance(mapping, Mapping):
        return mapping
    if isinstance(mapping, dict):
        return parse_mapping(mapping, "<mapping dict>")
    return load_mapping(mapping)


@contextlib.contextmanager
def _in_python_terms() -> Iterator[None]:
    """The API's boundary: errors leaving it name settings as keywords, not CLI options."""
    try:
        yield
    except BulkpostError as exc:
        exc.surface = "api"
        raise


def _check_keywords(function: str, given: dict[str, Any], valid: list[str]) -> None:
    """Refuse keywords that are not options, naming the closest valid one of each."""
    unknown = [name for name in given if name not in valid]
    if not unknown:
        return
    named = []
    for name in unknown:
        closest = difflib.get_close_matches(name, valid, n=1)
        named.append(f"{name}=" + (f" (did you mean {closest[0]}=?)" if closest else ""))
    raise UsageError(f"bulkpost.{function}(): unknown keyword argument"
                     f"{'s' if len(unknown) > 1 else ''} {', '.join(named)}; "
                     f"valid: {', '.join(valid)}")


def _keywords(function: Callable[..., Any]) -> list[str]:
    """The keywords ``function`` takes after source, mapping and results."""
    return sorted(name for name, parameter in inspect.signature(function).parameters.items()
                  if parameter.kind is inspect.Parameter.KEYWORD_ONLY)


def _checked_keywords_async(function: Callable[P, Coroutine[Any, Any, R]]
                            ) -> Callable[P, Coroutine[Any, Any, R]]:
    """``function``, refusing an unknown keyword in this API's words (the closest valid
    one, and the list) rather than Python's ``TypeError``; a coroutine function stays one."""
    valid = _keywords(function)

    @functools.wraps(function)
    async def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        with _in_python_terms():
            _check_keywords(function.__name__, kwargs, valid)
        return await function(*args, **kwargs)

    return checked


@_checked_keywords_async
async def run_async(
        source: Source, mapping: MappingSource, results: str | Path, *,
        host: str | None = None, access_key: str | None = None,
        secret_key: str | None = None, dry_run: bool = False,
        rate: str | RateSpec | None = None, mode: Mode = "single",
        bulk_rate: str | RateSpec | None = None, batch_size: int = 25,
        workers: int = 0, rate_margin: float | None = None,
        share: str | ShareSchedule | None = None, daily_calls: int | None = None,
        timezone: str | None = None, history: str | Path | None = None,
        create_again: bool = False, on_changed: OnChanged = "skip",
        fixes: str | Path | None = None, resend_unknown: bool = False,
        verify_first: int = 1, preflight: bool = True, decimal_comma: bool = False,
        encoding: str = "utf-8", delimiter: str | None = None, max_attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,  # noqa: ASYNC109 (the CLI's --timeout: one answer's wait)
        drain_timeout: float = 30.0, max_rate_limited: float = 900.0,
        progress: bool = False, run_id: str = "") -> Summary:
    """Post every row of ``source`` as an activity, in a running event loop (a notebook);
    :func:`run` is the same for code without one. Their arguments, summary and errors are
    the same: see :func:`run`."""
    with _in_python_terms():
        keys = GivenKeys.from_arguments(access_key, secret_key)
        given_host, credentials = python_host_and_keys(host, keys, dry_run=dry_run)
        logs.register_secret(keys.secret, keys.access)
        single = rate_setting(rate, DOCUMENTED_MAXIMUM)
        bulk = rate_setting(bulk_rate, DOCUMENTED_BULK_MAXIMUM)
        options = RunOptions(
            input=_source(source), mapping=_mapping(mapping), results=Path(results),
            host=given_host, credentials=credentials, dry_run=dry_run, rate=single.start,
            learn_rate=single.learn, bulk_rate=bulk.start, learn_bulk_rate=bulk.learn,
            forget_learnt=single.forget_learnt or bulk.forget_learnt, mode=mode,
            batch_size=batch_size, workers=workers, rate_margin=rate_margin,
            share=ShareSchedule.parse(share, "share=") if isinstance(share, str) else share,
            daily_calls=daily_calls, timezone=timezone,
            history=Path(history) if history is not None else None,
            create_again=create_again, on_changed=on_changed,
            fixes=Path(fixes) if fixes is not None else None,
            resend_unknown=resend_unknown, verify_first=verify_first, preflight=preflight,
            decimal_comma=decimal_comma, encoding=encoding, delimiter=delimiter,
            max_attempts=max_attempts, backoff=backoff, timeout=timeout,
            drain_timeout=drain_timeout, max_rate_limited=max_rate_limited,
            progress=progress, run_id=run_id)
        return await execute(options)


def _blocking(function: Callable[P, Coroutine[Any, Any, R]], name: str,
              doc: str) -> Callable[P, R]:
    """``function`` run to its end in an event loop of its own: the same arguments (the
    signature :func:`inspect.signature` and type checkers read), refused inside a running
    loop."""
    valid = _keywords(function)

    @functools.wraps(function)
    def blocking(*args: P.args, **kwargs: P.kwargs) -> R:
        with _in_python_terms():
            _no_running_loop()
            _check_keywords(name, kwargs, valid)
        return asyncio.run(function(*args, **kwargs))

    blocking.__name__ = blocking.__qualname__ = name
    blocking.__doc__ = doc
    return blocking


run = _blocking(run_async, "run", """
    Post every row of ``source`` as an activity; return the run's summary.

    Blocks until the run ends; inside a running event loop (a notebook) use
    ``await bulkpost.run_async(...)`` with the same arguments. The run is the CLI's
    ``bulkpost run``: the same results file, resume, reconciliation and guarantees; each
    keyword is the option of the same name (docs/OPTIONS.md). It configures no logging:
    call :func:`bulkpost.configure_logging` first for bulkpost's own log lines.

    Args:
        source: a CSV or Parquet path, a pandas DataFrame, a pyarrow Table or a
            RecordBatchReader (streamed, read once).
        mapping: a mapping file's path, a dict shaped like the TOML file, or a
            :class:`bulkpost.Mapping`.
        results: the results file (created, or resumed).
        host: the account's API host (a bare name means ``https://``); default
            ``LSQ_HOST``, else found from the keys (a cached host is asked once first).
        access_key: default ``LSQ_ACCESS_KEY``.
        secret_key: default ``LSQ_SECRET_KEY``.
        dry_run: check every row and estimate the time; send nothing (no keys needed).
        rate: single calls' limit, ``"10/5s"`` or a :class:`bulkpost.RateSpec`; left out,
            learnt from the answers; ``"auto"``, learnt afresh.
        mode: which calls create activities: ``"single"``, ``"bulk"`` or ``"both"``.
        bulk_rate: bulk calls' limit (``"1/5s"``), as ``rate``.
        batch_size: activities per bulk call, 1 to 25.
        workers: single-call workers (0: enough to keep the limit busy).
        rate_margin: seconds kept clear of each rate window (None: 2% of it).
        share: the share of the limit taken, ``"60%"`` or a schedule in the account's
            time zone (``"09:00-19:00=40%,100%"``).
        daily_calls: most calls per account day (None: no budget).
        timezone: the account's IANA time zone for ``share`` and ``daily_calls`` (None:
            the account's own).
        history: the history file; left out, the account's own history.
        create_again: keep no history: rows created before are created again.
        on_changed: a key posted before with other content: ``"skip"``, ``"post"``,
            ``"update"`` or ``"fail"``.
        fixes: the results file whose failed rows ``source`` (its failures file) fixes.
        resend_unknown: send rows whose outcome is unknown again.
        verify_first: rows sent alone and read back before any other (0: none).
        preflight: read the activity types' schemas and check rows against them.
        decimal_comma: accept ``12,5`` in Number fields (sent as 12.5).
        encoding: a CSV input's encoding.
        delimiter: a CSV input's delimiter (None: sniffed from the header).
        max_attempts: attempts per row for answers that may be tried again.
        backoff: the first retry's wait, in seconds (doubling, capped).
        timeout: seconds to wait for one answer.
        drain_timeout: seconds to let requests on the wire finish when stopping.
        max_rate_limited: seconds of rate limiting without a success before stopping.
        progress: show a progress bar on stderr.
        run_id: the run's id in logs and the summary ("": a new one).

    Returns:
        The run's :class:`bulkpost.Summary` (``as_dict()``, ``exit_code``); a run that
        stopped returns it with ``aborted`` set.

    Raises:
        bulkpost.UsageError: before any request, for a bad argument (named as a keyword:
            ``batch_size=26: …``), an unknown keyword (with the closest valid one), a real
            run without keys, or a call inside a running event loop.
        bulkpost.MappingError: a mapping that is not valid.
        bulkpost.InputError: an input that cannot be read.
        bulkpost.Locked: another run holds the results file or the history.
    """)


def configure_logging(log_format: Literal["auto", "console", "json"] = "auto",
                      level: Literal["debug", "info", "warning", "error"] = "info",
                      stream: TextIO | None = None) -> None:
    """Send bulkpost's log lines to ``stream`` (default: stderr), as the CLI does.

    A run configures no logging: without this call its lines go wherever the application's
    structlog configuration sends them (structlog's default: printed to stdout). This
    configures structlog for the whole process, with bulkpost's redaction of the keys.

    Args:
        log_format: ``"console"`` (sentences, for people), ``"json"`` (one JSON object a
            line, for schedulers), or ``"auto"``: console on a terminal, else JSON.
        level: the least important lines shown.
        stream: where the lines go; default ``sys.stderr``.
    """
    logs.configure(log_format, level, stream)


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
