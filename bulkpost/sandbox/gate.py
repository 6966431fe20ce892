"""What every API call of the sandbox passes first, and the faults it plays out over HTTP.

Owns auth (keys in the ``x-LSQ-AccessKey``/``x-LSQ-SecretKey`` headers or the query string,
401 otherwise), the strict sliding windows per access key (at most N accepted calls in any T
seconds, rate limited beyond, in the form :data:`RATE_LIMIT_ANSWERS` names; the bulk
endpoints have their own), each call's fate (:mod:`bulkpost.sandbox.faults`: its arrival delay, the
request's trip before the window counts it; its answer latency; its fault) and the playing
out of a fault: those that strike before anything is created here in :meth:`Gate.admit`,
those that strike once activities are saved in :meth:`Gate.after_saving`. A fault is counted
in the stats when it takes effect, and only then: by kind, and by what it struck (single
calls that create or update one activity, bulk calls, look-ups).

It also owns the sandbox going down (:meth:`Gate.go_down`, as if its host died with the
client: a test kills the client at a planned ledger count): from that moment until
:meth:`Gate.come_up`, no call has any effect. Every call not answered yet, or arriving
meanwhile, is reset without creating anything, counts no fault (``dropped`` in the stats)
and gives back its fate (:meth:`Fates.give_back`), so that sent again it meets the same one;
a call that stored activities before took effect, fault and all, though its answer is lost.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import NamedTuple

from aiohttp import web

from bulkpost.core.allowance import RateSpec
from bulkpost.errors import UsageError
from bulkpost.sandbox.faults import (
    BULK_FAULTS,
    CREATE_FAULTS,
    LOOKUP_FAULTS,
    Fate,
    Fates,
    FaultSchedule,
    call_identity,
)
from bulkpost.sandbox.stats import ServerCounts

DEFAULT_ACCESS_KEY = "demo-access-key"
DEFAULT_SECRET_KEY = "demo-secret-key"
GATEWAY_PAGE = ("<html><head><title>502 Bad Gateway</title></head><body><center>"
                "<h1>502 Bad Gateway</h1></center></body></html>")
_AFTER_SAVING = frozenset({"mx-after", "500-after", "reset-after", "hang-after"})
_ANSWERED_AT_ONCE = frozenset({"429-other", "ratelimit-200", "reset-before"})
# How "rate limited" is answered: the documented 429, or as real accounts were seen to
# answer it (a 403 or a 200; whether those carry an ExceptionType is not known).
RATE_LIMIT_ANSWERS = {
    "429": "HTTP 429 with the MXAPIRateLimitExceededException body (as documented)",
    "403": "HTTP 403, a JSON body with the sentence in ExceptionMessage and no ExceptionType",
    "200": "HTTP 200 with the MXAPIRateLimitExceededException body",
    "403-plain": "HTTP 403, the sentence alone as a plain-text body",
}


# What "Get Custom Fields of an Activity" answers (HTTP 500) for an Id the account does not
# hold, unknown or deleted; the sandbox's updates of such an Id answer it too.
UNKNOWN_ACTIVITY = "MXUnknownProspectActivityException"


def error(status: int, exception_type: str, message: str) -> web.Response:
    """The API's error body."""
    return web.json_response(
        {"Status": "Error", "ExceptionType": exception_type, "ExceptionMessage": message},
        status=status)


class Admitted(NamedTuple):
    """A call the gate lets through: whose it is, the fault still to play out (and whether
    it was owed), its arrival, its fate (the Ids it creates), what it is as faults are
    counted, and which time up of the sandbox it came in."""

    access_key: str
    fault: str | None
    arrived: float  # time.time() when the window counted it
    owed: bool
    fate: Fate
    on: str  # what the call is, as faults are counted: "single", "bulk" or "lookups"
    epoch: int  # how often the sandbox had gone down when the call came


