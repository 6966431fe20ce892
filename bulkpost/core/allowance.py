"""What the answers prove of the account's rate limit, and how much of it this run takes.

LeadSquared plans allow 2 to 25 calls per 5 s, and every docs page prints "25 in 5
second(s)" as the rate-limit text, so a 429's text is a hint to check against evidence,
never a fact (:func:`said_limit` reads it alike in every form the answer comes in: a 429, a
403 or a 200, with or without ``ExceptionType``, JSON or plain text). The evidence is what
our own calls met, over the limit's period T (plans differ in N, not in T):

- a call answered with anything but "rate limited" was counted by the server's window.
  The most of ours answered within any T seconds, :attr:`Allowance.proven`, is a number of
  calls the account allows, as our clock puts calls in windows; counting only calls sent
  within T less the jitter of each other (:attr:`Allowance.surely`: they surely reached the
  server within one window) it is a lower bound that another client on the account cannot
  fake, and that latency cannot inflate;
- a "rate limited" answer says the window was full as the call arrived. It held the A
  calls of ours sent in the T seconds before (answered, or not answered yet), plus whatever
  another client sent. Alone, A is the limit.

A 429 with A >= ``surely`` is consistent with "our A calls filled the window", so the limit
may be A. A is taken for the plan's limit (the ceiling, kept for later runs) only once
something corroborates it: a second 429 with the same A, or the 429's own text naming A.
Until then, and for every 429 with A < ``surely`` (another client holds part of the
window), the run lowers only its *share*, the calls it lets out per T: to A, and at least
one less than before. After a whole T without a 429 the share climbs back toward the
ceiling by 1, 2, 4, 8… calls each half T. That recovers in a few windows when the other
client stops, and meets the window again within one or two when it has not.

Some accounts allow more than the documented maximum (a live answer read "exceeded the
limit of 72 in 5 second(s)"), no endpoint tells the plan, a plan of N and a larger plan of
which another client steadily takes all but N look the same to every answer, and a plan may
be upgraded: so the ceiling is probed, upward. A probe starts once the run has used its
whole ceiling in a window and gone on at it without a 429: for :data:`CLIMB_AFTER` periods
when the ceiling is not proven by a 429 yet (the documented maximum, or a climb that has
not met the window), for :data:`PROBE_AFTER` seconds when it is (twice as long after each
probe that met the window). While probing, the share is one more than the ceiling, and the
ceiling rises with what the account proves: a window that counted more of our calls than
the ceiling makes that count the ceiling, and the share one more again. So no window ever
holds more than one call beyond what the account has already allowed, only that one call
can be refused, and the climb goes as fast as the answers come. The probe ends at its first
429 (our calls filled the window: the ceiling holds, and is learnt when corroborated as
above). A text naming a limit above the ceiling is never believed, but it starts the next
probe early, once (:attr:`Allowance.hint`), unless the account's texts were seen naming a
limit the counted calls contradicted.

A run that takes only part of the limit (``--share`` below 100%: :attr:`Allowance.held`)
never probes: it is not using the whole ceiling, and a probe under way ends.

A rate given by the user is the ceiling, never learnt, lowered or probed; the share still
yields to another client. Everything here is pure: times come from the caller's clock.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

from bulkpost.errors import UsageError

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|secs|second|seconds|m|min)?\s*")


@dataclass(frozen=True, slots=True)
class RateSpec:
    """N calls per T seconds."""

    calls: int
    period: float

    @property
    def per_second(self) -> float:
        return self.calls / self.period

    def __str__(self) -> str:
        return f"{self.calls}/{self.period:g}s"


def parse_rate(text: str) -> RateSpec:
    """Parse ``"25/5s"``, ``"10/5"``, ``"100/1m"``; raise :class:`UsageError` if malformed."""
    match = _RATE.fullmatch(text)
    if not match:
        raise UsageError(f"rate {text!r}: expected N/Ts, for example 25/5s")
    calls, period_text, unit = match.groups()
    period = float(period_text or 1) * (60 if unit in ("m", "min") else 1)
    if int(calls) < 1 or period <= 0:
        raise UsageError(f"rate {text!r}: both N and T must be positive")
    return RateSpec(int(calls), period)


DOCUMENTED_MAXIMUM = RateSpec(25, 5.0)  # Enterprise, the highest plan (API notes)
DOCUMENTED_BULK_MAXIMUM = RateSpec(10, 5.0)  # bulk calls: 1 on every plan, or 5-10 by plan
# The rate-limit sentence, "API calls exceeded the limit of 25 in 5 second(s)": what makes an
# answer "rate limited" under any status (bulkpost.core.response), and the limit it names.
RATE_LIMIT_SENTENCE = re.compile(
    r"exceeded\s+the\s+limit\s+of\s+(\d+)\s+in\s+(\d+(?:\.\d+)?)\s*(?:sec|s\b)",
    re.IGNORECASE)
_MOST_STEPS = 20  # the climb's doubling stops here (a share of a million calls)
PROBE_AFTER = 600.0  # seconds at a learnt ceiling without a 429 before it is probed
CLIMB_AFTER = 1  # periods at a ceiling not proven by a 429 before it is probed


def said_limit(text: str) -> RateSpec | None:
    """The limit a rate-limit text names ("…exceeded the limit of 25 in 5 second(s)")."""
    match = RATE_LIMIT_SENTENCE.search(text or "")
    if match is None or int(match.group(1)) < 1:
        return None
    return RateSpec(int(match.group(1)), float(match.group(2)))


class Sent:
    """One call of ours as the allowance sees it: when it left, and what it met."""

    __slots__ = ("answer", "at")

    # Until LIMITED, the server may have counted the call in its window.
    PENDING, COUNTED, UNANSWERED, LIMITED, NEVER_SENT = range(5)

    def __init__(self, at: float) -> None:
        self.at = at
        self.answer = Sent.PENDING


@dataclass(frozen=True, slots=True)
class Lesson:
    """What one rate-limited answer changed, for the log."""

    learnt: bool  # the ceiling (the plan's limit) was learnt now; else only the share moved
    ceiling: int
    share: int
    counted: int  # our calls in the window the answer refused (A)
    said: int | None  # what the answer's text named, if it named a limit on our period


class Allowance:
    """The ceiling (the plan's limit as proven, or as given), this run's share of it, and
    the evidence: every call of ours in the last two periods."""

    __slots__ = ("_base", "_candidate", "_full_at", "_limited_at", "_lowered_at",
                 "_probe_after", "_quiet_since", "_sent", "ceiling", "held", "hint", "jitter",
                 "learning", "learnt", "learnt_held", "period", "probing", "proven", "share",
                 "surely", "texts_lie")

    def __init__(self, spec: RateSpec, *, learning: bool = False, learnt: bool = False,
                 jitter: float = 0.0,
                 probe_after: float = PROBE_AFTER) -> None:
        self.period = spec.period
        self.ceiling = spec.calls
        self.learning = learning  # whether the answers may move the ceiling
        self.learnt = learnt  # the ceiling is proven by a 429 (this run's or earlier)
        self.jitter = jitter  # how far apart our clock and the server's may put a call
        self.probing = False  # one call over the ceiling is allowed, to test it
        self.held = False  # the run takes less than its share (--share): no probe
        # The ceiling was learnt while held: its 429s may be another client's (a run that
        # shares the account expects them), so it is not kept for later runs.
        self.learnt_held = False
        self.hint: int | None = None  # a limit above the ceiling a 429's text named
        self.texts_lie = False  # a text named a limit the counted calls contradicted
        self._probe_after = probe_after
        self._quiet_since: float | None = None  # at the ceiling without a 429 since
        self._full_at: float | None = None  # when a window last held the ceiling's calls
        self.proven = 0
        self.surely = 0  # the same, counting only calls that surely met one server window
        self.share = spec.calls
        self._base = spec.calls  # the share the last 429 set, from which it climbs
        self._limited_at: float | None = None  # the share climbs back from here
        self._lowered_at: float | None = None  # when a 429 last lowered the share
        self._candidate: int | None = None  # a limit one 429 suggested, not corroborated
        self._sent: collections.deque[Sent] = collections.deque()

    def sent(self, call: Sent) -> None:
        """``call`` left at ``call.at`` (never earlier than the calls before it)."""
        horizon = call.at - 2 * self.period
        sent = self._sent
        while sent and sent[0].at < horizon:
            sent.popleft()
        sent.append(call)

    def share_at(self, now: float) -> int:
        """The calls per period this run may let out at ``now``."""
        if self._limited_at is not None:
            climbed = now - self._limited_at - self.period
            if climbed >= 0:
                steps = min(_MOST_STEPS, int(climbed / (self.period / 2)) + 1)
                self.share = min(self.ceiling, self._base + 2 ** steps - 1)
            if self.share >= self.ceiling:
                self._limited_at = None
        if self.held:
            if self.probing:  # the run took back part of its share: the probe ends
                self.probing, self._quiet_since = False, None
            return min(self.share, self.ceiling)
        if self.learning and not self.probing and self.share >= self.ceiling:
            if self._quiet_since is None:
                self._quiet_since = now
            elif now - self._quiet_since >= self._wait_to_probe() and self._full_at \
                    is not None and now - self._full_at <= self.period:
                self.probing, self.hint = True, None  # a hint starts one probe early
        return self.ceiling + 1 if self.probing else min(self.share, self.ceiling)

    def _wait_to_probe(self) -> float:
        """How long at the ceiling without a 429 before it is probed."""
        if not self.learnt or (self.hint is not None and self.hint > self.ceiling):
            return CLIMB_AFTER * self.period
        return self._probe_after

    def answered(self, call: Sent, limited: bool | None, now: float,
                 said: RateSpec | None = None) -> Lesson | None:
        """``call``'s answer: counted by the server (False), rate limited (True), or none
        at all (None: it may have been counted). A rate-limited one returns what it taught."""
        if limited is None:
            call.answer = Sent.UNANSWERED
            return None
        if not limited:
            call.answer = Sent.COUNTED
            if self.learning:
                self._prove(call)
            return None
        call.answer = Sent.LIMITED
        counted = self._counted_before(call)
        named = said.calls if said is not None and said.period == self.period else None
        self._weigh_text(named, counted)
        if self.probing:  # the probe met the window
            self.probing, self._quiet_since = False, now
            if counted >= self.ceiling:  # our calls filled it: the ceiling holds
                return self._probe_met(counted, named, now)
        lesson = self._learn_limit(counted, named, now)
        if lesson is not None:
            return lesson
        if self._lowered_at is not None and call.at < self._lowered_at:
            # It left before the share was last lowered: the same full window, no news.
            return Lesson(False, self.ceiling, self.share_at(now), counted, named)
        share = max(1, min(self.share_at(now) - 1, counted))
        self._lower(share, now)
        return Lesson(False, self.ceiling, share, counted, named)

    def _weigh_text(self, named: int | None, counted: int) -> None:
        """What a 429's text naming a limit (``named``) tells, beside the ``counted`` calls
        of ours in the window: a text that lies, or a limit above the ceiling to probe."""
        if named is not None and counted >= max(1, self.surely) and named != counted:
            self.texts_lie = True  # our calls alone filled the window, the text says else
        if named is not None and named > self.ceiling and not self.texts_lie:
            self.hint = named

    def _probe_met(self, counted: int, named: int | None, now: float) -> Lesson:
        """A probe's call was rate limited with the whole ceiling of ours in the window: the
        ceiling holds, and is learnt once corroborated."""
        if self.learnt:
            self._probe_after *= 2
            return Lesson(False, self.ceiling, self.ceiling, counted, named)
        if named is not None and self.surely <= named < self.ceiling:
            # Our clock put one call too many in a window: the text names a limit
            # between what is certain and what we counted.
            self.ceiling, self.learnt, self._candidate = named, True, None
            self._lower(named, now)
            return Lesson(True, named, named, counted, named)
        if self.ceiling in (named, self._candidate):  # corroborated
            self.learnt, self._candidate = True, None
            return Lesson(True, self.ceiling, self.ceiling, counted, named)
        self._candidate = self.ceiling  # the next probe, or 429, may corroborate
        return Lesson(False, self.ceiling, self.ceiling, counted, named)

    def _learn_limit(self, counted: int, named: int | None, now: float) -> Lesson | None:
        """The plan's limit, when ``counted`` (our calls in the window of a 429) is one and
        is corroborated (by the text, or by an earlier 429 with the same count); else None.

        Judged against what is certain (surely), not what our clock counted (proven): a
        climb that our clock proved one call too far meets the window at the plan's limit
        again and again, and these 429s teach it."""
        if not (self.learning and max(1, self.surely) <= counted <= self.ceiling):
            return None
        if counted not in (named, self._candidate):
            self._candidate = counted
            return None
        self._candidate = None  # corroborated: the plan's limit
        if counted == self.ceiling and self.learnt:
            return None
        self.ceiling, self.learnt, self.learnt_held = counted, True, self.held
        self._lower(counted, now)
        return Lesson(True, counted, counted, counted, named)

    def _lower(self, share: int, now: float) -> None:
        self.share = self._base = share
        self._lowered_at = now
        self._quiet_since = None
        self._limited_at = now if share < self.ceiling else None

    def _counted_before(self, call: Sent) -> int:
        """Our calls the server may have counted in the window that refused ``call``."""
        low, high = call.at - self.period - self.jitter, call.at + self.jitter
        return sum(1 for other in self._sent
                   if other is not call and low < other.at < high
                   and other.answer < Sent.LIMITED)

    def _prove(self, call: Sent) -> None:
        """The most of our counted calls within one period, around ``call``."""
        at, period, sure = call.at, self.period, self.period - self.jitter
        before = after = sure_before = sure_after = 0
        for other in self._sent:
            if other.answer == Sent.COUNTED:
                before += at - period < other.at <= at
                after += at <= other.at < at + period
                sure_before += at - sure < other.at <= at
                sure_after += at <= other.at < at + sure
        if max(before, after) >= self.ceiling:
            self._full_at = at  # the whole ceiling used: the run is at its limit
        self.proven = max(self.proven, before, after)
        # Calls sent within T - jitter of each other surely reached the server within T:
        # a count our clock alone may overstate by the calls at a window's edges.
        self.surely = max(self.surely, sure_before, sure_after)
        if self._candidate is not None and self.surely > self._candidate:
            self._candidate = None  # the account allowed more than that 429 suggested
        if self.proven > self.ceiling and (self.probing or self.surely > self.ceiling):
            # The account counted more of our calls in a window than the ceiling (a probe):
            # the plan allows more (or another client stopped). The ceiling is what it
            # proved, not learnt; a probe goes on climbing, one call over it. (Without a
            # probe, only a count beyond doubt: calls a probe let out may still be answered
            # after it ended.)
            self.ceiling, self.learnt = self.proven, False
            self._base = self.share = self.proven
            self._limited_at = None
            self._full_at = at
