"""``bulkpost types``: the account's activity types, or one type's fields, read from the API.

Lists the types ("Get List of Activity Types") or shows one type's fields ("Get Activity
Type Details", the preflight's call), as an aligned table or, with ``--json``, one JSON
document on stdout. The calls go through the call layer under ``--rate``; without
``--host`` the host is the keys' own (:mod:`bulkpost.onboarding.region`). An unknown code is a usage
error (exit 2); a refusal or no answer aborts (exit 3).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from typing import Any

import click

from bulkpost.cli.common import HOST_HELP, environment_keys, rate_option
from bulkpost.core.allowance import RateSpec
from bulkpost.core.credentials import Credentials
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.errors import AbortRun, BulkpostError, UsageError
from bulkpost.onboarding.activity_types import (
    parse_activity_types,
    render_list,
    render_type,
    type_dict,
)
from bulkpost.runner import logs


async def read_types(url: str, credentials: Credentials, rate: RateSpec, answer_s: float,
                     code: int | None) -> Any:
    """The list of types (``code`` None) or one type's details, as the API answered."""
    from bulkpost.delivery.calls import ApiCalls, DeliverySettings, LookupFailed, Stopped
    from bulkpost.delivery.ratelimit import RateLimit
    from bulkpost.delivery.stop import StopSignal

    stopping = StopSignal()
    async with LeadSquaredClient(url, credentials, timeout=answer_s, connections=2) as client:
        calls = ApiCalls(DeliverySettings(3, 0.5, answer_s, 120.0), RateLimit(rate), stopping)
        call = (client.activity_types if code is None
                else functools.partial(client.activity_setting, code))
        try:
            return await calls.lookup(call)
        except Stopped:
            assert stopping.reason is not None
            raise stopping.reason from None
        except LookupFailed as exc:
            if code is not None and exc.answered:
                raise UsageError(f"activity type {code}: not found in the account ({exc}); "
                                 "bulkpost types lists the account's types") from None
            raise AbortRun(f"cannot read the activity types from the API: {exc}") from None


@click.command()
@click.argument("code", required=False, type=click.IntRange(0, None))
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document on stdout instead of a table, for scripts.")
@click.option("--host", envvar="LSQ_HOST", default="", show_envvar=True, metavar="HOST",
              help=HOST_HELP + " Without it, the host is found from the keys.")
@click.option("--rate", default="25/5s", callback=rate_option, show_default=True,
              help="Most calls in any window: N/Ts, from your plan.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds to wait for one answer.")
def types(code: int | None, as_json: bool, host: str, rate: RateSpec, timeout: float) -> None:
    """List the account's activity types: code, name, custom fields, mandatory ones.

    With CODE, that type's fields: schema name, display name, data type, whether it is
    mandatory, and its options. Keys come from LSQ_ACCESS_KEY and LSQ_SECRET_KEY.

    \b
    Example (every type, then one type's fields as JSON):
      bulkpost types
      bulkpost types 301 --json
    """
    from bulkpost.core.schema import parse_activity_type
    from bulkpost.onboarding.account import Account, account_for

    keys = environment_keys()
    logs.configure("auto", "info")
    try:
        def read(on: Account) -> tuple[str, Any]:
            return on.url, asyncio.run(read_types(on.url, on.credentials, rate, timeout, code))

        # A cached host that now refuses the keys is found again, once.
        url, document = account_for(host, keys).retried(read)
        if code is None:
            listed = parse_activity_types(document)
            shown = (json.dumps({"host": url, "types": [t.as_dict() for t in listed]},
                                ensure_ascii=False) if as_json else render_list(listed))
        else:
            activity = parse_activity_type(document, code)
            if not activity.name and not activity.fields:
                raise UsageError(f"activity type {code}: not found in the account (an empty "
                                 "answer); bulkpost types lists the account's types")
            shown = (json.dumps(type_dict(activity), ensure_ascii=False) if as_json
                     else render_type(activity))
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {logs.scrub(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    click.echo(shown)
