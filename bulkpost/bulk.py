"""Bulk delivery: up to 25 rows in one "Post Bulk Activities on Leads" call.

Owns a batch of rows from the moment a bulk worker takes it. Its rules:

- the batch holds its rows' content locks (taken in one order, so two batches cannot
  deadlock) until every row is settled, as a single row does;
- all of a call's rows are marked in flight together (one group commit) once its slot
  under the bulk limit is ours;
- each item's outcome is taken from the answer only where the answer accounts for it
  unambiguously: posted, rejected, or not created (sent again in bulk, backed off). Items
  the answer says were rate limited go again at once after the pause, as a rate-limited
  call does: not an attempt;
- every other row (left out of the answer, contradictory, or a lost or uncertain answer)
  goes on alone through single-row delivery: looked up first, sent again only if not found.
  A call refused as a whole sends its rows one by one too; only a 4xx proves that nothing
  was created, so after anything else they are looked up first. A fatal answer fails the
  batch and stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

import structlog

from bulkpost.activity import bulk_body, by_email
from bulkpost.calls import ApiCalls, Retry, Stopped
from bulkpost.client import LeadSquaredClient
from bulkpost.errors import AbortRun
from bulkpost.flight import Flight, Job, KeyedLocks, Recorder
from bulkpost.ratelimit import RateLimit
from bulkpost.reconcile import timeless_hash
from bulkpost.response import Classified, Verdict
from bulkpost.resume import Status

log = structlog.get_logger("bulkpost")


class BulkDelivery:
    """Delivers batches of rows in bulk calls for the bulk workers of one run.

    ``alone`` settles a row on its own (single-row delivery, lock already held), given what
    the bulk call left of it.
    """

    def __init__(self, calls: ApiCalls, recorder: Recorder, locks: KeyedLocks,
                 client: LeadSquaredClient,
                 alone: Callable[[Job, Flight], Awaitable[Status | None]]) -> None:
        self._calls = calls
        self._recorder = recorder
        self._locks = locks
        self._client = client
        self._alone = alone

    async def deliver(self, jobs: list[Job], limit: RateLimit) -> list[Status]:
        """Deliver rows in bulk calls under ``limit``; every row must name its lead the
        same way (all by Id, or all by e-mail). Return the rows' statuses now.

        The rows' content locks are held throughout (taken in one order, so two batches
        cannot deadlock), as for single rows: no other worker can claim an activity a bulk
        call created while its rows are still being settled.
        """
        flights = [Flight(job) for job in jobs]
        try:
            async with contextlib.AsyncExitStack() as stack:
                for content in sorted({timeless_hash(job.activity.body) for job in jobs}):
                    await stack.enter_async_context(self._locks.hold(content))
                await self._deliver(flights, limit)
        finally:
            for flight in flights:  # once each, however the batch ended
                if flight.status is not None and not flight.counted:
                    self._calls.tally.statuses[flight.status] += 1
                    flight.counted = True
        return [flight.status or Status.UNKNOWN for flight in flights]

    async def _deliver(self, flights: list[Flight], limit: RateLimit) -> None:
        alone: list[Flight] = []  # rows to settle one at a time: maybe created, or refused
        try:
            pending = flights
            try:
                async for attempt in self._calls.retrying(Retry):
                    with attempt:
                        pending = await self._attempt(pending, limit, alone)
                        if pending:
                            raise Retry(pending[0].last.error if pending[0].last else "")
            except Retry:
                for flight in pending:  # answered "not created" every time: safe, failed
                    self._recorder.record(flight, Status.FAILED)
            for flight in alone:
                flight.status = await self._alone(flight.job, flight) or Status.UNKNOWN
        except Stopped:
            for flight in flights:
                if flight.status is None:
                    self._recorder.settle_interrupted(flight, on_wire=False)
        except asyncio.CancelledError:
            on_wire = self._calls.left_on_wire(cancelled=True)
            for flight in flights:
                if flight.status is None:
                    self._recorder.settle_interrupted(flight, cancelled=True, on_wire=on_wire)
            raise

    async def _attempt(self, flights: list[Flight], limit: RateLimit,
                       alone: list[Flight]) -> list[Flight]:
        """One bulk attempt for these rows; record what it settled, put rows that may have
        been created (or that must go on their own) in ``alone``, and return the rows to
        send again in bulk: those the answer said were not created. Items the answer says
        were rate limited are sent again at once, after the pause, as a rate-limited call
        is: not an attempt."""
        for flight in flights:
            if flight.attempts:
                self._calls.tally.retries += 1
            flight.attempts += 1
        again: list[Flight] = []
        while flights:
            answer, outcomes = await self._send(flights, limit)
            if answer.verdict is not Verdict.OK:
                self._calls.lifted(limit)  # answered: not rate limited
                again += self._refused(answer, flights, alone)
                break
            limited: list[Flight] = []
            for flight, outcome in zip(flights, outcomes, strict=True):
                flight.last = outcome or answer
                if outcome is None:
                    flight.uncertain = True  # not accounted for: may have been created
                    alone.append(flight)
                elif outcome.verdict is Verdict.POSTED:
                    self._recorder.record(flight, Status.POSTED)
                elif outcome.verdict is Verdict.REJECTED:
                    self._recorder.record(flight, Status.REJECTED)
                elif outcome.verdict is Verdict.RATE_LIMITED:
                    limited.append(flight)
                else:  # the item was not created, and no reason given
                    again.append(flight)
            if len(limited) < len(flights):
                self._calls.lifted(limit)  # some items went through
            if limited:
                self._calls.note_rate_limited(limited[0].last or answer, limit)
            flights = limited
        return again

    async def _send(self, flights: list[Flight],
                    limit: RateLimit) -> tuple[Classified, list[Classified | None]]:
        """The bulk call itself: its rows marked in flight (one group commit) once the
        slot is ours, rate-limited answers sat out."""
        items = [flight.job.activity for flight in flights]
        answer, outcomes = await self._calls.call(
            functools.partial(self._client.post_bulk, bulk_body(items), len(items),
                              by_email(items[0])),
            before_sending=functools.partial(self._recorder.mark_in_flight, flights),
            limit=limit, settle_clock=False)
        return answer, outcomes

    def _refused(self, answer: Classified, flights: list[Flight],
                 alone: list[Flight]) -> list[Flight]:
        """A bulk call not answered item by item; return the rows to send again in bulk."""
        for flight in flights:
            flight.last = answer
        if answer.verdict is Verdict.FATAL:
            for flight in flights:
                self._recorder.record(flight, Status.FAILED)
            self._calls.stop(AbortRun(answer.error))
            return []
        if answer.verdict is Verdict.REJECTED:
            # Refused as a whole: each row goes on its own call, where a bad row is refused
            # alone. Only a 4xx proves nothing was created; after anything else (a 5xx or a
            # 200 carrying an MX error) the rows are looked up first.
            certain = answer.http_status is not None and 400 <= answer.http_status < 500
            log.warning("bulk call refused as a whole: sending its rows one by one",
                        rows=len(flights), error=answer.error, looked_up_first=not certain)
            for flight in flights:
                flight.uncertain = flight.uncertain or not certain
            alone.extend(flights)
            return []
        if answer.uncertain:
            for flight in flights:
                flight.uncertain = True
            alone.extend(flights)
            return []
        return flights  # never reached the server: the same call again, backed off

