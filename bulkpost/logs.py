"""Structured logs: one structlog pipeline, rendered for people or for schedulers.

Logs go to stderr: a coloured console on a terminal, JSON lines with ``--log-format json``
or when stderr is not a terminal. Exceptions are rendered as plain text without local
variables (locals would hold request headers, and so the keys), and the last processor
blanks the access and secret keys out of every rendered line whatever path they took.

Lists and dicts stay lists and dicts, so a JSON line carries them as JSON values; other
objects (paths, exceptions) are logged as their text. The console leaves out fields whose
value is None: an optional field that is not there is not shown as ``key=None``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

from bulkpost.progress import BarAwareStream

_secrets: list[str] = []


def register_secret(*values: str) -> None:
    """Make sure ``values`` never appear in a rendered log line."""
    for value in values:
        if value and value not in _secrets:
            _secrets.append(value)


def scrub(text: str) -> str:
    """``text`` with every registered secret blanked out."""
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def _scrubbed(value: Any) -> Any:
    """``value`` with secrets blanked out of its text, lists and dicts kept as such."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, int | float | bool | type(None)):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrubbed(item) for item in value]
    if isinstance(value, dict):
        return {scrub(str(key)): _scrubbed(item) for key, item in value.items()}
    return scrub(str(value))


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        event[key] = _scrubbed(value)
    return event


def _drop_none(_logger: Any, _name: str, event: MutableMapping[str, Any]
               ) -> MutableMapping[str, Any]:
    for key in [key for key, value in event.items() if value is None]:
        del event[key]
    return event


def _redact_rendered(_logger: Any, _name: str, rendered: Any) -> Any:
    return scrub(rendered) if isinstance(rendered, str) else rendered


def configure(log_format: str = "auto", level: str = "info",
              stream: TextIO | BarAwareStream | None = None) -> None:
    """Set up structlog once per process. ``log_format``: auto, console or json."""
    stream = stream or BarAwareStream(sys.stderr)
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    renderer: list[Any]
    if as_json:
        renderer = [structlog.processors.JSONRenderer()]
    else:
        renderer = [_drop_none, structlog.dev.ConsoleRenderer(
            colors=stream.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            *renderer,
            _redact_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, stream)),
        cache_logger_on_first_use=False,
    )
