"""Structured logs: one structlog pipeline, rendered for people or for schedulers.

Logs go to stderr: a coloured console on a terminal, JSON lines with ``--log-format json``
or when stderr is not a terminal. Exceptions are rendered as plain text without local
variables (locals would hold request headers, and so the keys), and the last processor
blanks the access and secret keys out of every rendered line whatever path they took.

Every event is a short stable key (``run.finished``, ``rate_limited``), its variable parts
fields. :data:`EVENTS` gives each key the sentence a person reads: the console shows the
sentence in place of the key; a JSON line keeps the key in ``event``, for a scheduler to
filter on, and carries the sentence in ``message``.

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

from bulkpost.runner.progress import BarAwareStream

# Every log call's event, and what a person reads for it. A key is snake_case, dotted by
# area; tests/runner/test_logs.py checks that every call in bulkpost/ uses a key of this table and
# that every key is used.
EVENTS: dict[str, str] = {
    # The run
    "run.started": "run started",
    "run.finished": "run finished",
    "run.stopping": "stopping",
    "run.interrupted": "interrupted: finishing requests on the wire; interrupt again to quit "
                       "at once",
    "run.interrupted_again": "interrupted again: stopping at once; rows on the wire stay "
                             "unknown",
    "internal_error": "internal error",
    "verify.stopping": "stopping",
    "verify.pages_unread": "a lead's pages not read to the end: what they did not show is "
                           "read one activity at a time",
    # Rows and activities
    "row.retrying": "retrying",
    "row.reconciled": "reconciled: already created",
    "rows.unknown": "rows may have been created and could not be checked, so they were not "
                    "sent again: run the same command again to look them up; "
                    "--resend-unknown sends them again (only if you know they were not "
                    "created)",
    "rate_limited": "rate limited by the server: slowing down to what the window has room "
                    "for",
    "rate_limit.learnt": "learnt the account's rate limit from the answers",
    "rate_limit.not_saved": "learnt rate limit not saved beside the results file",
    "account.zone": "the account's time zone, for --share's hours and --daily-calls' day",
    "budget.spent": "the day's budget of calls (--daily-calls) is spent: stopped cleanly; "
                    "run again after the account's midnight",
    "budget.not_saved": "the calls spent today could not be written to the history",
    "bulk.refused": "bulk call refused as a whole: sending its rows one by one",
    # The first rows, read back
    "readback.stored_as_sent": "first rows read back: stored as sent",
    "readback.failed": "first rows not read back",
    # Look-ups and their calibration
    "lookup.calibrated": "look-ups calibrated",
    "lookup.calibrated_earlier": "look-ups calibrated by an earlier run",
    "lookup.rule_learned": "look-up rule learned",
    "lookup.not_calibrated": "look-ups not calibrated yet",
    "lookup.distrusted": "look-ups distrusted: rows whose outcome is uncertain stay unknown",
    "lookup.offset_not_learned": "how the look-up's Offset counts is not learned yet",
    "lookup.calibration_not_saved": "calibration not saved beside the results file",
    # The activity types' schemas
    "preflight.report": "preflight",
    "preflight.fields_unmapped": "fields not mapped",
    "preflight.stream_unchecked": "event codes of a record batch stream are not known before "
                                  "the run: rows are not checked against the activity types' "
                                  "schemas",
    "dry_run.no_schemas": "no --host or keys: the dry run checks rows without the activity "
                          "types' schemas",
    # The account's regional host, found from the keys (no --host)
    "region.asking": "asking a LeadSquared region for the keys' host",
    "region.host": "API host of the keys' region",
    "region.redirected": "the keys belong to another region: asking its host next",
    "region.cache_dropped": "the cached API host refused the keys: finding the host again",
    "region.cache_not_saved": "the API host found could not be cached",
    # The results file and the history
    "results.not_compacted": "results file not compacted",
    "input.read_ahead": "input read ahead: every row's key taken, and the results file "
                        "checked to be this input's",
    "input.repeated_keys": "keys in more than one row of the input: an exact repeat is "
                           "created once; the rows of a key whose contents differ are "
                           "invalid, none sent",
    "results.torn_line": "a torn last line of the results file was cut off (a run killed "
                         "while writing it); its row, if named, is looked up before sending",
    "history.changed_skipped": "rows skipped: their key was posted before with other content "
                               "(their skipped lines in the results file say why)",
    "history.other_claim": "key sent by a run that stopped, with other content: sending this "
                           "row",
    "history.not_finished": "history not finished",
    "history.account": "this account's history (rows it holds are not created again; "
                       "--create-again: keep none)",
    "history.carrying": "rows earlier runs left unfinished, no longer in any input: "
                        "finishing them",
    "row.carried_over": "row carried over from an earlier run",
    # Fixed rows (run --fixes)
    "fixes.already_done": "rows of the failures file whose original row the original run "
                          "finished meanwhile: not marked fixed (the fix created a second "
                          "activity for each)",
    "fixes.not_given": "this input is a failures file (it has a bulkpost_row column): without "
                       "--fixes RESULTS (the results file it was written from), the rows it "
                       "posts stay failed there, and that load's command keeps exiting 1",
    "fixes.not_numbered": "rows of the failures file without a row number in bulkpost_row: "
                          "not marked fixed",
}

_secrets: list[str] = []
_for_people = False  # the console format, read by a person: see for_people()


def for_people() -> bool:
    """Whether the log is read by a person (the console format), not by a program (JSON
    lines): a line that repeats what the person is told in words is left to debug level."""
    return _for_people


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


def _sentence(_logger: Any, _name: str, event: MutableMapping[str, Any]
              ) -> MutableMapping[str, Any]:
    """The console's: the event's sentence in place of its key."""
    key = event.get("event")
    if isinstance(key, str):
        event["event"] = EVENTS.get(key, key)
    return event


def _message(_logger: Any, _name: str, event: MutableMapping[str, Any]
             ) -> MutableMapping[str, Any]:
    """JSON's: the key stays in ``event``, the sentence goes in ``message``."""
    key = event.get("event")
    event["message"] = EVENTS.get(key, key) if isinstance(key, str) else key
    return event


def _redact_rendered(_logger: Any, _name: str, rendered: Any) -> Any:
    return scrub(rendered) if isinstance(rendered, str) else rendered


def configure(log_format: str = "auto", level: str = "info",
              stream: TextIO | BarAwareStream | None = None) -> None:
    """Set up structlog once per process. ``log_format``: auto, console or json."""
    global _for_people
    stream = stream or BarAwareStream(sys.stderr)
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    _for_people = not as_json
    renderer: list[Any]
    if as_json:
        worded: Any = _message
        renderer = [structlog.processors.JSONRenderer()]
    else:
        worded = _sentence
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
            worded,
            _redact,
            *renderer,
            _redact_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, stream)),
        cache_logger_on_first_use=False,
    )
