"""Preflight: before the first row, check keys and host and learn the activity types.

Owns the step between reading the mapping and reading rows: find the event codes the run
will post (the mapping's constant, or the distinct values of ``event_column``), read each
type's schema with "Get Activity Type Details" (one cheap call each, which also proves the
keys and the host), resolve display names in ``[fields]`` to SchemaNames, and refuse the
run (exit 2) when a mapped field does not exist, a mandatory field is not mapped, or the
mapping's constant ``event`` names a type the account lacks (no row could be posted). The
type's log line says how many of its fields are left unmapped; debug level lists them. The
result is the per-event field rules that :class:`bulkpost.core.activity.RowMapper` checks every
row against, the same in a dry run and a real one.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, replace

import pyarrow as pa
import structlog

from bulkpost.core.activity import FieldRule
from bulkpost.core.allowance import RateSpec
from bulkpost.core.credentials import Credentials
from bulkpost.core.mapping import Mapping
from bulkpost.core.options import InputSource
from bulkpost.core.schema import (
    ActivityType,
    SchemaError,
    field_rules,
    parse_activity_type,
    resolve_fields,
)
from bulkpost.core.schema import preflight as compare
from bulkpost.delivery.calls import ApiCalls, DeliverySettings, LookupFailed, Reads, Stopped
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import AbortRun, MappingError
from bulkpost.reading.source import distinct_values

log = structlog.get_logger("bulkpost")


@dataclass(frozen=True, slots=True)
class PreflightResult:
    rules: dict[int, tuple[FieldRule, ...]]
    report: list[str]
    missing_types: tuple[int, ...]  # codes the account does not know: their rows are invalid


async def event_codes(mapping: Mapping, input_path: InputSource | None, encoding: str,
                      delimiter: str | None = None) -> set[int]:
    """The event codes the input will post."""
    if mapping.event is not None:
        return {mapping.event}
    if input_path is None or mapping.event_column is None:
        return set()
    if isinstance(input_path, pa.RecordBatchReader):
        # A stream can be read once only: the run reads it, not the preflight.
        log.warning("preflight.stream_unchecked")
        return set()
    values = await asyncio.to_thread(distinct_values, input_path, mapping.event_column,
                                     encoding=encoding, delimiter=delimiter)
    return {int(v) for v in values if v.isdigit() and v.isascii() and len(v) <= 9}


async def run_preflight(mapping: Mapping, calls: Reads, client: LeadSquaredClient,
                        codes: set[int], *, decimal_comma: bool = False) -> PreflightResult:
    """Read every type's schema (look-ups through ``calls``, under the run's rate limit)
    and check the mapping against it."""
    rules: dict[int, tuple[FieldRule, ...]] = {}
    report: list[str] = []
    missing: list[int] = []
    problems: list[str] = []
    for code in sorted(codes):
        try:
            document = await calls.lookup(functools.partial(client.activity_setting, code))
        except LookupFailed as exc:
            if not exc.answered:
                raise AbortRun(f"cannot read activity type {code} from the API: {exc}") from None
            if code == mapping.event:
                # Every row would be invalid: refuse before reading one, as init does.
                raise MappingError(f"{mapping.source}: event = {code}: activity type {code} "
                                   f"not found in the account ({exc}); bulkpost types "
                                   "lists the account's types") from None
            report.append(f"activity type {code}: not found in the account ({exc}); "
                          "its rows will be invalid")
            log.info("preflight.report", detail=report[-1])
            missing.append(code)
            continue
        activity: ActivityType = parse_activity_type(document, code)
        try:
            resolved = resolve_fields(mapping.fields, activity)
        except SchemaError as exc:
            problems.append(f"{mapping.source}: {exc}")
            continue
        found = compare(resolved, activity)
        report += found.lines()
        # The type's other fields would fill lines of every run's log: their count in words
        # for a person, on the type's line; the list for whoever debugs.
        said = replace(found, unmapped=()).lines()
        if found.unmapped:
            said[0] += (f", {len(found.unmapped)} of them not mapped (left empty; "
                        "--log-level debug lists them)")
            log.debug("preflight.fields_unmapped", activity_type=code,
                      count=len(found.unmapped),
                      fields=[spec.label() for spec in found.unmapped])
        for line in said:
            log.info("preflight.report", detail=line)
        if not found.ok:
            problems += [line.strip() for line in found.lines() if "error:" in line]
        rules[code] = field_rules(resolved, activity, mapping.timezone, decimal_comma)
    if problems:
        raise MappingError("the mapping does not fit the activity type:\n  "
                           + "\n  ".join(problems))
    return PreflightResult(rules, report, tuple(missing))


async def check_mapping(mapping: Mapping, input_path: InputSource | None, host: str,
                        credentials: Credentials, *, encoding: str = "utf-8",
                        delimiter: str | None = None) -> list[str]:
    """``bulkpost check``: the preflight alone; its report, or MappingError / AbortRun."""
    stopping = StopSignal()
    async with LeadSquaredClient(host, credentials) as client:
        calls = ApiCalls(DeliverySettings(3, 0.5, 30.0, 120.0), RateLimit(RateSpec(25, 5.0)),
                         stopping)
        codes = await event_codes(mapping, input_path, encoding, delimiter)
        if not codes:
            raise MappingError("no event code to check: give --input with event_column")
        try:
            result = await run_preflight(mapping, calls, client, codes)
        except Stopped:
            assert stopping.reason is not None
            raise stopping.reason from None
    return result.report

