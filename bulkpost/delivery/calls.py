"""Calls to the API under the run's rate limit: the one layer every request goes through.

Owns what a call waits for and what is done with its answer before anyone reads it.
Delivery, reconciliation, the preflight and read-backs all call through :class:`ApiCalls`,
so they share the run's rate limit and its rules:

- a call waits for a slot (:meth:`RateLimit.reserve`) and counts from the moment it leaves
  (:meth:`Slot.sending`), not from its grant: a create first makes its in-flight mark
  durable between the two. No call leaves once the run's :class:`StopSignal` is set
  (:class:`Stopped`);
- a create's task is *on the wire* from the moment it leaves until its answer is in: a task
  cancelled meanwhile leaves its row ``unknown``;
- a "rate limited" answer is no attempt: every caller of that limit pauses (the server's
  ``Retry-After``, or one window) and the call goes again. Each limit keeps its storm
  clock (:meth:`RateLimit.rate_limited`): rate limited without an answer of any other kind
  for longer than ``max_rate_limited`` seconds, the run stops (the quota may be spent);
- with a day's budget of calls (``--daily-calls``, :mod:`bulkpost.storage.budget`), each call
  spends one as it leaves; once it is spent no call leaves and the run stops cleanly
  (exit 4);
- what may be tried again is backed off exponentially (:class:`Backoff`) and tried again
  up to ``max_attempts`` in all; a backoff ends at once when the run stops. Delivery
  decides its retries itself (:mod:`bulkpost.core.attempts`); look-ups use tenacity;
- a look-up is a read with these retries: its document, or :class:`LookupFailed`
  (:class:`ActivityMissing` when the API says the activity is unknown or deleted: the same
  on every retry, so never retried). A fatal answer (keys, host) stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from bulkpost.core.allowance import Lesson, said_limit
from bulkpost.core.attempts import Backoff
from bulkpost.core.response import UNKNOWN_ACTIVITY_TYPE, Classified, Verdict
from bulkpost.core.summary import DeliveryCounts
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import AbortRun

if TYPE_CHECKING:
    from bulkpost.core.options import RunOptions
    from bulkpost.storage.budget import DailyBudget

log = structlog.get_logger("bulkpost")

# One request, classified: its answer and what came with it (a document, bulk outcomes).
Call = Callable[[], Awaitable[tuple[Classified, Any]]]


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How calls are made: a run's from its options (:meth:`of`, the one place they are
    read), or the few fixed ones of a command's questions (finding the host, reading types)."""

    max_attempts: int
    backoff: float
    timeout: float
    max_rate_limited: float  # seconds of rate limiting without a success

    @classmethod
    def of(cls, options: RunOptions) -> DeliverySettings:
        """The run's: the part of its options the calls read."""
        return cls(options.max_attempts, options.backoff, options.timeout,
                   options.max_rate_limited)


class Retry(Exception):
    """An attempt whose answer says: back off and try again."""


class Stopped(Exception):
    """The run is stopping; no further request for this row."""


class LookupFailed(Exception):
    """A look-up got no usable answer: refused by the API, or no answer at all."""

    def __init__(self, reason: str, *, answered: bool = True) -> None:
        super().__init__(reason)
        self.answered = answered  # False: transport failures until the attempts were spent


class ActivityMissing(LookupFailed):
    """The API says the activity looked up does not exist: unknown, or deleted
    (``MXUnknownProspectActivityException``)."""


class Reads(Protocol):
    """Whatever makes look-ups under the run's rate limit (:class:`ApiCalls`)."""

    async def lookup(self, call: Call) -> Any: ...


