"""Each call's fate: the fault it plays, its latency and the Ids it creates. No I/O here.

Owns the fault kinds, which calls each can strike, the schedule that owes every configured
kind to an early call, and the seeded streams fates are drawn from. Faults, by the calls they
can strike: look-ups (Retrieve, lead-by-e-mail, activity type, custom fields) take only those
that strike before anything is created (``500-before``, ``html``, ``reset-before``,
``429-other``, ``ratelimit-200``, ``slow``); a single create takes every kind but
``bulk-partial``; a bulk call takes every kind:

=================  ====================================================================
``500-before``     HTTP 500 without an MX type; nothing created
``500-after``      the activity is created, then HTTP 500 without an MX type
``html``           HTTP 502 with an HTML gateway page; nothing created
``reset-before``   the connection is reset before anything is created
``reset-after``    the activity is created, then the connection is reset
``hang-after``     the activity is created, then the answer waits ``slow_seconds``
``429-other``      rate limited as if another client had used the window, in the
                   sandbox's rate-limit form (HTTP 429 by default); nothing created
``ratelimit-200``  the rate-limit body under HTTP 200; nothing created
``slow``           the answer comes after ``slow_seconds`` more (default 5 s)
``bulk-partial``   a bulk call creates every valid item, but its answer lists only the
                   first half of them
``mx-after``       the call is carried out, then HTTP 500 with an ``MX…`` exception body
=================  ====================================================================

Every kind configured with a probability above 0 is owed once (:class:`FaultSchedule`): the
seed shuffles the owed kinds, and a call that one of them can strike plays it out (a call
refused before the fault could strike gives it back), so a short run sees every kind. After
that, a call's fault comes from its fate's draw, and a draw the call cannot play is no fault.

A call's fate (:func:`draw_fate`) comes from its own stream, seeded by the sandbox's seed,
what the call is (method, path, query without the keys, body) and how many identical calls
took effect before it (its *repeat*): never from a generator shared by concurrent calls, so
one call arriving before another changes neither's fate, and the same seed with the same
calls replays a run. A call that has no effect (refused by the window or for its keys, or
dropped because the sandbox went down) gives its repeat back (:meth:`Fates.give_back`): the
same call sent again meets the same fate, so neither the clock nor a kill changes which fates
are met.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from bulkpost.errors import UsageError

FAULT_KINDS = ("500-before", "500-after", "html", "reset-before", "reset-after",
               "hang-after", "429-other", "ratelimit-200", "slow", "bulk-partial",
               "mx-after")
LOOKUP_FAULTS = frozenset({"500-before", "html", "reset-before", "429-other",
                           "ratelimit-200", "slow"})
CREATE_FAULTS = frozenset(FAULT_KINDS) - {"bulk-partial"}
BULK_FAULTS = frozenset(FAULT_KINDS)
# Where the keys may travel: not part of what a call is.
_KEY_PARAMETERS = frozenset({"accesskey", "secretkey"})


def parse_faults(spec: str) -> dict[str, float]:
    """``"500-before:0.05,html:0.02"`` → probabilities by fault kind."""
    faults: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, probability = part.partition(":")
        if kind not in FAULT_KINDS:
            raise UsageError(f"--faults: unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        try:
            value = float(probability)
        except ValueError:
            raise UsageError(f"--faults: {part!r}: expected KIND:PROBABILITY") from None
        if not 0 <= value <= 1:
            raise UsageError(f"--faults: {part!r}: probability must be within 0..1")
        faults[kind] = value
    if sum(faults.values()) > 1:
        raise UsageError("--faults: the probabilities add up to more than 1")
    return faults


def parse_latency(spec: str, option: str = "--latency") -> tuple[float, float]:
    """``"0.08:0.6"`` → (0.08, 0.6) seconds; a single number is a fixed latency."""
    low, _, high = spec.partition(":")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise UsageError(f"{option} {spec!r}: expected A:B seconds") from None
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise UsageError(f"{option} {spec!r}: expected 0 <= A <= B")
    return bounds


def parse_tail(spec: str) -> tuple[float, float]:
    """``"0.03:3"`` → 3% of the answers take up to 3 s (from the latency's upper bound)."""
    share, _, longest = spec.partition(":")
    try:
        tail = (float(share), float(longest or 0))
    except ValueError:
        raise UsageError(f"--latency-tail {spec!r}: expected P:MAX") from None
    if not 0 <= tail[0] <= 1 or tail[1] < 0:
        raise UsageError(f"--latency-tail {spec!r}: expected 0 <= P <= 1 and MAX >= 0")
    return tail


def call_identity(method: str, path: str, query: Iterable[tuple[str, str]],
                  body: bytes) -> str:
    """What a call is, as a short digest: its method, path, query (keys left out) and body."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{method.upper()} {path}\n".encode())
    for name, value in sorted(q for q in query if q[0].lower() not in _KEY_PARAMETERS):
        digest.update(f"{name}={value}\n".encode())
    digest.update(body)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Fate:
    """What befalls one call, fixed before it is served."""

    arrival: float  # seconds the request travels before the window counts it
    latency: float  # seconds its answer takes (a ``slow`` fault adds to it)
    draw: float  # 0 <= draw < 1: its fault, if none is owed, by the probabilities
    stream: random.Random  # where the Ids of what it creates come from

    def new_id(self) -> str:
        """The next activity Id of this call."""
        return str(uuid.UUID(int=self.stream.getrandbits(128), version=4))


def _between(low: float, high: float, fraction: float) -> float:
    return low + (high - low) * fraction if high > low else low


def draw_fate(seed: int, call: str, repeat: int, *, arrival: tuple[float, float] = (0, 0),
              latency: tuple[float, float] = (0, 0),
              tail: tuple[float, float] = (0, 0)) -> Fate:
    """The fate of the ``repeat``-th call (from 0) identified as ``call`` under ``seed``.

    ``arrival`` and ``latency`` are A..B bounds in seconds, ``tail`` a share of the answers
    that take B..MAX instead. Every fate draws the same values in the same order, whatever
    the bounds, so that a setting changes no other draw.
    """
    stream = random.Random(f"{seed}:{call}:{repeat}")
    trip, in_tail, answer, draw = (stream.random() for _ in range(4))
    share, longest = tail
    low, high = latency
    if share and in_tail < share:
        low, high = high, max(longest, high)
    return Fate(_between(*arrival, trip), _between(low, high, answer), draw, stream)


class Fates:
    """The fates of a sandbox's calls: identical calls each get their own repeat, the lowest
    not taken (one given back is taken again first)."""

    __slots__ = ("_free", "_next", "arrival", "latency", "seed", "tail")

    def __init__(self, seed: int, *, arrival: tuple[float, float] = (0, 0),
                 latency: tuple[float, float] = (0, 0),
                 tail: tuple[float, float] = (0, 0)) -> None:
        self.seed = seed
        self.arrival = arrival
        self.latency = latency
        self.tail = tail
        self._next: dict[str, int] = {}  # the next repeat never taken, by call
        self._free: dict[str, list[int]] = {}  # repeats given back, a heap, by call

    def take(self, call: str) -> tuple[int, Fate]:
        """The lowest repeat of ``call`` not taken, and its fate."""
        free = self._free.get(call)
        if free:
            repeat = heapq.heappop(free)
        else:
            repeat = self._next.get(call, 0)
            self._next[call] = repeat + 1
        return repeat, draw_fate(self.seed, call, repeat, arrival=self.arrival,
                                 latency=self.latency, tail=self.tail)

    def give_back(self, call: str, repeat: int) -> None:
        """A call had no effect: its repeat (and fate) goes to the next identical call."""
        heapq.heappush(self._free.setdefault(call, []), repeat)


class FaultSchedule:
    """Which fault a call plays: a kind still owed that it can play, else its fate's draw.

    ``probabilities`` may be replaced while serving (a test plays another client taking the
    allowance); only the kinds configured at the start are owed.
    """

    __slots__ = ("_owed", "probabilities")

    def __init__(self, probabilities: dict[str, float], seed: int) -> None:
        self.probabilities = probabilities
        self._owed = [kind for kind, p in probabilities.items() if p > 0]
        random.Random(f"{seed}:owed").shuffle(self._owed)

    @property
    def owed(self) -> tuple[str, ...]:
        """The kinds still owed, in the order calls will get them."""
        return tuple(self._owed)

    def choose(self, draw: float, playable: frozenset[str]) -> tuple[str | None, bool]:
        """The fault of a call that can play ``playable``, and whether it was owed."""
        for kind in self._owed:
            if kind in playable:
                self._owed.remove(kind)
                return kind, True
        for kind, probability in self.probabilities.items():
            if draw < probability:
                return (kind if kind in playable else None), False
            draw -= probability
        return None, False

    def give_back(self, kind: str) -> None:
        """A call was refused before its owed ``kind`` could strike: the next call gets it."""
        self._owed.insert(0, kind)
