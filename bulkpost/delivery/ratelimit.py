"""The run's one rate limit: never more than N calls in any T-second window.

``aiolimiter.AsyncLimiter(N, T)`` as-is lets N calls start at once and then one every
T/N seconds, which puts 2N-1 calls in the first window. Here two stages are combined:

1. a sliding-window log of the last N call starts: call k starts no earlier than
   ``T + margin`` after call k-N started. This alone is the guarantee: any N+1
   consecutive starts span at least ``T + margin``, at the start, in steady state and
   after any idle time, with ``margin`` seconds (default 2% of T) to absorb latency jitter
   between us and the server. A late wake-up delays only the call N places later, so
   lateness costs a fraction of a millisecond per window, not per call;
2. ``AsyncLimiter(1, 0.98 * (T + margin) / N)`` in front of it spreads the calls evenly
   instead of letting N leave at once: the server sees a steady stream, and the pool
   needs no more workers than latency times rate.

Sustained throughput is ``N / (T + margin)``: 98% of the allowance by default.

N is not fixed: it is the share the limit's :class:`~bulkpost.core.allowance.Allowance` gives,
which each answer teaches (:meth:`RateLimit.learn`): the plan's limit when the rate was not
given, and less while another client holds part of the window. Before each grant the log
and the smoothing take the share in force; a smaller share keeps the latest starts, so
the next call waits for the one N places back under the new N.

While the allowance probes above its ceiling (the share is one more than what the account
has proven), the smoothing lets calls out twice as fast: the log alone then holds the window
to that one call more, and each call the account counts lets the next one out at once (a
caller waiting on the log is woken when the share grows), so the climb goes as fast as the
answers come instead of one call per window.

A share (``--share``, :mod:`bulkpost.core.share`) takes a fraction of what the allowance gives:
the limit asks its ``fraction`` callable (the loop's time in, a fraction out) before each
grant, and lets out ``max(1, floor(N * fraction))`` calls per window. Below a whole share it
never probes above the ceiling (:attr:`Allowance.held`): it is not using the whole ceiling.
A fraction that changes (a schedule's boundary) is followed by the next grant, and a caller
waiting on the log looks again at least once a window, so it takes effect within a window.

On top sits a pause gate: every caller waits until a pause ends (a ``Retry-After``, or a
whole window when items of a bulk answer were rate limited), then calls resume. The limit
also keeps its storm clock: how long it has been rate limited without an answer of any other
kind (:meth:`RateLimit.rate_limited`, :meth:`RateLimit.answered`).

A call's start is when it leaves, not when its slot was granted: between the two, a create
first makes its claim durable (an fsync that a busy disk can stretch to tens of
milliseconds). :meth:`RateLimit.reserve` grants a :class:`Slot` whose time the caller moves
to the moment it sends (:meth:`Slot.sending`), and a slot still being prepared holds back the
call N places later until it has left. Otherwise a slow claim and a quick one N places later
would reach the server closer together than the window.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from bulkpost.core.allowance import Allowance, Lesson, RateSpec, Sent
from bulkpost.core.share import share_of
from bulkpost.errors import UsageError

DEFAULT_MARGIN = 0.02  # of the window


class Slot(Sent):
    """One call's place in the log: when it started (or was granted, until it starts), and
    what its answer was (:class:`~bulkpost.core.allowance.Sent`)."""

    __slots__ = ("_limit", "left")

    def __init__(self, limit: RateLimit, at: float) -> None:
        super().__init__(at)
        self._limit = limit
        self.left = asyncio.Event()  # set once the call is on its way, or will never be

    def sending(self) -> None:
        """The call leaves now: its start moves to now (never earlier than it was)."""
        if not self.left.is_set():
            self._limit._restamp(self, asyncio.get_running_loop().time())
            self.left.set()

    def release(self) -> None:
        """Done with the slot: a slot never sent keeps the time it was granted."""
        if not self.left.is_set():
            self.answer = Sent.NEVER_SENT
        self.left.set()


class RateLimit:
    """Lets calls start so that no T-second window ever holds more than N of them.

    N is the share its :class:`~bulkpost.core.allowance.Allowance` gives at the moment (the
    given rate, or what the answers taught): :meth:`learn` hands it each answer, and the
    log and the smoothing follow the share before each grant. :meth:`acquire` blocks until
    the caller may start one call, and records the start; :meth:`reserve` does the same for
    a call with work to do before it leaves. :meth:`pause` stops every caller until the
    pause ends. Callers pass one at a time in FIFO order. Uses the running loop's clock only
    (``loop.time`` and timers), so tests drive it with a virtual clock.
    """

    __slots__ = (
        "_fraction",
        "_gate",
        "_grown",
        "_limited_since",
        "_limiter",
        "_resume_at",
        "_starts",
        "allowance",
        "margin",
        "spec",
    )

    def __init__(self, spec: RateSpec, margin: float | None = None,
                 allowance: Allowance | None = None,
                 fraction: Callable[[float], float] | None = None) -> None:
        if margin is not None and margin < 0:
            raise UsageError("the rate margin cannot be negative")
        self.spec = spec  # the share in force: N calls per T
        self.margin = DEFAULT_MARGIN * spec.period if margin is None else margin
        self.allowance = allowance or Allowance(spec, jitter=self.margin)
        self._fraction = fraction  # the share of the limit taken at a moment (None: all)
        # Slightly faster than the log allows, so that the log alone sets the pace and a
        # late wake-up in the smoothing stage is made up for.
        self._limiter = AsyncLimiter(1, 0.98 * self.spacing)
        # Slots in the order granted, their times never decreasing (see _restamp).
        self._starts: collections.deque[Slot] = collections.deque(maxlen=spec.calls)
        self._gate = asyncio.Lock()
        self._grown = asyncio.Event()  # the share grew: a caller waiting on the log may go
        self._resume_at = 0.0
        self._limited_since: float | None = None  # rate limited since, without a break

    @property
    def window(self) -> float:
        """The window the log enforces: T plus the margin."""
        return self.spec.period + self.margin

    def fraction(self, now: float) -> float:
        """The fraction of the limit the run takes at ``now`` (1: all of it)."""
        return 1.0 if self._fraction is None else self._fraction(now)

    @property
    def spacing(self) -> float:
        """Average seconds between two call starts at full speed."""
        return self.window / self.spec.calls

    @property
    def sustained_per_second(self) -> float:
        return 1 / self.spacing

    def learn(self, slot: Slot, limited: bool | None,
              said: RateSpec | None = None) -> Lesson | None:
        """``slot``'s call was answered: counted (``limited`` False), rate limited (True),
        or not answered at all (None). Returns what a rate-limited answer changed."""
        now = asyncio.get_running_loop().time()
        lesson = self.allowance.answered(slot, limited, now, said)
        self._follow(now)
        return lesson

    def _follow(self, now: float) -> None:
        """Size the log and the smoothing to the allowance's share at ``now``, and to the
        fraction of it the run takes."""
        fraction = self.fraction(now)
        self.allowance.held = fraction < 1
        calls = share_of(self.allowance.share_at(now), fraction)
        pace = 2 * calls if self.allowance.probing else calls
        if calls == self.spec.calls and self._limiter.time_period == 0.98 * self.window / pace:
            return
        if calls > self.spec.calls:
            self._grown.set()
        self.spec = RateSpec(calls, self.spec.period)
        self._limiter = AsyncLimiter(1, 0.98 * self.window / pace)
        # The latest N starts stay. A slot granted and not sent yet starts no earlier than
        # the latest start: it goes last, and stays however small the share, so that it
        # counts when it leaves (the log is longer than N until it has).
        slots = list(self._starts)
        waiting = [slot for slot in slots if not slot.left.is_set()]
        sent = [slot for slot in slots if slot.left.is_set()]
        for slot in waiting:
            slot.at = max(slot.at, sent[-1].at if sent else slot.at)
        kept = sent[len(sent) - max(0, min(len(sent), calls - len(waiting))):] + waiting
        self._starts = collections.deque(kept, maxlen=max(calls, len(kept)))

    def pause(self, seconds: float | None = None) -> None:
        """Hold every caller for ``seconds`` (default: one whole window plus the margin)."""
        loop = asyncio.get_running_loop()
        delay = self.window if seconds is None else seconds
        self._resume_at = max(self._resume_at, loop.time() + delay)

    def rate_limited(self) -> float:
        """A "rate limited" answer came: how long the limit has been rate limited without
        an answer of any other kind (0 for the first of a storm)."""
        now = asyncio.get_running_loop().time()
        if self._limited_since is None:
            self._limited_since = now
        return now - self._limited_since

    def answered(self) -> None:
        """An answer other than "rate limited" came: the storm, if any, is over."""
        self._limited_since = None

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._resume_at - asyncio.get_running_loop().time())

    def _log_wait(self) -> float:
        if len(self._starts) < self.spec.calls:
            return 0.0
        nth = self._starts[-self.spec.calls]  # the start N places back
        return nth.at + self.window - asyncio.get_running_loop().time()

    def _restamp(self, slot: Slot, now: float) -> None:
        """Move ``slot`` to ``now`` and every later-granted slot to no earlier than it, so
        the log stays in time order and ``_starts[0]`` stays the earliest of the last N."""
        if now <= slot.at:
            return
        later: list[Slot] = []
        for other in reversed(self._starts):  # the slot is recent: few slots after it
            if other is slot:
                break
            later.append(other)
        else:
            # A smaller share dropped it from the log before it left: it leaves now, the
            # latest start of all, so it goes back in at the end (the oldest drops out).
            slot.at = now
            self._starts.append(slot)
            return
        slot.at = now
        for other in later:
            other.at = max(other.at, now)

    async def reserve(self) -> Slot:
        """Wait for the pause to end and for a slot; the caller calls :meth:`Slot.sending`
        as the call leaves and :meth:`Slot.release` when done (``finally``)."""
        loop = asyncio.get_running_loop()
        async with self._gate:
            self._follow(loop.time())
            await self._limiter.acquire()
            # A loop, not an Event: we wait for a moment in time, and a pause may move it.
            while True:
                self._follow(loop.time())
                starts, calls = self._starts, self.spec.calls
                nth = starts[-calls] if len(starts) >= calls else None
                if nth is not None and not nth.left.is_set():
                    await nth.left.wait()  # its time is not known until it leaves
                    continue
                delay = max(self.paused_for(), self._log_wait())
                if delay <= 0:
                    break
                self._grown.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._grown.wait(), delay)
            now = loop.time()
            starts = self._starts
            # Starts a whole window old constrain nothing: dropped, the log stays small
            # whatever N is (a lifted limit of a million calls a second included).
            while starts and starts[0].at + self.window <= now and starts[0].left.is_set():
                starts.popleft()
            slot = Slot(self, now)
            starts.append(slot)
            self.allowance.sent(slot)
            return slot

    async def acquire(self) -> None:
        """Wait for the pause to end and for this call's slot; the call starts now."""
        (await self.reserve()).sending()
