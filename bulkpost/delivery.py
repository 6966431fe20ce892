"""Delivering rows: attempts under the rate limit, and reconciliation before any re-send.

Owns the life of one row from the moment a worker takes it: mark it in flight (durably),
post it, sit out rate limiting, back off and retry what may be retried, and record the
outcome. Whenever an attempt's outcome is uncertain (the request may have been carried
out) the row is looked up with "Get Activities of a Lead" before it is sent again: found,
it is ``posted`` with that activity's Id; not found, it is sent; the look-up itself failing,
it stays ``unknown`` with the reason. Rows that an earlier run left ``unknown`` or ``failed``
arrive here marked to be reconciled first.

Rows with the same content (content hash) are delivered one at a time, so that two
identical rows can never both claim the same activity: each claims only an Id no other
posted row with that content holds (in the results file, and in the history when there is
one). Look-ups share the run's rate limit. With ``--history`` a row's key is claimed there
with its in-flight mark, made posted with its Id, and released when the row is refused.

In bulk mode a batch of rows goes in one bulk call under the bulk limit: all of them are
marked in flight together, each item's outcome is taken from the answer only where the
answer accounts for it unambiguously, and every other row (left out, contradictory, or a
lost answer) goes on alone through the single-row path above: looked up first, sent again
only if not found. The batch holds its rows' content locks until every row is settled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    before_nothing,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bulkpost.activity import Activity, bulk_body, by_email
from bulkpost.client import LeadSquaredClient
from bulkpost.errors import AbortRun, BulkpostError
from bulkpost.history import History
from bulkpost.ratelimit import RateLimit
from bulkpost.reconcile import (
    PAGE_SIZE,
    Fingerprint,
    Page,
    Reading,
    Scan,
    SendWindow,
    calibrate,
    fingerprint,
    parse_activities,
    pick,
    probe_rule,
    steady,
    timeless_hash,
)
from bulkpost.response import Classified, Verdict
from bulkpost.results import IN_FLIGHT_NOTE, ResultsLog, RowOutcome
from bulkpost.resume import Status

log = structlog.get_logger("bulkpost")

BACKOFF_CAP = 30  # the longest wait between attempts, in multiples of --backoff
CALIBRATION_TRIES = 3  # look-ups of a known activity that did not find it, before giving up


@dataclass(slots=True)
class Job:
    """A row for a worker: the request, and what the results file said of it before."""

    activity: Activity
    previous: Status | None = None
    reconcile_first: bool = False  # an earlier run may have created it
    window: SendWindow | None = None  # when an earlier run may have sent it


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


class _Retry(Exception):
    """An attempt whose answer says: back off and try again."""


class Stopped(Exception):
    """The run is stopping; no further request for this row."""


class LookupFailed(Exception):
    """A look-up got no usable answer: refused by the API, or no answer at all."""

    def __init__(self, reason: str, *, answered: bool = True) -> None:
        super().__init__(reason)
        self.answered = answered  # False: transport failures until the attempts were spent


class NotYetTrusted(LookupFailed):
    """Look-ups are not calibrated yet: no row of this run is known to be created."""


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(slots=True)
class _Flight:
    """What this run knows of one row while delivering it."""

    job: Job
    attempts: int = 0
    last: Classified | None = None
    marked: bool = False  # this run wrote an ``unknown`` line for the row
    uncertain: bool = False  # an attempt (this run or earlier) may have created it
    first_sent: datetime | None = None
    last_sent: datetime | None = None
    status: Status | None = None  # recorded by this run
    counted: bool = False  # in the tally

    def window(self, timeout: float) -> SendWindow | None:
        if self.first_sent is None or self.last_sent is None:
            return self.job.window
        return SendWindow.around(self.first_sent, self.last_sent, timeout).joined(
            self.job.window)


class Courier:
    """Delivers rows for the workers of one run; all of them share it."""

    def __init__(self, settings: DeliverySettings, limit: RateLimit, client: LeadSquaredClient,
                 results: ResultsLog | None, stopping: asyncio.Event,
                 stop: Callable[[BulkpostError], None], history: History | None = None,
                 reading: Reading | None = None) -> None:
        self.settings = settings
        self.tally = Tally()
        self.on_wire: set[asyncio.Task[Any]] = set()
        self._limit = limit
        self._client = client
        self._results = results  # None: look-ups only (``bulkpost check``)
        self._history = history  # --history: keys claimed, posted and released there too
        self._stopping = stopping
        self._stop = stop
        self._locks = KeyedLocks()
        self._rate_limited_since: dict[int, float] = {}  # id(limit): since when, unbroken
        # How the account answers look-ups: learned from a known activity (calibration).
        self.reading = reading or Reading()
        self.distrust = ""  # why look-ups cannot be trusted on this account ("": they can)
        self.kinds: dict[int, dict[str, str]] = {}  # event → SchemaName → kind (preflight)
        self.on_learned: Callable[[Reading], None] | None = None  # saves what was learned
        self.created: list[tuple[Activity, str]] = []  # this run's first clear creates
        # While the first rows go (--verify-first), a row whose look-up must wait for the
        # calibration is set aside here, to be looked up after it, instead of left unknown.
        self.deferring = False
        self.deferred: list[Job] = []
        self._sample: tuple[Activity, str, SendWindow | None] | None = None
        self._calibrating = asyncio.Lock()
        self._learning = asyncio.Lock()  # one Offset probe at a time
        self._calibration_misses = 0
        self._calibration_failure = ""  # why the last calibration did not succeed

    @property
    def _log(self) -> ResultsLog:
        assert self._results is not None, "this courier only makes look-ups"
        return self._results

    def _retrying(self, exception: type[Exception], *,
                  after_first: bool = False) -> AsyncRetrying:
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
                await self._backoff(first_wait(state))

        skipped = 1 if after_first else 0
        return AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts - skipped),
            wait=wait_exponential_jitter(multiplier=backoff * 2**skipped, max=cap, jitter=backoff),
            retry=retry_if_exception_type(exception),
            before=sleep_first if after_first else before_nothing,
            sleep=self._backoff,
            reraise=True,
        )

    async def _backoff(self, seconds: float) -> None:
        """Sleep between attempts, but wake at once when the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def deliver(self, job: Job) -> Status:
        """Deliver one row and record its outcome; return the row's status now."""
        async with self._locks.hold(timeless_hash(job.activity.body)):
            status = await self._deliver(job)
        if status is not None:
            self.tally.statuses[status] += 1
        return status or Status.UNKNOWN

    async def _deliver(self, job: Job, flight: _Flight | None = None) -> Status | None:
        """Attempts of one row, on its own; ``flight``: what a bulk call left of it.
        None: set aside to be looked up once the look-ups are calibrated."""
        flight = flight or _Flight(job, uncertain=job.reconcile_first)
        try:
            try:
                found = await self._attempt(flight)
            except _Retry:
                if self.settings.max_attempts <= 1:
                    raise
                async for attempt in self._retrying(_Retry, after_first=True):
                    with attempt:
                        found = await self._attempt(flight)
            if found is not None:
                return self._record(flight, Status.POSTED, activity_id=found,
                                    error_type="reconciled", error="")
        except _Retry:
            return self._record(flight, Status.FAILED)
        except LookupFailed as exc:
            if isinstance(exc, NotYetTrusted) and self.deferring:
                # Its unknown line is on disk; it comes back, looked up first, once the
                # look-ups are calibrated.
                self.deferred.append(Job(job.activity, Status.UNKNOWN, reconcile_first=True,
                                         window=flight.window(self.settings.timeout)))
                return None
            return self._record(flight, Status.UNKNOWN, error_type="unverified",
                                error=f"may have been created; not sent again, since the "
                                      f"look-up could not tell: {exc}. Run again to look it "
                                      "up again (or --resend-unknown if you know it was not "
                                      "created)")
        except Stopped:
            return self._settle_interrupted(flight)
        except asyncio.CancelledError:
            self._settle_interrupted(flight, cancelled=True)
            raise
        last = flight.last
        assert last is not None
        status = Status.POSTED if last.verdict is Verdict.POSTED else (
            Status.REJECTED if last.verdict is Verdict.REJECTED else Status.FAILED)
        outcome = self._record(flight, status)
        if last.verdict is Verdict.FATAL:
            self._stop(AbortRun(last.error))
        return outcome

    async def _attempt(self, flight: _Flight) -> str | None:
        """One attempt: look the row up first if it may exist (return the Id found), else
        send it; raise _Retry to try again."""
        if flight.uncertain:
            found = await self._reconcile(flight.job.activity,
                                          flight.window(self.settings.timeout))
            if found is not None:
                return found
            flight.uncertain = False  # not created: safe to send
        await self._send(flight)
        return None

    async def _send(self, flight: _Flight) -> None:
        """One attempt: mark in flight, post, classify; raise _Retry to try again."""
        item = flight.job.activity
        if flight.attempts:
            self.tally.retries += 1
        flight.attempts += 1

        async def mark_in_flight() -> None:
            # After the rate-limit slot, right before sending: a crash leaves unknown only
            # the rows that may really be on the wire.
            if self._history is not None:
                self._history.sending(item)  # committed with the mark
            self._log.record(RowOutcome(item.row, item.key, Status.UNKNOWN,
                                        error=IN_FLIGHT_NOTE, attempts=flight.attempts,
                                        content_hash=item.content_hash))
            # Its line is recorded: stopped from here on, even while waiting for the fsync,
            # the row must get a line saying what became of it.
            flight.marked = True
            now = datetime.now(UTC)
            flight.first_sent = flight.first_sent or now
            flight.last_sent = now
            await self._log.sync()

        answer, _ = await self._call(functools.partial(self._post, item.body),
                                     before_sending=mark_in_flight)
        flight.last = answer
        if answer.verdict is Verdict.RETRY:
            flight.uncertain = flight.uncertain or answer.uncertain
            log.debug("retrying", row=item.row, error=answer.error, attempt=flight.attempts,
                      uncertain=answer.uncertain)
            raise _Retry(answer.error)

    async def _post(self, body: bytes) -> tuple[Classified, Any]:
        return await self._client.post_activity(body), None

    async def _call(self, call: Callable[[], Awaitable[tuple[Classified, Any]]], *,
                    before_sending: Callable[[], Awaitable[None]] | None = None,
                    limit: RateLimit | None = None,
                    settle_clock: bool = True) -> tuple[Classified, Any]:
        """Wait for a slot, make the call, and sit out rate limiting until answered.

        ``before_sending`` runs once the slot is ours; a call that has one is a create,
        whose task counts as on the wire until the answer is in.
        """
        task = asyncio.current_task()
        assert task is not None
        limit = limit or self._limit
        while True:
            if self._stopping.is_set():
                raise Stopped
            slot = await limit.reserve()
            try:
                if self._stopping.is_set():
                    raise Stopped
                if before_sending is not None:
                    await before_sending()
                    if self._stopping.is_set():
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
                    self._rate_limited_since.pop(id(limit), None)  # this window is open
                return answer, document
            self._note_rate_limited(answer, limit)

    def _note_rate_limited(self, answer: Classified, limit: RateLimit) -> None:
        """Pause the limit's callers; stop the run when it has lasted too long."""
        self.tally.rate_limited += 1
        now = asyncio.get_running_loop().time()
        since = self._rate_limited_since.setdefault(id(limit), now)
        if now - since > self.settings.max_rate_limited:
            self._stop(AbortRun(
                f"rate limited for {now - since:.0f} s without a success: "
                "the daily quota may be spent, or another client uses the whole allowance; "
                "run the same command later to resume"))
            raise Stopped
        if limit.paused_for() <= 0:
            said = {} if answer.retry_after is None else {"retry_after": answer.retry_after}
            log.warning("rate limited by the server: pausing all workers", **said,
                        error=answer.error, bulk=limit is not self._limit)
        limit.pause(answer.retry_after)

    # -- reconciliation --------------------------------------------------------------------
    async def lookup(self, call: Callable[[], Awaitable[tuple[Classified, Any]]]) -> Any:
        """A look-up answered, with retries; raise LookupFailed when it cannot be had."""
        try:
            async for attempt in self._retrying(_Retry):
                with attempt:
                    answer, document = await self._call(call)
                    if answer.verdict is Verdict.OK:
                        return document
                    if answer.verdict is Verdict.FATAL:
                        self._stop(AbortRun(answer.error))
                        raise Stopped
                    if answer.verdict is Verdict.RETRY:
                        raise _Retry(answer.error)
                    raise LookupFailed(f"{answer.error_type}: {answer.error}")
        except _Retry as exc:
            raise LookupFailed(str(exc), answered=False) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _lead_of(self, row: Fingerprint) -> str:
        if row.lead_id is not None:
            return row.lead_id
        assert row.email is not None
        leads = await self.lookup(lambda: self._client.lead_by_email(row.email or ""))
        if not isinstance(leads, list) or not leads or not isinstance(leads[0], dict):
            raise LookupFailed(f"no lead has the e-mail address {row.email!r} (yet)")
        lead_id = str(leads[0].get("ProspectID") or leads[0].get("ProspectId") or "")
        if not lead_id:
            raise LookupFailed("the lead found by e-mail has no ProspectID")
        return lead_id

    async def _page(self, lead_id: str, event: int, offset: int, count: int = PAGE_SIZE, *,
                    learning: bool = False) -> Page:
        """One page of "Get Activities of a Lead"; LookupFailed when not understood.
        ``learning``: read to learn how the account answers (counted apart)."""
        if learning:
            self.tally.calibration_calls += 1
        else:
            self.tally.lookup_calls += 1
        document = await self.lookup(functools.partial(
            self._client.retrieve_activities, lead_id, event, offset, count))
        page = parse_activities(document)
        if page is None:
            shape = (f"an object with {', '.join(sorted(map(str, document))[:8])}"
                     if isinstance(document, dict) else type(document).__name__)
            raise LookupFailed(f"the look-up's answer is not understood ({shape})")
        return page

    async def _reconcile(self, item: Activity, window: SendWindow | None) -> str | None:
        """The Id of this row's activity if it exists already, else None.

        "Not found" is concluded only from a complete scan by a calibrated reading; else
        LookupFailed, and the row stays ``unknown``.
        """
        self.tally.reconciled += 1
        row = fingerprint(item.body)
        lead_id = await self._lead_of(row)
        await self._trust_lookups()
        held: set[str] = set()  # activities the history's keys with this content hold
        if self._history is not None:  # read off the event loop: SQLite may wait on a commit
            held = await asyncio.to_thread(self._history.claimed_ids, item.content_hash)

        def claimed(activity_id: str) -> bool:  # held by a posted row: never another's
            return activity_id in held or self._log.holds(activity_id)

        kinds = self.kinds.get(row.event, {})
        scan = Scan(self.reading.offset)
        first: list[str] = []
        while True:
            if scan.needs_rule:
                rule = await self._offset_rule(lead_id, row.event, first)
                if rule is None:
                    raise LookupFailed("the lead has more than one page of these activities "
                                       "and how the look-up's Offset counts is not known yet")
                scan.rule, scan.needs_rule = rule, False
            page = await self._page(lead_id, row.event, scan.next_offset())
            if scan.pages == 0:
                first = [f.activity_id for f in page.items]
            found = pick(row, page.items, claimed, window, kinds, self.reading)
            if found is not None:
                self.tally.found_posted += 1
                log.info("reconciled: already created", row=item.row, activity_id=found)
                return found
            scan.add(page)
            if scan.incomplete:
                raise LookupFailed(scan.incomplete)
            if scan.complete:
                return None

    # -- calibration -----------------------------------------------------------------------
    def offer_sample(self, item: Activity, activity_id: str,
                     window: SendWindow | None = None) -> None:
        """A row known to be created as ``activity_id``: what calibration looks up."""
        if not self.reading.calibrated and self._sample is None and activity_id:
            self._sample = (item, activity_id, window)

    async def _trust_lookups(self) -> None:
        """Return once look-ups may be trusted; else LookupFailed with the reason."""
        if not self.reading.calibrated:
            await self.calibrate()
        if self.distrust:
            raise LookupFailed(f"look-ups cannot be trusted on this account: {self.distrust}")
        if not self.reading.calibrated:
            raise NotYetTrusted("look-ups are not calibrated yet (" + (
                self._calibration_failure or "no activity of this run is known to be created")
                + "), so \"not found\" cannot be trusted")

    async def calibrate(self) -> None:
        """Look up a row known to be created and learn how the account answers; set
        ``distrust`` when the answer contradicts the row. A look-up that fails, or does not
        find the activity yet, is tried again by the next caller (a few times)."""
        async with self._calibrating:
            if self.reading.calibrated or self.distrust or self._sample is None:
                return
            item, activity_id, window = self._sample
            try:
                await self._calibrate(item, activity_id, window)
            except LookupFailed as exc:
                self._calibration_misses += 1
                self._calibration_failure = str(exc)
                log.warning("look-ups not calibrated yet", row=item.row, reason=str(exc))
                if self._calibration_misses >= CALIBRATION_TRIES:
                    self.distrust = f"{CALIBRATION_TRIES} look-ups of row {item.row} failed: {exc}"
            if self.distrust:
                log.error("look-ups distrusted: rows whose outcome is uncertain stay unknown",
                          reason=self.distrust)

    async def settle_offset(self) -> None:
        """Learn how Offset counts, if still unknown, on the lead of this run's first
        created row when its first page is full: called while the first rows are checked,
        when nothing else is being sent (pages of a busy lead keep shifting). For a reading
        an earlier run saved: one calibrated in this run read its lead's first page already."""
        if (self.reading.offset is not None or self.distrust or not self.created
                or self._sample is not None):
            return
        item = self.created[0][0]
        row = fingerprint(item.body)
        try:
            lead_id = await self._lead_of(row)
            first = await self._page(lead_id, row.event, 0, learning=True)
            if len(first.items) >= PAGE_SIZE:
                await self._offset_rule(lead_id, row.event,
                                        [f.activity_id for f in first.items])
        except LookupFailed as exc:
            log.warning("how the look-up's Offset counts is not learned yet", reason=str(exc))

    async def _calibrate(self, item: Activity, activity_id: str,
                         window: SendWindow | None) -> None:
        row = fingerprint(item.body)
        lead_id = await self._lead_of(row)
        reading = self.reading
        first = await self._page(lead_id, row.event, 0, learning=True)
        ids = [f.activity_id for f in first.items]
        rule = reading.offset
        if not first.items:
            rule = "pages1"  # the lead holds the row's activity: Offset 0 names no page
        elif rule is None and len(first.items) >= PAGE_SIZE:
            # A full first page: learn how Offset counts now, while the first rows are
            # checked and nothing else is sent (a busy lead keeps shifting its pages).
            rule = await self._offset_rule(lead_id, row.event, ids)
        found = next((f for f in first.items if f.activity_id == activity_id), None)
        if found is None and rule is not None:
            scan = Scan(rule)
            if first.items:
                scan.add(first)
            while found is None and not (scan.complete or scan.incomplete):
                page = await self._page(lead_id, row.event, scan.next_offset(), learning=True)
                found = next((f for f in page.items if f.activity_id == activity_id), None)
                scan.add(page)
        if found is None:
            raise LookupFailed(f"activity {activity_id}, created from row {item.row}, is not "
                               "in the look-up's answer (yet)")
        learned = calibrate(row, activity_id, found, window, self.kinds.get(row.event, {}),
                            reading)
        if learned.reading is None:
            self.distrust = (f"row {item.row} was created as activity {activity_id}, but "
                             f"{learned.problem}")
            return
        count = first.record_count
        counted = reading.record_count or (
            "total" if count is not None and count > len(first.items) else None)
        self._learned(dataclasses.replace(learned.reading, offset=rule, record_count=counted))

    async def _offset_rule(self, lead_id: str, event: int, first: list[str]) -> str | None:
        """The Offset rule: learned by one look-up at a time, and once learned, known to
        every look-up that was waiting for it."""
        async with self._learning:
            if self.reading.offset is not None:
                return self.reading.offset
            return await self._learn_offset(lead_id, event, first)

    async def _learn_offset(self, lead_id: str, event: int, first: list[str]) -> str | None:
        """How ``Offset`` counts, from a lead whose first page is full: the pages at
        ``Offset 1`` and, if need be, ``Offset 2`` next to the first (see probe_rule), then
        the first page read again: the probe counts only if few activities arrived
        meanwhile (see steady); else it is tried again after a backoff, five times in all."""
        for attempt in range(5):
            if attempt:
                await self._backoff(self.settings.backoff * attempt)
            one = [f.activity_id for f in
                   (await self._page(lead_id, event, 1, learning=True)).items]
            rule = probe_rule(first, one, None)
            if rule is None and len(first) >= PAGE_SIZE // 2:
                two = [f.activity_id for f in
                       (await self._page(lead_id, event, 2, learning=True)).items]
                rule = probe_rule(first, one, two)
            again = [f.activity_id for f in
                     (await self._page(lead_id, event, 0, learning=True)).items]
            if steady(first, again):
                break
            first, rule = again, None
        if rule is not None and rule != self.reading.offset:
            self._learned(dataclasses.replace(self.reading, offset=rule))
        return rule

    def _learned(self, reading: Reading) -> None:
        if reading == self.reading:
            return
        self.reading = reading
        log.info("look-ups calibrated" if reading.calibrated else "look-up rule learned",
                 reading=reading.describe())
        if self.on_learned is not None:
            self.on_learned(reading)

    def _left_on_wire(self, cancelled: bool) -> bool:
        """Whether this task was cancelled with its request on the wire (and forget it)."""
        task = asyncio.current_task()
        on_wire = cancelled and task in self.on_wire
        self.on_wire.discard(task)
        return on_wire

    # -- bulk ------------------------------------------------------------------------------
    async def deliver_batch(self, jobs: list[Job], limit: RateLimit) -> list[Status]:
        """Deliver rows in bulk calls under ``limit``; every row must name its lead the
        same way (all by Id, or all by e-mail). Return the rows' statuses now.

        The rows' content locks are held throughout (taken in one order, so two batches
        cannot deadlock), as for single rows: no other worker can claim an activity a bulk
        call created while its rows are still being settled.
        """
        flights = [_Flight(job) for job in jobs]
        try:
            async with contextlib.AsyncExitStack() as stack:
                for content in sorted({timeless_hash(job.activity.body) for job in jobs}):
                    await stack.enter_async_context(self._locks.hold(content))
                await self._deliver_batch(flights, limit)
        finally:
            for flight in flights:  # once each, however the batch ended
                if flight.status is not None and not flight.counted:
                    self.tally.statuses[flight.status] += 1
                    flight.counted = True
        return [flight.status or Status.UNKNOWN for flight in flights]

    async def _deliver_batch(self, flights: list[_Flight], limit: RateLimit) -> None:
        alone: list[_Flight] = []  # rows to settle one at a time: maybe created, or refused
        try:
            pending = flights
            try:
                async for attempt in self._retrying(_Retry):
                    with attempt:
                        pending = await self._bulk_attempt(pending, limit, alone)
                        if pending:
                            raise _Retry(pending[0].last.error if pending[0].last else "")
            except _Retry:
                for flight in pending:  # answered "not created" every time: safe, failed
                    self._record(flight, Status.FAILED)
            for flight in alone:
                flight.status = await self._deliver(flight.job, flight) or Status.UNKNOWN
        except Stopped:
            for flight in flights:
                if flight.status is None:
                    self._settle_interrupted(flight, on_wire=False)
        except asyncio.CancelledError:
            on_wire = self._left_on_wire(cancelled=True)
            for flight in flights:
                if flight.status is None:
                    self._settle_interrupted(flight, cancelled=True, on_wire=on_wire)
            raise

    async def _bulk_attempt(self, flights: list[_Flight], limit: RateLimit,
                            alone: list[_Flight]) -> list[_Flight]:
        """One bulk attempt for these rows; record what it settled, put rows that may have
        been created (or that must go on their own) in ``alone``, and return the rows to
        send again in bulk: those the answer said were not created. Items the answer says
        were rate limited are sent again at once, after the pause, as a rate-limited call
        is: not an attempt."""
        for flight in flights:
            if flight.attempts:
                self.tally.retries += 1
            flight.attempts += 1
        again: list[_Flight] = []
        while flights:
            answer, outcomes = await self._bulk_call(flights, limit)
            if answer.verdict is not Verdict.OK:
                self._rate_limited_since.pop(id(limit), None)  # answered: not rate limited
                again += self._bulk_refused(answer, flights, alone)
                break
            limited: list[_Flight] = []
            for flight, outcome in zip(flights, outcomes, strict=True):
                flight.last = outcome or answer
                if outcome is None:
                    flight.uncertain = True  # not accounted for: may have been created
                    alone.append(flight)
                elif outcome.verdict is Verdict.POSTED:
                    self._record(flight, Status.POSTED)
                elif outcome.verdict is Verdict.REJECTED:
                    self._record(flight, Status.REJECTED)
                elif outcome.verdict is Verdict.RATE_LIMITED:
                    limited.append(flight)
                else:  # the item was not created, and no reason given
                    again.append(flight)
            if len(limited) < len(flights):
                self._rate_limited_since.pop(id(limit), None)  # some items went through
            if limited:
                self._note_rate_limited(limited[0].last or answer, limit)
            flights = limited
        return again

    async def _bulk_call(self, flights: list[_Flight],
                         limit: RateLimit) -> tuple[Classified, list[Classified | None]]:
        """The bulk call itself: its rows marked in flight (one group commit) once the
        slot is ours, rate-limited answers sat out."""
        items = [flight.job.activity for flight in flights]

        async def mark_in_flight() -> None:
            now = datetime.now(UTC)
            for flight, item in zip(flights, items, strict=True):
                if self._history is not None:
                    self._history.sending(item)  # committed with the marks
                self._log.record(RowOutcome(item.row, item.key, Status.UNKNOWN,
                                            error=IN_FLIGHT_NOTE, attempts=flight.attempts,
                                            content_hash=item.content_hash))
                flight.marked = True
                flight.first_sent = flight.first_sent or now
                flight.last_sent = now
            await self._log.sync()

        answer, outcomes = await self._call(
            functools.partial(self._client.post_bulk, bulk_body(items), len(items),
                              by_email(items[0])),
            before_sending=mark_in_flight, limit=limit, settle_clock=False)
        return answer, outcomes

    def _bulk_refused(self, answer: Classified, flights: list[_Flight],
                      alone: list[_Flight]) -> list[_Flight]:
        """A bulk call not answered item by item; return the rows to send again in bulk."""
        for flight in flights:
            flight.last = answer
        if answer.verdict is Verdict.FATAL:
            for flight in flights:
                self._record(flight, Status.FAILED)
            self._stop(AbortRun(answer.error))
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

    # -- recording -------------------------------------------------------------------------
    def _record(self, flight: _Flight, status: Status, *, activity_id: str = "",
                error_type: str | None = None, error: str | None = None) -> Status:
        """Record the outcome; what is not given comes from the last answer."""
        item, last = flight.job.activity, flight.last
        if error_type is None:
            error_type = last.error_type if last else ""
        if error is None:
            error = last.error if last else ""
        if not activity_id and last is not None:
            activity_id = last.activity_id
        # Server text goes into the file: make sure it cannot carry the keys.
        error = self._client.credentials.scrub(error)
        self._log.record(RowOutcome(
            item.row, item.key, status, activity_id=activity_id,
            http_status=last.http_status if last else None, error_type=error_type,
            error=error, attempts=flight.attempts, content_hash=item.content_hash))
        if status is Status.POSTED and error_type != "reconciled" and activity_id:
            # Created, as the answer says: a row to calibrate look-ups and verify with.
            self.offer_sample(item, activity_id, flight.window(self.settings.timeout))
            if len(self.created) < 64:
                self.created.append((item, activity_id))
        if self._history is not None:
            if status is Status.POSTED:
                self._history.posted(item, activity_id)
            elif status is Status.REJECTED:
                self._history.released(item)
        flight.status = status
        return status

    def _settle_interrupted(self, flight: _Flight, *, cancelled: bool = False,
                            on_wire: bool | None = None) -> Status | None:
        """The run stopped while this row was being delivered: say what we know of it.

        ``unknown`` if it may be on the wire; ``failed`` (recorded, error_type ``stopped``)
        if it was sent this run and every answer said "not created"; its earlier outcome if
        an earlier run recorded one; else None: never sent, nothing recorded, the row is
        ``pending`` in the summary as in the results file and the report."""
        if on_wire is None:
            on_wire = self._left_on_wire(cancelled)
        status: Status | None
        if on_wire or flight.uncertain:
            # It may have been created and nobody has checked: unknown, for the next run
            # to reconcile. A row resumed without a new mark keeps its earlier line.
            status = Status.UNKNOWN if flight.marked else (flight.job.previous or Status.UNKNOWN)
        elif flight.marked:
            last = flight.last
            reason = f"stopped while retrying: {last.error}" if last else "stopped before sending"
            status = self._record(flight, Status.FAILED, error_type="stopped", error=reason)
        else:
            status = flight.job.previous
        if cancelled and status is not None:
            self.tally.statuses[status] += 1
            flight.counted = True
        flight.status = status
        return status
