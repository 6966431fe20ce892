"""``bulkpost sandbox``: the bundled fake LeadSquared on 127.0.0.1, and what it announces.

With ``--types FILE`` it also serves an account's own activity types, read from what
``bulkpost types CODE --json`` printed, so that a load is rehearsed against its real fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import click

from bulkpost.cli.common import emit, rate_option
from bulkpost.core.allowance import RateSpec
from bulkpost.core.schema import ActivityType
from bulkpost.errors import BulkpostError, UsageError


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


def read_types_file(path: Path) -> list[ActivityType]:
    """The activity types in ``path``, as ``bulkpost types CODE --json`` printed them."""
    from bulkpost.onboarding.activity_types import types_from_dicts

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return types_from_dicts(document)
    except OSError as exc:
        raise UsageError(f"--types {path}: cannot read it: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSON errors are ValueErrors
        raise UsageError(f"--types {path}: not what bulkpost types CODE --json prints: "
                         f"{exc}") from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Loopback address to serve on: 127.0.0.1, ::1 or localhost.")
@click.option("--port", default=8750, show_default=True, help="0 picks a free port.")
@click.option("--rate", default="25/5s", callback=rate_option, show_default=True,
              help="Most calls per access key in any window (a strict sliding window): N/Ts.")
@click.option("--bulk-rate", default="1/5s", callback=rate_option, show_default=True,
              help="The bulk endpoints' own limit.")
@click.option("--rate-text", default=None, metavar="N/Ts",
              callback=lambda _c, _p, v: None if v is None else rate_option(_c, _p, v),
              help="The limit the rate-limit texts name, instead of the one enforced (the "
                   "docs print 25 in 5 s everywhere; a real text may not name the plan's).")
@click.option("--rate-limit-answer", default="429", show_default=True,
              type=click.Choice(["429", "403", "200", "403-plain"]), metavar="FORM",
              help="How rate limiting is answered: 429 (documented), 403 (JSON, the sentence "
                   "without ExceptionType), 200 (the MX body) or 403-plain (the sentence as "
                   "plain text), as real accounts were seen to answer.")
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
              help="Append every created activity, and every update (a line whose "
                   "UpdateOf names the activity), to this JSON-lines file.")
# The defaults are bulkpost.sandbox.gate.DEFAULT_ACCESS_KEY/DEFAULT_SECRET_KEY
# (tests/cli/test_help.py holds the two together); spelled out so that -h does not import
# the server.
@click.option("--access-key", default=None,
              help="Access key accepted  [default: demo-access-key]")
@click.option("--secret-key", default=None,
              help="Secret key accepted  [default: demo-secret-key]")
@click.option("--dialect", "dialect_spec", default="classic", show_default=True,
              metavar="SPEC",
              help="How look-ups answer: a preset, a preset with KEY=VALUE overrides "
                   "(captured,offset=pages0) or overrides of classic. "
                   "Presets: classic, captured, arrival, pages. Keys: "
                   "fields=data|activity-fields|data-list|note-only, entities=true|false, "
                   "created_on=posted|arrival, offset=rows|pages0|pages1, "
                   "record_count=total|page, typed=true|false, update_log=true|false.")
@click.option("--alter-stored", default="", metavar="FIELDS",
              help="SchemaNames (mx_Custom_2,mx_Custom_3) stored as the first half of the "
                   "value sent, to test reading back.")
@click.option("--region", default="api.leadsquared.com", show_default=True, metavar="HOST",
              help="The regional API host it plays: what UserByAccessKey.Get names as the "
                   "account's host.")
@click.option("--home-region", default=None, metavar="HOST",
              help="The keys' home region; when it is not --region, every API call answers "
                   "401, as a wrong region does  [default: --region]")
@click.option("--types", "types_path", metavar="FILE", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also serve your account's own activity types, to rehearse a load: FILE "
                   "holds what `bulkpost types CODE --json` printed against the account (one "
                   "type, or a JSON list of them), so Number, dropdown and mandatory checks "
                   "answer as the account would.")
@click.option("--no-region-hint", is_flag=True,
              help="That 401's message does not name the home host (by default it does; "
                   "LeadSquared's own wording is not known).")
@click.option("--time-zone", default="UTC", show_default=True, metavar="ZONE",
              help="The account's TimeZone, as UserByAccessKey.Get answers it (the clock "
                   "of a run's --share schedule and --daily-calls).")
def sandbox(host: str, port: int, rate: RateSpec, bulk_rate: RateSpec,
            rate_text: RateSpec | None, rate_limit_answer: str, latency: str,
            latency_tail: str,
            arrival_latency: str, faults: str,
            slow_seconds: float, seed: int | None, ledger: Path | None,
            access_key: str | None, secret_key: str | None, dialect_spec: str,
            alter_stored: str, region: str, home_region: str | None,
            no_region_hint: bool, types_path: Path | None, time_zone: str) -> None:
    """Serve a LeadSquared look-alike on loopback for demos and tests.

    It accepts the keys demo-access-key / demo-secret-key (unless --access-key and
    --secret-key say otherwise), and serves its own activity types (301, a typed Order;
    310, a Purchase; every code 100..999 with 50 text fields) and, with --types, yours.
    When ready it prints {"sandbox": URL} on stdout, and on stderr the URL and the keys
    to export; Ctrl-C stops it.

    \b
    Example (then, in another shell, the export lines it prints, and bulkpost run):
      bulkpost sandbox --port 0 --faults 500-before:0.05,html:0.02 --seed 1
    """
    from bulkpost.delivery.client import is_loopback
    from bulkpost.sandbox.app import Sandbox, serve
    from bulkpost.sandbox.dialect import parse_dialect
    from bulkpost.sandbox.faults import parse_faults, parse_latency, parse_tail
    from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
    from bulkpost.sandbox.store import parse_altered

    try:
        if not is_loopback(host):
            raise UsageError("the sandbox serves on loopback only (127.0.0.1, ::1, localhost)")
        own = read_types_file(types_path) if types_path is not None else []
        fake = Sandbox(rate=rate, bulk_rate=bulk_rate, latency=parse_latency(latency),
                       latency_tail=parse_tail(latency_tail),
                       arrival=parse_latency(arrival_latency, "--arrival-latency"),
                       faults=parse_faults(faults),
                       seed=seed, ledger=ledger, slow_seconds=slow_seconds,
                       keys={access_key or DEFAULT_ACCESS_KEY: secret_key or DEFAULT_SECRET_KEY},
                       dialect=parse_dialect(dialect_spec),
                       altered=parse_altered(alter_stored), region=region,
                       home_region=home_region, region_hint=not no_region_hint, types=own,
                       rate_limit_answer=rate_limit_answer, time_zone=time_zone)
        fake.gate.said_rate = rate_text
    except BulkpostError as exc:
        click.echo(f"bulkpost: error: {exc}", err=True)
        sys.exit(exc.exit_code)

    demo_keys = (None if access_key is not None or secret_key is not None
                 else (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY))

    def announce(url: str) -> None:
        emit({"sandbox": url, "rate": str(rate), "faults": faults, "seed": fake.seed,
               "dialect": fake.dialect.name, "types": [a.code for a in own]})
        sys.stdout.flush()
        if own:
            click.echo(f"bulkpost sandbox: serving your activity types from {types_path}: "
                       + ", ".join(f"{a.code} ({a.name})" if a.name else str(a.code)
                                   for a in own), err=True)
        click.echo(_sandbox_announcement(url, demo_keys), err=True)
        sys.stderr.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(fake, host, port, announce))
