"""What every command shares: option callbacks and help texts, the JSON line on stdout."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bulkpost.core.allowance import RateSpec, parse_rate
from bulkpost.errors import UsageError
from bulkpost.onboarding.account import GivenKeys
from bulkpost.runner import logs

F = TypeVar("F", bound=Callable[..., Any])

SHARE_HELP = ("Take at most this share of the rate limit (given, learnt or remembered), "
              "leaving the rest to the account's live integrations: 60%, or a schedule in "
              "the account's time zone such as \"09:00-19:00=40%,100%\" (ranges "
              "HH:MM-HH:MM=P%, then P% for the rest of the day)  [default: 100%]")
TIMEZONE_HELP = ("The account's time zone (an IANA name, e.g. Asia/Kolkata) for --share's "
                 "hours and --daily-calls' day  [default: the account's, from "
                 "UserByAccessKey.Get]")


def environment_keys() -> GivenKeys:
    """The keys in the environment (LSQ_ACCESS_KEY, LSQ_SECRET_KEY), unchecked, and blanked
    out of every log line and message from here on."""
    keys = GivenKeys.from_environment(os.environ)
    logs.register_secret(keys.secret, keys.access)
    return keys


def rate_option(_ctx: click.Context, _param: click.Parameter, value: str) -> RateSpec:
    try:
        return parse_rate(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def learnt_rate_option(_ctx: click.Context, _param: click.Parameter,
                       value: str | None) -> str | RateSpec | None:
    """A rate that may be left out (learnt) or ``auto`` (learnt afresh): checked here,
    decided by :func:`bulkpost.runner.limits.rate_setting`."""
    if value is None or value.strip().lower() == "auto":
        return value
    return rate_option(_ctx, _param, value)




def emit(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def write_summary(path: Path | None, data: dict[str, Any]) -> None:
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
HOST_HELP = ("API host of your account's region, as a name or a URL: api.leadsquared.com "
              "or https://api.leadsquared.com (a name means https://; http:// only for "
              "loopback, as the sandbox).")
ENCODING_HELP = "Encoding of a CSV input, e.g. cp1252 for Excel exports."
LOG_LEVEL_HELP = "Least severe log lines shown; debug shows every retry."


def what_you_see(log_level: str) -> Callable[[F], F]:
    """The options of what a command shows: its log format and level, and the progress bar."""
    def decorate(command: F) -> F:
        for option in reversed((
            click.option("--log-format", type=click.Choice(["auto", "console", "json"]),
                         default="auto", show_default=True,
                         help="auto: console on a terminal, JSON lines otherwise."),
            click.option("--log-level", type=click.Choice(["debug", "info", "warning",
                                                           "error"]),
                         default=log_level, show_default=True, help=LOG_LEVEL_HELP),
            click.option("--progress/--no-progress", default=None,
                         help="Progress bar on stderr (default: when stderr is a terminal)."),
        )):
            command = option(command)
        return command
    return decorate
