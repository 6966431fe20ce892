"""A LeadSquared look-alike on loopback, for the demo and the tests.

Owns a fake with real behaviour, not a mock: the real Create, Retrieve ("Get Activities of a
Lead", newest first, up to 25 a page), "Get Custom Fields of an Activity" (by ``activityId``;
an Id unknown to the access key is HTTP 500 ``Activity does not exist``), lead-by-e-mail and
"Get Activity Type Details" paths (a typed type 301 with a mandatory, a Number, a Dropdown, a
Date and a DateTime field, and duplicate display names; every other code in 100..999 with 50
String fields), auth by headers or query string (401 otherwise), the API's validation (typed
fields included) and error bodies, a strict sliding-window rate limit per access key (at most
N accepted calls in any T seconds, 429 with the ``MXAPIRateLimitExceededException`` body
beyond), latency, and faults injected by a seeded random generator so a run can be
reproduced.

The look-ups answer in a :class:`~bulkpost.dialect.Dialect` (``classic`` by default): how
``Data`` is shaped, entities, what ``CreatedOn`` is, how ``Paging.Offset`` and
``RecordCount`` count, typed values; :mod:`bulkpost.dialect` renders them. ``altered`` names
fields whose stored value differs from the one sent (the first half of it), to test reading
back; the ledger entry then keeps the sent values under ``Sent``.

Faults, by the calls they can strike: look-ups (Retrieve, lead-by-e-mail, activity type,
custom fields) take only those that strike before anything is created (``500-before``,
``html``, ``reset-before``, ``429-other``, ``ratelimit-200``, ``slow``); a single create takes
every kind but ``bulk-partial``; a bulk call takes every kind. Every kind configured with a
probability above 0 is owed once: the seeded generator shuffles the owed kinds, and a call
that one of them can strike plays it out (a call refused before the fault could strike leaves
it owed), so a short run sees every kind; after that, faults are drawn at random, and a draw
the call cannot play is no fault. ``faults`` in the stats counts the faults that took effect:

=================  ====================================================================
``500-before``     HTTP 500 without an MX type; nothing created
``500-after``      the activity is created, then HTTP 500 without an MX type
``html``           HTTP 502 with an HTML gateway page; nothing created
``reset-before``   the connection is reset before anything is created
``reset-after``    the activity is created, then the connection is reset
``hang-after``     the activity is created, then the answer waits ``slow_seconds``
``429-other``      HTTP 429, as if another client had used the window; nothing created
``ratelimit-200``  the rate-limit body under HTTP 200; nothing created
``slow``           the answer comes after ``slow_seconds`` more (default 5 s)
``bulk-partial``   a bulk call creates every valid item, but its answer lists only the
                   first half of them
``mx-after``       the call is carried out, then HTTP 500 with an ``MX…`` exception body
=================  ====================================================================

The two bulk endpoints ("Post Bulk Activities on Leads", by lead Id and by e-mail with
``searchBy=EmailAddress`` and ``SearchByValue``) take up to 25 items, validate each like a
single create, and answer ``{"Response": [{"RowNumber", "ActivityCreated",
"ProspectActivityId" | "ExceptionMessage"}, …]}``. They have their own sliding window per
access key (``bulk_rate``, 1 call in 5 s by default), separate from the single-call one.

Latency has three parts, all drawn from the seeded generator: the arrival delay (the
request's trip to the server, before the window counts it: it reorders and bunches calls as
a real network does), the answer latency (uniform A..B), and a tail (a share of the answers
takes up to a longer maximum).

Every created activity goes to the ledger (memory, and a JSON-lines file if asked) with the
moment its call arrived, and ``GET /_sandbox/stats`` serves the counters tests assert on:
calls, created, rate-limited, look-ups (``details`` of them custom-field calls), faults by
kind, the most calls seen in any window, when the first and the last created activity's call
arrived, and the dialect's name.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web

from bulkpost.activity import GUID
from bulkpost.client import (
    ACTIVITY_DETAILS_PATH,
    ACTIVITY_SETTING_PATH,
    BULK_BY_FIELD_PATH,
    BULK_BY_ID_PATH,
    CREATE_PATH,
    LEAD_BY_EMAIL_PATH,
    RETRIEVE_PATH,
)
from bulkpost.dialect import (
    DIALECTS,
    Dialect,
    canonical_option,
    page,
    render_activity,
    render_details,
)
from bulkpost.errors import UsageError
from bulkpost.mapping import CUSTOM_FIELD
from bulkpost.ratelimit import RateSpec

FAULT_KINDS = ("500-before", "500-after", "html", "reset-before", "reset-after",
               "hang-after", "429-other", "ratelimit-200", "slow", "bulk-partial",
               "mx-after")
# What each kind of call can play out (see the module docstring).
LOOKUP_FAULTS = frozenset({"500-before", "html", "reset-before", "429-other",
                           "ratelimit-200", "slow"})
CREATE_FAULTS = frozenset(FAULT_KINDS) - {"bulk-partial"}
BULK_FAULTS = frozenset(FAULT_KINDS)
MAX_BULK_ITEMS = 25
DEFAULT_ACCESS_KEY = "demo-access-key"
DEFAULT_SECRET_KEY = "demo-secret-key"
API_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
GATEWAY_PAGE = ("<html><head><title>502 Bad Gateway</title></head><body><center>"
                "<h1>502 Bad Gateway</h1></center></body></html>")


# Typed activity types the sandbox knows; every other event code in 100..999 exists with
# fifty untyped String fields.
CATALOG: dict[int, dict[str, Any]] = {
    301: {"DisplayName": "Order", "Fields": [
        {"SchemaName": "mx_Custom_1", "DisplayName": "Order No", "DataType": "String",
         "IsMandatory": True, "MaxFieldLength": 12},
        {"SchemaName": "mx_Custom_2", "DisplayName": "Amount", "DataType": "Number"},
        {"SchemaName": "mx_Custom_3", "DisplayName": "Channel", "DataType": "Dropdown",
         "OptionSet": json.dumps([{"Value": v, "Text": v} for v in ("Web", "Phone", "Store")])},
        {"SchemaName": "mx_Custom_4", "DisplayName": "Delivery Date", "DataType": "Date"},
        {"SchemaName": "mx_Custom_5", "DisplayName": "Shipped At", "DataType": "DateTime"},
        {"SchemaName": "mx_Custom_6", "DisplayName": "Purpose", "DataType": "String"},
        {"SchemaName": "mx_Custom_7", "DisplayName": "Purpose", "DataType": "String"},
        {"SchemaName": "mx_Custom_8", "DisplayName": "Remarks", "DataType": "String"},
    ]},
}


def activity_setting(code: int) -> dict[str, Any] | None:
    """What "Get Activity Type Details" answers for ``code`` (None: no such type)."""
    if code in CATALOG:
        return {"ActivityEventCode": code, **CATALOG[code]}
    if 100 <= code <= 999:
        return {"ActivityEventCode": code, "DisplayName": f"Event {code}", "Fields": [
            {"SchemaName": f"mx_Custom_{n}", "DisplayName": f"Custom {n}", "DataType": "String"}
            for n in range(1, 51)]}
    return None


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


def parse_altered(spec: str) -> frozenset[str]:
    """``"mx_Custom_2,mx_Custom_3"`` → the SchemaNames whose stored value is to differ."""
    names = frozenset(filter(None, (n.strip() for n in spec.split(","))))
    wrong = sorted(n for n in names if not CUSTOM_FIELD.fullmatch(n))
    if wrong:
        raise UsageError(f"--alter-stored: not a custom field SchemaName: {', '.join(wrong)}")
    return names


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


def _typed_problem(setting: dict[str, Any], name: str, value: str,
                   any_case: bool = False) -> str | None:
    """What the API would say of ``value`` for field ``name``, or None when it is fine
    (``any_case``: a dropdown value may name its option in any case)."""
    spec = next((f for f in setting["Fields"] if f["SchemaName"] == name), None)
    if spec is None:
        return f"Field {name} does not exist in activity type {setting['ActivityEventCode']}"
    label, kind = spec["DisplayName"], spec["DataType"]
    if value == "":
        return f"{label} is mandatory" if spec.get("IsMandatory") else None
    if kind == "Number" and not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", value):
        return f"{label}: '{value}' is not a number"
    if kind == "Date" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return f"{label}: '{value}' is not a date (yyyy-mm-dd)"
    if kind == "DateTime" and not API_DATETIME.fullmatch(value):
        return f"{label}: '{value}' is not a date-time (yyyy-mm-dd hh:mm:ss)"
    if kind == "Dropdown":
        option = canonical_option(spec, value)
        if option is None or (option != value and not any_case):
            return f"{label}: '{value}' is not one of the options"
    if spec.get("MaxFieldLength") and len(value) > spec["MaxFieldLength"]:
        return f"{label} is longer than {spec['MaxFieldLength']} characters"
    return None


def _setting_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The activity type of a stored entry (validated on the way in, so it exists)."""
    return activity_setting(int(entry["ActivityEvent"])) or {"DisplayName": "", "Fields": []}