class _Window:
    """One strict sliding window per access key: every arrival is seen, the accepted ones
    are limited."""

    __slots__ = ("_accepted", "_arrivals", "most", "rate")

    def __init__(self, rate: RateSpec) -> None:
        self.rate = rate
        self.most = 0  # the most calls seen in any window
        self._arrivals: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)
        self._accepted: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)

    def admits(self, access_key: str, now: float) -> bool:
        horizon = now - self.rate.period
        arrivals = self._arrivals[access_key]
        arrivals.append(now)
        while arrivals and arrivals[0] <= horizon:
            arrivals.popleft()
        self.most = max(self.most, len(arrivals))
        accepted = self._accepted[access_key]
        while accepted and accepted[0] <= horizon:
            accepted.popleft()
        if len(accepted) >= self.rate.calls:
            return False
        accepted.append(now)
        return True


class Gate:
    """Auth, the windows, fates and faults, for every API call of one sandbox."""

    def __init__(self, stats: ServerCounts, *, keys: dict[str, str], rate: RateSpec,
                 bulk_rate: RateSpec, fates: Fates, schedule: FaultSchedule,
                 slow_seconds: float, rate_limit_answer: str = "429") -> None:
        if rate_limit_answer not in RATE_LIMIT_ANSWERS:
            raise UsageError(f"--rate-limit-answer: {rate_limit_answer!r}; known: "
                             f"{', '.join(RATE_LIMIT_ANSWERS)}")
        self.rate_limit_answer = rate_limit_answer
        self.stats = stats
        self.keys = keys
        self.fates = fates
        self.schedule = schedule
        self.slow_seconds = slow_seconds
        self._window = _Window(rate)
        self._bulk_window = _Window(bulk_rate)
        self.said_rate: RateSpec | None = None  # the limit the texts name (None: the real one)
        self.said_bulk_rate: RateSpec | None = None
        self.down = False  # gone down with the client: calls have no effect
        self.epoch = 0  # how often it went down: a call that came before is dropped

    def go_down(self) -> None:
        """Go down now, as if the host died: no call not answered yet, or arriving before
        :meth:`come_up`, has any effect."""
        self.down = True
        self.epoch += 1

    def come_up(self) -> None:
        """Take calls again (calls that came before going down stay without effect)."""
        self.down = False

    def live(self, admitted: Admitted) -> bool:
        """Whether the call may still take effect: the sandbox has not gone down since it
        came."""
        return not self.down and admitted.epoch == self.epoch

    async def admit(self, request: web.Request, lookup: bool = False,
                    bulk: bool = False) -> Admitted | web.StreamResponse:
        """What every endpoint does first: the call's fate, its trip, auth, the window, a
        fault that strikes before anything is created, the latency.

        Returns what the endpoint needs to carry the call out, or the answer to give now.
        """
        body = await request.read()
        call = call_identity(request.method, request.path, request.query.items(), body)
        repeat, fate = self.fates.take(call)
        epoch = self.epoch
        if fate.arrival > 0:
            await asyncio.sleep(fate.arrival)  # the trip to the server
        now = time.monotonic()
        arrived = time.time()
        self.stats.calls += 1
        if self.down or epoch != self.epoch:  # it came to a sandbox down, or died on the way
            return self._drop(request, call, repeat)
        access_key = self._access_key(request)
        if access_key is None:  # refused before its fate could play: the next one gets it
            self.fates.give_back(call, repeat)
            self.stats.unauthorized += 1
            return error(401, "MXUnAuthorizedException", "Invalid access key or secret key")
        if not self._admits(access_key, now, bulk):  # the clock's doing, not the call's fate
            self.fates.give_back(call, repeat)
            return self.rate_limited(bulk=bulk)
        if not bulk:
            self.stats.accepted += 1
            if self.stats.first_accepted is None:
                self.stats.first_accepted = arrived
            self.stats.last_accepted = arrived
        fault, owed = self.schedule.choose(
            fate.draw, LOOKUP_FAULTS if lookup else BULK_FAULTS if bulk else CREATE_FAULTS)
        admitted = Admitted(access_key, fault, arrived, owed, fate,
                            "lookups" if lookup else "bulk" if bulk else "single", epoch)
        if fault in _ANSWERED_AT_ONCE:  # these strike here, whatever the call
            self.struck(admitted)
        if fault == "429-other":  # another client's doing: answered as the window answers
            return self.rate_limited(bulk=bulk)
        if fault == "ratelimit-200":
            return self.rate_limited(200, bulk)
        if fault == "reset-before":
            return self._reset(request)
        delay = fate.latency + (self.slow_seconds if fault == "slow" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if not self.live(admitted):  # it went down meanwhile: the answer dies with it
            if owed and fault is not None:
                self.schedule.give_back(fault)
            return self._drop(request, call, repeat)
        # From here on the call takes effect: the endpoint carries it out without waiting.
        if fault in LOOKUP_FAULTS:
            self.struck(admitted)
        if fault == "500-before":
            return web.Response(status=500, text="Internal Server Error")
        if fault == "html":
            return web.Response(status=502, text=GATEWAY_PAGE, content_type="text/html")
        if lookup:
            self.stats.lookups += 1
        return admitted._replace(fault=None if fault in LOOKUP_FAULTS else fault)

    def refuse(self, admitted: Admitted, status: int, exception_type: str,
               message: str) -> web.Response:
        """An error that ends a call before its fault could strike: an owed fault stays owed
        (at the front), so that every configured kind still takes effect early."""
        if admitted.owed and admitted.fault is not None:
            self.schedule.give_back(admitted.fault)
        return error(status, exception_type, message)

    async def after_saving(self, request: web.Request,
                           admitted: Admitted) -> web.StreamResponse | None:
        """Play out a fault that strikes once the activities are saved: the answer to give
        instead of the real one, or None (``hang-after`` only delays the real one). Gone
        down meanwhile (this call's storing may have been what brought it down): the call
        took effect, fault and all, but its answer is lost."""
        fault = admitted.fault
        if fault in _AFTER_SAVING:
            self.struck(admitted)
        if not self.live(admitted):
            return self._reset(request)
        if fault == "mx-after":
            return error(500, "MXUnknownException", "An error occurred after saving")
        if fault == "500-after":
            return web.Response(status=500, text="Internal Server Error")
        if fault == "reset-after":
            return self._reset(request)
        if fault == "hang-after":
            await asyncio.sleep(self.slow_seconds)
            if not self.live(admitted):
                return self._reset(request)
        return None

    def struck(self, admitted: Admitted) -> None:
        """The call's fault takes effect now: only now is it counted."""
        fault = admitted.fault
        assert fault is not None
        self.stats.faults[fault] += 1
        self.stats.faults_on[admitted.on][fault] += 1

    def rate_limited(self, status: int | None = None, bulk: bool = False) -> web.Response:
        """A "rate limited" answer: with ``status`` the MX body under it, else in the
        sandbox's :data:`RATE_LIMIT_ANSWERS` form."""
        self.stats.rate_limited += 1
        # The limit the text names: the one enforced, unless told to name another (the
        # docs print "25 in 5 second(s)" everywhere: a real text may not be the plan's).
        rate = (self.said_bulk_rate if bulk else self.said_rate) or (
            self._bulk_window if bulk else self._window).rate
        if bulk:
            self.stats.bulk_rate_limited += 1
        sentence = f"API calls exceeded the limit of {rate.calls} in {rate.period:g} second(s)"
        form = self.rate_limit_answer if status is None else str(status)
        if form == "403":
            return web.json_response({"Status": "Error", "ExceptionMessage": sentence},
                                     status=403)
        if form == "403-plain":
            return web.Response(status=403, text=sentence)
        return error(int(form), "MXAPIRateLimitExceededException", sentence)

    def _access_key(self, request: web.Request) -> str | None:
        access = request.headers.get("x-LSQ-AccessKey") or request.query.get("accessKey")
        secret = request.headers.get("x-LSQ-SecretKey") or request.query.get("secretKey")
        if access is None or secret is None or self.keys.get(access) != secret:
            return None
        return access

    def _admits(self, access_key: str, now: float, bulk: bool) -> bool:
        window = self._bulk_window if bulk else self._window
        admitted = window.admits(access_key, now)
        if bulk:
            self.stats.max_bulk_in_window = window.most
        else:
            self.stats.max_in_window = window.most
        return admitted

    def _drop(self, request: web.Request, call: str, repeat: int) -> web.Response:
        """A call without effect, the sandbox being down: reset, its fate given back."""
        self.fates.give_back(call, repeat)
        self.stats.dropped += 1
        return self._reset(request)

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=500)
