"""Calls to the API under the run's rate limit: the one layer every request goes through.

Owns what a call waits for and what is done with its answer before anyone reads it.
Delivery, reconciliation, the preflight and read-backs all call through :class:`ApiCalls`,
so they share the run's rate limit and its rules:

- a call waits for a slot (:meth:`RateLimit.reserve`) and counts from the moment it leaves
  (:meth:`Slot.sending`), not from its grant: a create first makes its in-flight mark
  durable between the two. No call leaves once the run is stopping (:class:`Stopped`);
- a create's task is *on the wire* from the moment it leaves until its answer is in: a task
  cancelled meanwhile leaves its row ``unknown``;
- a "rate limited" answer is no attempt: every caller of that limit pauses (the server's
  ``Retry-After``, or one window) and the call goes again. Each limit keeps a storm clock:
  rate limited without an answer of any other kind for longer than ``max_rate_limited``
  seconds, the run stops (the quota may be spent);
- what may be tried again is backed off exponentially (``backoff`` times 2**n, jitter up to
  one more ``backoff``, never over :data:`BACKOFF_CAP` backoffs) and tried again up to
  ``max_attempts`` in all; a backoff ends at once when the run stops;
- a look-up is a read with these retries: its document, or :class:`LookupFailed`. A fatal
  answer (keys, host) stops the run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    before_nothing,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bulkpost.errors import AbortRun, BulkpostError
from bulkpost.ratelimit import RateLimit
from bulkpost.response import Classified, Verdict
from bulkpost.resume import Status

log = structlog.get_logger("bulkpost")

BACKOFF_CAP = 30  # the longest wait between attempts, in multiples of --backoff

# One request, classified: its answer and what came with it (a document, bulk outcomes).
Call = Callable[[], Awaitable[tuple[Classified, Any]]]


@dataclass(slots=True)
class Tally:
    """Counters the workers keep for the summary."""

    calls: int = 0
    creates: int = 0  # calls that could create an activity (look-ups excluded)
    retries: int = 0
    rate_limited: int = 0
    reconciled: int = 0
    found_posted: int = 0
    lookup_calls: int = 0  # Retrieve pages read to reconcile rows
    calibration_calls: int = 0  # Retrieve pages read to learn how the account answers
    verify_calls: int = 0  # first rows read back (--verify-first)
    statuses: collections.Counter[Status] = field(default_factory=collections.Counter)


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    max_attempts: int
    backoff: float
    timeout: float
    max_rate_limited: float


class Retry(Exception):
    """An attempt whose answer says: back off and try again."""


class Stopped(Exception):
    """The run is stopping; no further request for this row."""


class LookupFailed(Exception):
    """A look-up got no usable answer: refused by the API, or no answer at all."""

    def __init__(self, reason: str, *, answered: bool = True) -> None:
        super().__init__(reason)
        self.answered = answered  # False: transport failures until the attempts were spent


class Reads(Protocol):
    """Whatever makes look-ups under the run's rate limit (:class:`ApiCalls`, or the
    courier that holds one)."""

    async def lookup(self, call: Call) -> Any: ...


class ApiCalls:
    """Makes the calls of one run (or of one ``check``/``verify``); all its workers share it.

    ``stop`` is called with the reason when the run must stop (a fatal answer, a rate-limit
    storm), and is expected to set ``stopping``.
    """

    def __init__(self, settings: DeliverySettings, limit: RateLimit, stopping: asyncio.Event,
                 stop: Callable[[BulkpostError], None]) -> None:
        self.settings = settings
        self.limit = limit  # the single-call limit; bulk calls name theirs
        self.stopping = stopping
        self.stop = stop
        self.tally = Tally()
        self.on_wire: set[asyncio.Task[Any]] = set()
        self._rate_limited_since: dict[int, float] = {}  # id(limit): since when, unbroken

    def retrying(self, exception: type[Exception], *, after_first: bool = False) -> AsyncRetrying:
        """Attempts with exponential backoff; ``after_first``: attempt 1 was made already.

        Most rows need one attempt, so delivery makes the first one itself (the retry
        machinery costs more per row than the rest of our own code) and starts this only
        after it failed: it then sleeps the first backoff, and the schedule shifts by one.
        The jitter is up to one more ``backoff`` (tenacity's default, a whole second, would
        make a short backoff long); every wait stays under the cap.
        """
        backoff, cap = self.settings.backoff, self.settings.backoff * BACKOFF_CAP
        first_wait = wait_exponential_jitter(multiplier=backoff, max=cap, jitter=backoff)

        async def sleep_first(state: RetryCallState) -> None:
            if state.attempt_number == 1:
                await self.backoff(first_wait(state))

        skipped = 1 if after_first else 0
        return AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts - skipped),
            wait=wait_exponential_jitter(multiplier=backoff * 2**skipped, max=cap, jitter=backoff),
            retry=retry_if_exception_type(exception),
            before=sleep_first if after_first else before_nothing,
            sleep=self.backoff,
            reraise=True,
        )

    async def backoff(self, seconds: float) -> None:
        """Sleep between attempts, but wake at once when the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def call(self, call: Call, *, before_sending: Callable[[], Awaitable[None]] | None = None,
                   limit: RateLimit | None = None,
                   settle_clock: bool = True) -> tuple[Classified, Any]:
        """Wait for a slot, make the call, and sit out rate limiting until answered.

        ``before_sending`` runs once the slot is ours; a call that has one is a create,
        whose task counts as on the wire until the answer is in. ``settle_clock``: any
        answer but "rate limited" stops the limit's storm clock (a bulk call's caller
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
                if before_sending is not None:
                    await before_sending()
                    if self.stopping.is_set():
                        raise Stopped
                    self.on_wire.add(task)
                    self.tally.creates += 1
                slot.sending()  # the window counts from here, not from the grant
            finally:
                slot.release()
            self.tally.calls += 1
            # Cancelled while on the wire, the task stays in on_wire: the row stays unknown.
            answer, document = await call()
            self.on_wire.discard(task)
            if answer.verdict is not Verdict.RATE_LIMITED:
                if settle_clock:
                    self.lifted(limit)  # this window is open
                return answer, document
            self.note_rate_limited(answer, limit)

    def lifted(self, limit: RateLimit) -> None:
        """An answer other than "rate limited" came under ``limit``: its storm clock stops."""
        self._rate_limited_since.pop(id(limit), None)

    def note_rate_limited(self, answer: Classified, limit: RateLimit) -> None:
        """Pause the limit's callers; stop the run when it has lasted too long."""
        self.tally.rate_limited += 1
        now = asyncio.get_running_loop().time()
        since = self._rate_limited_since.setdefault(id(limit), now)
        if now - since > self.settings.max_rate_limited:
            self.stop(AbortRun(
                f"rate limited for {now - since:.0f} s without a success: "
                "the daily quota may be spent, or another client uses the whole allowance; "
                "run the same command later to resume"))
            raise Stopped
        if limit.paused_for() <= 0:
            said = {} if answer.retry_after is None else {"retry_after": answer.retry_after}
            log.warning("rate limited by the server: pausing all workers", **said,
                        error=answer.error, bulk=limit is not self.limit)
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
                        self.stop(AbortRun(answer.error))
                        raise Stopped
                    if answer.verdict is Verdict.RETRY:
                        raise Retry(answer.error)
                    raise LookupFailed(f"{answer.error_type}: {answer.error}")
        except Retry as exc:
            raise LookupFailed(str(exc), answered=False) from None
        raise AssertionError("unreachable")  # pragma: no cover