def _error(status: int, exception_type: str, message: str) -> web.Response:
    return web.json_response(
        {"Status": "Error", "ExceptionType": exception_type, "ExceptionMessage": message},
        status=status)


class Admitted(NamedTuple):
    """A call the sandbox lets through: whose it is, the fault still to play out (and
    whether it was owed), its arrival."""

    access_key: str
    fault: str | None
    arrived: float  # time.time() when the window counted it
    owed: bool = False


@dataclass
class Stats:
    calls: int = 0
    created: int = 0
    rate_limited: int = 0
    unauthorized: int = 0
    rejected: int = 0
    lookups: int = 0
    details: int = 0  # "Get Custom Fields of an Activity" calls (counted in lookups too)
    max_in_window: int = 0
    bulk_calls: int = 0
    bulk_rate_limited: int = 0
    max_bulk_in_window: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    first_created: float | None = None  # arrival (time.time()) of the first and last
    last_created: float | None = None   # call that created an activity


class Sandbox:
    """The fake API. ``await start()`` serves it; ``app`` can also be mounted in tests."""

    def __init__(self, *, rate: RateSpec | None = None, bulk_rate: RateSpec | None = None,
                 latency: tuple[float, float] = (0, 0),
                 latency_tail: tuple[float, float] = (0, 0),
                 arrival: tuple[float, float] = (0, 0),
                 faults: dict[str, float] | None = None, seed: int | None = None,
                 ledger: Path | None = None, slow_seconds: float = 5.0,
                 keys: dict[str, str] | None = None,
                 dialect: Dialect = DIALECTS["classic"],
                 altered: frozenset[str] = frozenset()) -> None:
        self.rate = rate or RateSpec(25, 5.0)
        self.bulk_rate = bulk_rate or RateSpec(1, 5.0)
        self.latency = latency
        self.latency_tail = latency_tail  # (share of answers, longest latency)
        self.arrival = arrival
        self.faults = faults or {}
        self.slow_seconds = slow_seconds
        self.keys = keys or {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY}
        self.random = random.Random(seed)
        self.dialect = dialect
        self.altered = altered
        self._owed = [kind for kind, probability in self.faults.items() if probability > 0]
        self.random.shuffle(self._owed)
        self.stats = Stats()
        self.ledger: list[dict[str, Any]] = []
        self._ledger_file = open(ledger, "a", encoding="utf-8") if ledger else None  # noqa: SIM115
        self._accepted: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)
        self._arrivals: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)
        self._bulk_accepted: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)
        self._bulk_arrivals: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)
        self.app = web.Application()
        self._by_lead: dict[str, list[dict[str, Any]]] = {}
        self._by_id: dict[str, dict[str, Any]] = {}
        self._leads_by_email: dict[str, str] = {}
        self.app.router.add_post(CREATE_PATH, self._create)
        self.app.router.add_post(BULK_BY_ID_PATH, self._bulk)
        self.app.router.add_post(BULK_BY_FIELD_PATH, self._bulk)
        self.app.router.add_post(RETRIEVE_PATH, self._retrieve)
        self.app.router.add_get(ACTIVITY_SETTING_PATH, self._activity_setting)
        self.app.router.add_get(ACTIVITY_DETAILS_PATH, self._details)
        self.app.router.add_get(LEAD_BY_EMAIL_PATH, self._lead_by_email)
        self.app.router.add_get("/_sandbox/stats", self._stats)
        self.app.router.add_get("/_sandbox/ledger", self._ledger)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: any free port); return the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        bound = addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._ledger_file is not None:
            self._ledger_file.close()
            self._ledger_file = None

    def stats_dict(self) -> dict[str, Any]:
        s = self.stats
        return {"calls": s.calls, "created": s.created, "rate_limited": s.rate_limited,
                "unauthorized": s.unauthorized, "rejected": s.rejected, "lookups": s.lookups,
                "details": s.details, "dialect": self.dialect.name,
                "max_in_window": s.max_in_window, "faults": dict(s.faults),
                "first_created": s.first_created, "last_created": s.last_created,
                "bulk_calls": s.bulk_calls, "bulk_rate_limited": s.bulk_rate_limited,
                "max_bulk_in_window": s.max_bulk_in_window,
                "rate": str(self.rate), "bulk_rate": str(self.bulk_rate)}

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats_dict())

    async def _ledger(self, _request: web.Request) -> web.Response:
        return web.json_response(self.ledger)

    # -- the Create endpoint ---------------------------------------------------------------
    def _access_key(self, request: web.Request) -> str | None:
        access = request.headers.get("x-LSQ-AccessKey") or request.query.get("accessKey")
        secret = request.headers.get("x-LSQ-SecretKey") or request.query.get("secretKey")
        if access is None or secret is None or self.keys.get(access) != secret:
            return None
        return access

    def _window_admits(self, access_key: str, now: float, bulk: bool = False) -> bool:
        """Strict sliding window: at most N accepted calls in any T seconds."""
        rate = self.bulk_rate if bulk else self.rate
        horizon = now - rate.period
        arrivals = (self._bulk_arrivals if bulk else self._arrivals)[access_key]
        arrivals.append(now)
        while arrivals and arrivals[0] <= horizon:
            arrivals.popleft()
        if bulk:
            self.stats.max_bulk_in_window = max(self.stats.max_bulk_in_window, len(arrivals))
        else:
            self.stats.max_in_window = max(self.stats.max_in_window, len(arrivals))
        accepted = (self._bulk_accepted if bulk else self._accepted)[access_key]
        while accepted and accepted[0] <= horizon:
            accepted.popleft()
        if len(accepted) >= rate.calls:
            return False
        accepted.append(now)
        return True

    def _draw_fault(self, playable: frozenset[str]) -> tuple[str | None, bool]:
        """The fault for a call that can play ``playable``, and whether it was owed: an
        owed kind first, else a random draw (a kind the call cannot play is no fault)."""
        for kind in self._owed:
            if kind in playable:
                self._owed.remove(kind)
                return kind, True
        if not self.faults:
            return None, False
        draw = self.random.random()
        for kind, probability in self.faults.items():
            if draw < probability:
                return (kind if kind in playable else None), False
            draw -= probability
        return None, False

    def _struck(self, fault: str) -> None:
        """A fault takes effect now: only now is it counted."""
        self.stats.faults[fault] += 1

    def _refuse(self, admitted: Admitted, status: int, exception_type: str,
                message: str) -> web.Response:
        """An error that ends a call before its fault could strike: an owed fault stays owed
        (at the front), so that every configured kind still takes effect early."""
        if admitted.owed and admitted.fault is not None:
            self._owed.insert(0, admitted.fault)
        return _error(status, exception_type, message)

    def _draw(self, bounds: tuple[float, float]) -> float:
        low, high = bounds
        return self.random.uniform(low, high) if high > low else low

    async def _latency(self, extra: float = 0.0) -> None:
        share, longest = self.latency_tail
        if share and self.random.random() < share:
            delay = self._draw((self.latency[1], max(longest, self.latency[1])))
        else:
            delay = self._draw(self.latency)
        if delay + extra > 0:
            await asyncio.sleep(delay + extra)

    def _rate_limited(self, status: int = 429, bulk: bool = False) -> web.Response:
        self.stats.rate_limited += 1
        rate = self.bulk_rate if bulk else self.rate
        if bulk:
            self.stats.bulk_rate_limited += 1
        return _error(status, "MXAPIRateLimitExceededException",
                      f"API calls exceeded the limit of {rate.calls} in "
                      f"{rate.period:g} second(s)")

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=500)

    async def _admit(self, request: web.Request, lookup: bool = False,
                     bulk: bool = False) -> Admitted | web.StreamResponse:
        """What every endpoint does first: auth, the window, a fault drawn, the latency.

        Returns the access key, the fault still to play out and the arrival, or the answer
        to give now.
        """
        if self.arrival[1] > 0:
            await asyncio.sleep(self._draw(self.arrival))  # the trip to the server
        now = time.monotonic()
        arrived = time.time()
        self.stats.calls += 1
        access_key = self._access_key(request)
        if access_key is None:
            self.stats.unauthorized += 1
            return _error(401, "MXUnAuthorizedException", "Invalid access key or secret key")
        if not self._window_admits(access_key, now, bulk):
            return self._rate_limited(bulk=bulk)
        fault, owed = self._draw_fault(
            LOOKUP_FAULTS if lookup else BULK_FAULTS if bulk else CREATE_FAULTS)
        await request.read()
        if fault in LOOKUP_FAULTS:  # these strike here, whatever the call
            self._struck(fault)
        if fault == "429-other":
            return self._rate_limited(429, bulk)
        if fault == "ratelimit-200":
            return self._rate_limited(200, bulk)
        if fault == "reset-before":
            return self._reset(request)
        await self._latency(self.slow_seconds if fault == "slow" else 0.0)
        if fault == "500-before":
            return web.Response(status=500, text="Internal Server Error")
        if fault == "html":
            return web.Response(status=502, text=GATEWAY_PAGE, content_type="text/html")
        if lookup:
            self.stats.lookups += 1
        return Admitted(access_key, None if fault in LOOKUP_FAULTS else fault, arrived, owed)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        access_key, fault, arrived, _ = admitted
        if request.content_type != "application/json":
            self.stats.rejected += 1
            return self._refuse(admitted, 400, "MXInvalidRequestException",
                                "Content-Type must be application/json")
        try:
            body = json.loads(await request.read())
        except ValueError:
            self.stats.rejected += 1
            return self._refuse(admitted, 400, "MXInvalidRequestException",
                                "The request body is not JSON")
        problem = self._validate(body)
        if problem is not None:
            self.stats.rejected += 1
            return self._refuse(admitted, 500, "MXInvalidInputException", problem)
        activity_id = self._new_id()
        self._record(access_key, activity_id, body, arrived)
        failed = await self._after_saving(request, fault)
        if failed is not None:
            return failed
        return web.json_response({"Status": "Success", "Message": {"Id": activity_id}})

    async def _bulk(self, request: web.Request) -> web.StreamResponse:
        """"Post Bulk Activities on Leads": by lead Id, or by e-mail (``SearchByValue``)."""
        admitted = await self._admit(request, bulk=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        access_key, fault, arrived, _ = admitted
        self.stats.bulk_calls += 1
        by_email = request.path == BULK_BY_FIELD_PATH
        if by_email and request.query.get("searchBy") != "EmailAddress":
            return self._refuse(admitted, 400, "MXInvalidInputException",
                                "searchBy must be EmailAddress")
        try:
            items = json.loads(await request.read())
        except ValueError:
            return self._refuse(admitted, 400, "MXInvalidRequestException",
                                "The request body is not JSON")
        if not isinstance(items, list) or not items:
            return self._refuse(admitted, 400, "MXInvalidInputException",
                                "Expected a JSON array of activities")
        if len(items) > MAX_BULK_ITEMS:
            return self._refuse(admitted, 400, "MXInvalidInputException",
                                f"At most {MAX_BULK_ITEMS} activities are allowed per call")
        answers: list[dict[str, Any]] = []
        for number, item in enumerate(items, start=1):
            body = dict(item) if isinstance(item, dict) else item
            if by_email and isinstance(body, dict):
                body.pop("RelatedProspectId", None)
                body["EmailAddress"] = body.pop("SearchByValue", None)
            elif isinstance(body, dict):
                body.pop("EmailAddress", None)  # by Id: the Id names the lead
            problem = self._validate(body)
            if problem is not None:
                self.stats.rejected += 1
                answers.append({"RowNumber": number, "ActivityCreated": False,
                                "ExceptionMessage": problem})
                continue
            activity_id = self._new_id()
            self._record(access_key, activity_id, body, arrived, bulk=True)
            answers.append({"RowNumber": number, "ActivityCreated": True,
                            "ProspectActivityId": activity_id})
        if fault == "bulk-partial":  # items is not empty: at least one answer goes
            self._struck(fault)
            answers = answers[:len(answers) // 2]
        failed = await self._after_saving(request, fault)
        if failed is not None:
            return failed
        return web.json_response({"Response": answers})

    def _new_id(self) -> str:
        """A new activity Id, from the seeded generator (so runs can be reproduced)."""
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    async def _after_saving(self, request: web.Request,
                            fault: str | None) -> web.StreamResponse | None:
        """Play out a fault that strikes once the activities are saved: the answer to give
        instead of the real one, or None (``hang-after`` only delays the real one)."""
        if fault in ("mx-after", "500-after", "reset-after", "hang-after"):
            self._struck(fault)
        if fault == "mx-after":
            return _error(500, "MXUnknownException", "An error occurred after saving")
        if fault == "500-after":
            return web.Response(status=500, text="Internal Server Error")
        if fault == "reset-after":
            return self._reset(request)
        if fault == "hang-after":
            await asyncio.sleep(self.slow_seconds)
        return None

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        """"Get Activities of a Lead": newest first, filtered by event, paged."""
        admitted = await self._admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        lead_id = request.query.get("leadId", "")
        try:
            body = json.loads(await request.read() or b"{}")
            parameter = body.get("Parameter") or {}
            paging = body.get("Paging") or {}
            event = int(parameter["ActivityEvent"]) if "ActivityEvent" in parameter else None
            offset = int(paging.get("Offset", 0))
            count = int(paging.get("RowCount", 25))
        except (ValueError, TypeError, AttributeError, KeyError):
            return _error(500, "MXInvalidInputException", "Invalid Parameter or Paging")
        if not GUID.fullmatch(lead_id):
            return _error(500, "MXInvalidInputException", f"Invalid leadId: {lead_id}")
        if not 0 < count <= 25 or offset < 0:
            return _error(500, "MXInvalidInputException", "RowCount must be 1..25")
        entries = [e for e in reversed(self._by_lead.get(lead_id.lower(), []))
                   if event is None or e["ActivityEvent"] == event]
        items, record_count = page(entries, offset, count, self.dialect)
        return web.json_response({"RecordCount": record_count, "ProspectActivities": [
            render_activity(e, self.dialect, _setting_of(e)) for e in items]})

    async def _details(self, request: web.Request) -> web.StreamResponse:
        """"Get Custom Fields of an Activity": every field of its type, as stored."""
        admitted = await self._admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        self.stats.details += 1
        entry = self._by_id.get(request.query.get("activityId", "").strip().lower())
        if entry is None or entry["AccessKey"] != admitted.access_key:
            return _error(500, "MXInvalidInputException", "Activity does not exist")
        return web.json_response(render_details(entry, self.dialect, _setting_of(entry)))

    async def _activity_setting(self, request: web.Request) -> web.StreamResponse:
        """"Get Activity Type Details" for the sandbox's event codes."""
        admitted = await self._admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        code = request.query.get("code", "")
        setting = activity_setting(int(code)) if code.isdigit() else None
        if setting is None:
            return _error(500, "MXInvalidInputException",
                          f"Activity event {code} does not exist")
        return web.json_response(setting)

    async def _lead_by_email(self, request: web.Request) -> web.StreamResponse:
        """"Get Lead by Email Address": a list with the lead, or an empty list."""
        admitted = await self._admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        email = request.query.get("emailaddress", "").strip().lower()
        lead_id = self._leads_by_email.get(email)
        return web.json_response(
            [{"ProspectID": lead_id, "EmailAddress": email}] if lead_id else [])

    def _validate(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "The request body must be a JSON object"
        lead_id = body.get("RelatedProspectId")
        email = body.get("EmailAddress")
        if lead_id is not None:
            if not isinstance(lead_id, str) or not GUID.fullmatch(lead_id):
                return f"Invalid RelatedProspectId: {lead_id}"
            if lead_id.startswith("00000000-"):
                return f"Lead with Id {lead_id} does not exist"
        elif not isinstance(email, str) or "@" not in email:
            return "RelatedProspectId or EmailAddress is required"
        event = body.get("ActivityEvent")
        if not isinstance(event, int) or isinstance(event, bool):
            return "ActivityEvent is required and must be an integer"
        setting = activity_setting(event)
        if setting is None:
            return f"Activity event {event} does not exist"
        note = body.get("ActivityNote", "")
        if not isinstance(note, str):
            return "ActivityNote must be a string"
        when = body.get("ActivityDateTime")
        if when is not None and (not isinstance(when, str) or not API_DATETIME.fullmatch(when)):
            return f"Invalid ActivityDateTime: {when} (expected yyyy-mm-dd hh:mm:ss, UTC)"
        fields = body.get("Fields", [])
        if not isinstance(fields, list):
            return "Fields must be a list"
        seen: set[str] = set()
        for item in fields:
            if not isinstance(item, dict) or not isinstance(item.get("SchemaName"), str):
                return "Each field needs a SchemaName and a Value"
            name = item["SchemaName"]
            if not CUSTOM_FIELD.fullmatch(name):
                return f"Invalid field SchemaName: {name}"
            if name in seen:
                return f"Field {name} given twice"
            seen.add(name)
            if not isinstance(item.get("Value"), str):
                return f"Field {name}: Value must be a string"
            problem = _typed_problem(setting, name, item["Value"], self.dialect.typed)
            if problem is not None:
                return problem
        for spec in setting["Fields"]:
            if spec.get("IsMandatory") and spec["SchemaName"] not in seen:
                return f"Mandatory field {spec['DisplayName']} is missing"
        return None

    def _record(self, access_key: str, activity_id: str, body: dict[str, Any],
                arrived: float, bulk: bool = False) -> None:
        self.stats.created += 1
        if self.stats.first_created is None:
            self.stats.first_created = arrived
        self.stats.last_created = arrived
        lead_id: str | None = body.get("RelatedProspectId")
        if lead_id is None:
            # No lead has this e-mail yet: the API creates one. (_validate checked the type.)
            email = str(body["EmailAddress"]).strip().lower()
            lead_id = self._leads_by_email.setdefault(
                email, str(uuid.uuid5(uuid.NAMESPACE_URL, "mailto:" + email)))
        lead_id = lead_id.lower()
        sent = {f["SchemaName"]: f["Value"] for f in body.get("Fields", [])}
        specs = {f["SchemaName"]: f for f in _setting_of(body)["Fields"]}
        stored = {name: self._stored(name, value, specs.get(name))
                  for name, value in sent.items()}
        entry: dict[str, Any] = {
            "Id": activity_id,
            "LeadId": lead_id,
            "CreatedOn": body.get("ActivityDateTime") or time.strftime(
                "%Y-%m-%d %H:%M:%S", time.gmtime(arrived)),
            "RelatedProspectId": body.get("RelatedProspectId"),
            "EmailAddress": body.get("EmailAddress"),
            "ActivityEvent": body.get("ActivityEvent"),
            "ActivityNote": body.get("ActivityNote"),
            "ActivityDateTime": body.get("ActivityDateTime"),
            "Fields": stored,
            **({"Sent": sent} if stored != sent else {}),
            "AccessKey": access_key,
            "ReceivedAt": arrived,  # when the call arrived, before the latency
            "Bulk": bulk,
        }
        self.ledger.append(entry)
        self._by_id[activity_id] = entry
        self._by_lead.setdefault(lead_id, []).append(entry)
        if self._ledger_file is not None:
            self._ledger_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._ledger_file.flush()

    def _stored(self, name: str, value: str, spec: dict[str, Any] | None) -> str:
        """What the sandbox keeps of a sent value: a dropdown's own spelling in a typed
        dialect, and the first half of an ``altered`` field's value."""
        if self.dialect.typed and spec is not None and spec["DataType"] == "Dropdown":
            value = canonical_option(spec, value) or value
        return value[:len(value) // 2] if name in self.altered else value


async def serve(sandbox: Sandbox, host: str, port: int, announce: Any) -> None:
    """Serve until cancelled (SIGINT/SIGTERM in the CLI); ``announce`` gets the URL."""
    url = await sandbox.start(host, port)
    announce(url)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
