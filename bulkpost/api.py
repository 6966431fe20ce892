"""The Python API, for notebooks and orchestrators: ``bulkpost.run(source, mapping, results)``.

Owns turning Python objects into a run: the source may be a CSV or Parquet path, a pandas
DataFrame, a pyarrow Table or a RecordBatchReader (streamed, read once); the mapping a
path, a dict shaped like the TOML file, or a :class:`~bulkpost.mapping.Mapping`. The run is
the CLI's, with the same guarantees: the same results file, resume and reconciliation.

A DataFrame goes through Arrow without its index, so pandas' own quirks do not leak into
values: ``NaN`` and ``None`` are nulls (sent as ""), an integer column that pandas turned
into floats to hold a ``NaN`` is sent without ".0", nullable ``Int64`` as integers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import structlog

from bulkpost import logs
from bulkpost.client import Credentials, check_host, checked_key
from bulkpost.errors import UsageError
from bulkpost.mapping import Mapping, load_mapping, parse_mapping
from bulkpost.pipeline import Run, RunOptions, Summary, run_sync
from bulkpost.ratelimit import RateSpec, parse_rate
from bulkpost.source import InputSource


def _source(data: Any) -> InputSource:
    if isinstance(data, str | Path | pa.Table | pa.RecordBatchReader):
        return data
    import pandas as pd  # imported here: only a DataFrame needs it

    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
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
        secret_key: str | None = None, rate: str | RateSpec = "25/5s",
        dry_run: bool = False, **options: Any) -> Summary:
    """Post every row of ``source`` as an activity; return the run's summary.

    Blocks until the run ends; inside a running event loop (a notebook) use
    ``await bulkpost.run_async(...)`` with the same arguments.

    Keys and host default to ``LSQ_ACCESS_KEY``, ``LSQ_SECRET_KEY`` and ``LSQ_HOST``.
    ``options`` are :class:`~bulkpost.pipeline.RunOptions` fields (``workers``,
    ``resend_unknown``, ``max_attempts``, ``timeout``, ``preflight``, ``decimal_comma``,
    ``mode``, ``bulk_rate`` ("1/5s"), ``batch_size``…).
    Raises :class:`~bulkpost.errors.UsageError` (and its kin) before any request for bad
    arguments; a run that stopped returns a summary with ``aborted`` set.
    """
    return run_sync(_options(source, mapping, results, host, access_key, secret_key, rate,
                             dry_run, options))


async def run_async(source: Any, mapping: str | Path | dict[str, Any] | Mapping,
                    results: str | Path, *, host: str | None = None,
                    access_key: str | None = None, secret_key: str | None = None,
                    rate: str | RateSpec = "25/5s", dry_run: bool = False,
                    **options: Any) -> Summary:
    """:func:`run` for code that already runs an event loop."""
    return await Run(_options(source, mapping, results, host, access_key, secret_key, rate,
                              dry_run, options)).execute()


def _options(source: Any, mapping: str | Path | dict[str, Any] | Mapping,
             results: str | Path, host: str | None, access_key: str | None,
             secret_key: str | None, rate: str | RateSpec, dry_run: bool,
             options: dict[str, Any]) -> RunOptions:
    host = host if host is not None else os.environ.get("LSQ_HOST", "")
    access = access_key if access_key is not None else os.environ.get("LSQ_ACCESS_KEY", "")
    secret = secret_key if secret_key is not None else os.environ.get("LSQ_SECRET_KEY", "")
    credentials = None
    if host and access and secret:
        host = check_host(host)
        credentials = Credentials(checked_key("access_key", access),
                                  checked_key("secret_key", secret))
    elif not dry_run:
        raise UsageError("a real run needs host, access_key and secret_key (or LSQ_HOST, "
                         "LSQ_ACCESS_KEY, LSQ_SECRET_KEY)")
    logs.register_secret(secret, access)
    if not structlog.is_configured():
        logs.configure()
    if isinstance(options.get("bulk_rate"), str):
        options = {**options, "bulk_rate": parse_rate(options["bulk_rate"])}
    return RunOptions(
        input=_source(source), mapping=_mapping(mapping), results=Path(results), host=host,
        credentials=credentials, rate=parse_rate(rate) if isinstance(rate, str) else rate,
        dry_run=dry_run, **options)