class ApiCalls:
    """Makes the calls of one run (or of one ``check``/``verify``); all its workers share it.

    ``stopping`` is set with the reason when the run must stop (a fatal answer, a
    rate-limit storm); no call leaves after that.
    """

    def __init__(self, settings: DeliverySettings, limit: RateLimit,
                 stopping: StopSignal) -> None:
        self.settings = settings
        self.limit = limit  # the single-call limit; bulk calls name theirs
        self.stopping = stopping
        self.backoff_schedule = Backoff(settings.backoff)
        self.counts = DeliveryCounts()
        self.on_wire: set[asyncio.Task[Any]] = set()
        self.budget: DailyBudget | None = None  # --daily-calls: each call spends one

    def retrying(self, exception: type[Exception]) -> AsyncRetrying:
        """Attempts of a look-up, ``exception`` meaning "try again", on :class:`Backoff`."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self.backoff_schedule.wait,
            retry=retry_if_exception_type(exception),
            sleep=self.backoff,
            reraise=True,
        )

    async def backoff(self, seconds: float) -> None:
        """Sleep between attempts, but wake at once when the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def call(self, call: Call, *, before_sending: Callable[[], Awaitable[None]] | None = None,
                   limit: RateLimit | None = None,
                   answered_ends_storm: bool = True) -> tuple[Classified, Any]:
        """Wait for a slot, make the call, and sit out rate limiting until answered.

        ``before_sending`` runs once the slot is ours; a call that has one is a create,
        whose task counts as on the wire until the answer is in. ``answered_ends_storm``:
        any answer but "rate limited" stops the limit's storm clock (a bulk call's caller
        decides that from its items). Raises :class:`Stopped` when the run stops first.
        """
        task = asyncio.current_task()
        assert task is not None
        limit = limit or self.limit
        while True:
            if self.stopping.is_set():
                raise Stopped
            slot = await limit.reserve()
            try:
                if self.stopping.is_set():
                    raise Stopped
                if self.budget is not None and not await self.budget.spend():
                    # Spent: stopped as a signal stops a run (no error), with its own exit.
                    self.stopping.stop(self.budget.spent_error(), asked=True)
                    raise Stopped
                if before_sending is not None:
                    await before_sending()
                    if self.stopping.is_set():
                        raise Stopped
                    self.on_wire.add(task)
                    self.counts.creates += 1
                slot.sending()  # the window counts from here, not from the grant
            finally:
                slot.release()
            self.counts.calls += 1
            # Cancelled while on the wire, the task stays in on_wire: the row stays unknown.
            answer, document = await call()
            self.on_wire.discard(task)
            limited = answer.verdict is Verdict.RATE_LIMITED
            # What the window made of the call teaches the limit (no HTTP answer: it may
            # have been counted, or not).
            lesson = limit.learn(slot, None if answer.http_status is None else limited,
                                 said_limit(answer.error) if limited else None)
            if not limited:
                if answered_ends_storm:
                    limit.answered()  # this window is open
                return answer, document
            self.note_rate_limited(answer, limit, lesson)

    def note_rate_limited(self, answer: Classified, limit: RateLimit,
                          lesson: Lesson | None = None) -> None:
        """A "rate limited" answer: stop the run when rate limiting has lasted too long.

        A refused call (``lesson``: what it taught the limit) needs no pause: the limit now
        lets out only the share the window has room for. Items of a bulk answer refused
        (no lesson: the call itself was counted) pause the limit's callers for a window.
        A ``Retry-After`` is honoured either way."""
        self.counts.rate_limited += 1
        lasted = limit.rate_limited()
        if lasted > self.settings.max_rate_limited:
            self.stopping.stop(AbortRun(
                f"rate limited for {lasted:.0f} s without a success: "
                "the daily quota may be spent, or another client uses the whole allowance; "
                "run the same command later to resume"))
            raise Stopped
        bulk = limit is not self.limit
        if lesson is not None and lesson.learnt:
            log.warning("rate_limit.learnt", limit=str(limit.spec), bulk=bulk,
                        counted=lesson.counted, said=lesson.said)
        elif limit.paused_for() <= 0:
            said = {} if answer.retry_after is None else {"retry_after": answer.retry_after}
            share = {} if lesson is None else {"share": str(limit.spec)}
            log.warning("rate_limited", **said, **share, error=answer.error, bulk=bulk)
        if lesson is None or answer.retry_after is not None:
            limit.pause(answer.retry_after)

    def left_on_wire(self, cancelled: bool) -> bool:
        """Whether this task was cancelled with its request on the wire (and forget it)."""
        task = asyncio.current_task()
        on_wire = cancelled and task in self.on_wire
        self.on_wire.discard(task)
        return on_wire

    async def lookup(self, call: Call) -> Any:
        """A look-up answered, with retries; raise LookupFailed when it cannot be had."""
        try:
            async for attempt in self.retrying(Retry):
                with attempt:
                    answer, document = await self.call(call)
                    if answer.verdict is Verdict.OK:
                        return document
                    if answer.verdict is Verdict.FATAL:
                        self.stopping.stop(AbortRun(answer.error))
                        raise Stopped
                    if answer.verdict is Verdict.RETRY:
                        raise Retry(answer.error)
                    if answer.error_type == UNKNOWN_ACTIVITY_TYPE:
                        raise ActivityMissing(f"{answer.error} ({answer.error_type})")
                    raise LookupFailed(f"{answer.error_type}: {answer.error}")
        except Retry as exc:
            raise LookupFailed(str(exc), answered=False) from None
        raise AssertionError("unreachable")  # pragma: no cover
