"""Bulk delivery: up to 25 rows in one "Post Bulk Activities on Leads" call (or, for
``--on-changed update``, one "Update Activities in Bulk" call).

Owns a batch of rows from the moment a bulk worker takes it, and drives its
:class:`~bulkpost.core.attempts.BatchAttempts` (where what to do with each item of an answer is
decided). Its rules:

- the batch holds its rows' content locks (taken in one order, so two batches cannot
  deadlock) until every row is recorded, as a single row does;
- all of a call's rows are marked in flight together (one group commit) once its slot
  under the bulk limit is ours;
- rows the answer accounts for unambiguously are recorded; rows answered "not created" go
  again in bulk, backed off; rows the answer says were rate limited go again at once after
  the pause, as a rate-limited call does;
- every other row (left out of the answer, contradictory, a lost or uncertain answer, a
  call refused as a whole) goes on alone through single-row delivery: looked up first
  where it may have been created, sent again only if not found. A fatal answer fails the
  batch and stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

import structlog

from bulkpost.core.activity import bulk_body, bulk_update_body, by_email
from bulkpost.core.attempts import BatchAttempts, Job, RowState, SendBatch, Wait
from bulkpost.core.reconcile import timeless_hash
from bulkpost.core.response import Classified
from bulkpost.core.statuses import Status
from bulkpost.delivery.calls import ApiCalls, Stopped
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.recorder import KeyedLocks, Recorder
from bulkpost.errors import AbortRun

log = structlog.get_logger("bulkpost")


class BulkDelivery:
    """Delivers batches of rows in bulk calls for the bulk workers of one run.

    ``alone`` delivers a row on its own (single-row delivery, lock already held), given
    what the bulk call left of it.
    """

    def __init__(self, calls: ApiCalls, recorder: Recorder, locks: KeyedLocks,
                 client: LeadSquaredClient,
                 alone: Callable[[Job, RowState], Awaitable[Status | None]]) -> None:
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
        call created while its rows are still being recorded.
        """
        rows = [RowState(job) for job in jobs]
        try:
            async with contextlib.AsyncExitStack() as stack:
                for content in sorted({timeless_hash(job.activity.body) for job in jobs}):
                    await stack.enter_async_context(self._locks.hold(content))
                await self._deliver(rows, limit)
        finally:
            for row in rows:  # once each, however the batch ended
                if row.status is not None and not row.counted:
                    self._calls.counts.count(row.status, carried=row.job.carried_from is not None)
                    row.counted = True
        return [row.status or Status.UNKNOWN for row in rows]

    async def _deliver(self, rows: list[RowState], limit: RateLimit) -> None:
        attempts = BatchAttempts(rows, max_attempts=self._calls.settings.max_attempts,
                                 backoff=self._calls.backoff_schedule)
        try:
            step: SendBatch | Wait | None = attempts.start()
            while step is not None:
                if isinstance(step, Wait):
                    await self._calls.backoff(step.seconds)
                    step = attempts.waited()
                    continue
                self._calls.counts.retries += step.retries
                answer, outcomes = await self._send(step.rows, limit)
                after = attempts.answered(step.rows, answer, outcomes)
                if after.lifted:
                    limit.answered()  # answered: not rate limited
                if after.refused:
                    log.warning("bulk.refused", rows=len(step.rows), error=answer.error,
                                looked_up_first=any(row.uncertain for row in step.rows))
                for row, record in after.records:
                    self._recorder.record(row, record.status, activity_id=record.activity_id,
                                          error_type=record.error_type, error=record.error)
                if after.stop_run:
                    self._calls.stopping.stop(AbortRun(after.stop_run))
                    raise Stopped
                if after.rate_limited is not None:
                    self._calls.note_rate_limited(after.rate_limited, limit)
                step = after.then
            for row in attempts.alone:
                row.status = await self._alone(row.job, row) or Status.UNKNOWN
        except Stopped:
            for row in rows:
                if row.status is None:
                    self._recorder.record_stopped(row, on_wire=False)
        except asyncio.CancelledError:
            on_wire = self._calls.left_on_wire(cancelled=True)
            for row in rows:
                if row.status is None:
                    self._recorder.record_stopped(row, cancelled=True, on_wire=on_wire)
            raise

    async def _send(self, rows: list[RowState],
                    limit: RateLimit) -> tuple[Classified, list[Classified | None]]:
        """The bulk call itself: its rows marked in flight (one group commit) once the
        slot is ours, rate-limited answers sat out."""
        items = [row.job.activity for row in rows]
        if rows[0].job.update_of:  # a batch is all updates, or all creates
            updates = [(row.job.activity, row.job.update_of) for row in rows]
            call = functools.partial(self._client.update_bulk, bulk_update_body(updates),
                                     [activity_id for _, activity_id in updates])
        else:
            call = functools.partial(self._client.post_bulk, bulk_body(items), len(items),
                                     by_email(items[0]))
        answer, outcomes = await self._calls.call(
            call, before_sending=functools.partial(self._recorder.mark_in_flight, rows),
            limit=limit, answered_ends_storm=False)
        return answer, outcomes
