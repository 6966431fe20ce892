"""The sandbox's HTTP application: its routes, its endpoints, and serving it.

Owns :class:`Sandbox`, which puts the parts together (the gate every call passes, the fault
schedule and fates, the activity store), routes each path, and carries out the look-ups and
the sandbox's own ``/_sandbox/stats`` and ``/_sandbox/ledger``; the endpoints that write
(creates and updates) are :mod:`bulkpost.sandbox.writes`'s.

It also plays a region: the regional host it stands for (``region``, what
"UserByAccessKey.Get" names as the account's API host) and the keys' home region. A sandbox
whose region is not the keys' home answers every API call 401, its message naming the home
host or not (``region_hint``): how LeadSquared words that refusal is not known.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bulkpost.core.activity import GUID
from bulkpost.core.allowance import RateSpec
from bulkpost.core.schema import ActivityType
from bulkpost.sandbox import paths
from bulkpost.sandbox.dialect import DIALECTS, Dialect
from bulkpost.sandbox.faults import Fates, FaultSchedule
from bulkpost.sandbox.gate import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    UNKNOWN_ACTIVITY,
    Gate,
    error,
)
from bulkpost.sandbox.stats import ServerCounts
from bulkpost.sandbox.store import ActivityStore, Watch, shown
from bulkpost.sandbox.validation import Catalog
from bulkpost.sandbox.writes import WriteEndpoints

DEFAULT_REGION = "api.leadsquared.com"  # the region a sandbox plays unless told


class Sandbox(WriteEndpoints):
    """The fake API. ``await start()`` serves it; ``app`` can also be mounted in tests.

    ``seed`` replays a run (None: a random one, shown in the stats). ``region``: the host
    it plays; ``home_region``: the keys' home (None: this one), else every call is refused.
    ``types``: an account's own activity types, served beside the built-in ones.
    ``rate_limit_answer``: how "rate limited" is answered (a key of
    :data:`~bulkpost.sandbox.gate.RATE_LIMIT_ANSWERS`: ``429``, ``403``, ``200``,
    ``403-plain``). ``time_zone``: what "UserByAccessKey.Get" answers as the account's
    ``TimeZone`` (an IANA name, or another spelling a real account may use).
    """

    def __init__(self, *, rate: RateSpec | None = None, bulk_rate: RateSpec | None = None,
                 latency: tuple[float, float] = (0, 0),
                 latency_tail: tuple[float, float] = (0, 0),
                 arrival: tuple[float, float] = (0, 0),
                 faults: dict[str, float] | None = None, seed: int | None = None,
                 ledger: Path | None = None, slow_seconds: float = 5.0,
                 keys: dict[str, str] | None = None,
                 dialect: Dialect = DIALECTS["classic"],
                 altered: frozenset[str] = frozenset(), region: str = DEFAULT_REGION,
                 home_region: str | None = None, region_hint: bool = True,
                 types: Sequence[ActivityType] = (), rate_limit_answer: str = "429",
                 time_zone: str = "UTC") -> None:
        self.rate = rate or RateSpec(25, 5.0)
        self.bulk_rate = bulk_rate or RateSpec(1, 5.0)
        self.seed = secrets.randbits(63) if seed is None else seed
        self.dialect = dialect
        self.stats = ServerCounts()
        self.catalog = Catalog(types)
        self.store = ActivityStore(self.stats, dialect=dialect, altered=altered, ledger=ledger,
                                   catalog=self.catalog)
        self.gate = Gate(self.stats, keys=keys or {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY},
                         rate=self.rate, bulk_rate=self.bulk_rate,
                         fates=Fates(self.seed, arrival=arrival, latency=latency,
                                     tail=latency_tail),
                         schedule=FaultSchedule(faults or {}, self.seed),
                         slow_seconds=slow_seconds, rate_limit_answer=rate_limit_answer)
        self.region = region
        self.time_zone = time_zone
        self.home_region = home_region or region
        self.region_hint = region_hint
        self.app = web.Application(
            middlewares=[] if self.home_region == region else [self._other_region()])
        self.app.router.add_post(paths.CREATE, self._create)
        self.app.router.add_post(paths.BULK_BY_LEAD_ID, self._bulk)
        self.app.router.add_post(paths.BULK_BY_LEAD_FIELD, self._bulk)
        self.app.router.add_post(paths.UPDATE, self._update)
        self.app.router.add_post(paths.BULK_UPDATE, self._bulk_update)
        self.app.router.add_post(paths.RETRIEVE, self._retrieve)
        self.app.router.add_get(paths.ACTIVITY_SETTING, self._activity_setting)
        self.app.router.add_get(paths.ACTIVITY_DETAILS, self._details)
        self.app.router.add_get(paths.LEAD_BY_EMAIL, self._lead_by_email)
        self.app.router.add_get(paths.USER_BY_ACCESS_KEY, self._user)
        self.app.router.add_get(paths.ACTIVITY_TYPES, self._activity_types)
        self.app.router.add_get(paths.STATS, self._stats)
        self.app.router.add_get(paths.LEDGER, self._ledger)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # Tests read and replace these while serving (another client taking the allowance; an
    # activity that vanished): they are the schedule's and the store's.
    @property
    def faults(self) -> dict[str, float]:
        return self.gate.schedule.probabilities

    @faults.setter
    def faults(self, probabilities: dict[str, float]) -> None:
        self.gate.schedule.probabilities = probabilities

    @property
    def ledger(self) -> list[dict[str, Any]]:
        return self.store.ledger

    @ledger.setter
    def ledger(self, entries: list[dict[str, Any]]) -> None:
        self.store.ledger = entries

    @property
    def _by_lead(self) -> dict[str, list[dict[str, Any]]]:
        return self.store.by_lead

    @_by_lead.setter
    def _by_lead(self, entries: dict[str, list[dict[str, Any]]]) -> None:
        self.store.by_lead = entries

    def watch_ledger(self, count: int, action: Watch) -> None:
        """Call ``action`` with the entry that brings the ledger to ``count`` entries, the
        moment it is stored, before its call is answered (from the serving loop)."""
        self.store.watch(count, action)

    def watch_updates(self, count: int, action: Watch) -> None:
        """As :meth:`watch_ledger`, for the ``count``-th update made."""
        self.store.watch_updates(count, action)

    def go_down_at(self, count: int, action: Watch) -> None:
        """Go down the moment the ledger holds ``count`` entries, as if the host died with
        the client (``action``, called with that entry from the serving loop, kills the
        client): the ledger keeps exactly ``count`` entries, the call that stored the last
        one is not answered, and every other call not answered yet or arriving until
        :meth:`come_up` is reset without effect: nothing stored, no fault counted
        (``dropped`` in the stats), its fate given back for the same call sent again (see
        :mod:`bulkpost.sandbox.gate`)."""
        def down(entry: dict[str, Any]) -> None:
            self.gate.go_down()
            action(entry)

        self.store.watch(count, down)

    async def come_up(self, settle: float = 0.1) -> None:
        """Take calls again after :meth:`go_down_at`, once ``settle`` seconds have passed:
        meanwhile, what the dead client had sent before it died is still read, and dropped.
        (Calls that came before going down stay without effect whenever they end.)"""
        await asyncio.sleep(settle)
        self.gate.come_up()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: any free port); return the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.store.close()

    def stats_dict(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "dialect": self.dialect.name, "seed": self.seed,
                "rate": str(self.rate), "bulk_rate": str(self.bulk_rate),
                "rate_limit_answer": self.gate.rate_limit_answer,
                "region": self.region, "home_region": self.home_region}

    def _other_region(self) -> Middleware:
        """Every API call refused with 401, as a region that is not the keys' home does."""
        @web.middleware
        async def refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/_sandbox/"):
                return await handler(request)
            await request.read()
            self.stats.calls += 1
            self.stats.unauthorized += 1
            if self.region_hint:
                return error(401, "MXUnAuthorizedException",
                             "Invalid access key or secret key for this region: the account "
                             f"is served from https://{self.home_region}")
            return error(401, "MXUnAuthorizedException", "Invalid access key or secret key")

        return refuse

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats_dict())

    async def _ledger(self, _request: web.Request) -> web.Response:
        return web.json_response([shown(entry) for entry in self.store.ledger])

    # -- look-ups ----------------------------------------------------------------------------
    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        """"Get Activities of a Lead": newest first, filtered by event, paged."""
        admitted = await self.gate.admit(request, lookup=True)
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
            return error(500, "MXInvalidInputException", "Invalid Parameter or Paging")
        if not GUID.fullmatch(lead_id):
            return error(500, "MXInvalidInputException", f"Invalid leadId: {lead_id}")
        if not 0 < count <= 25 or offset < 0:
            return error(500, "MXInvalidInputException", "RowCount must be 1..25")
        return web.json_response(self.store.activities_page(lead_id, event, offset, count))

    async def _details(self, request: web.Request) -> web.StreamResponse:
        """"Get Custom Fields of an Activity": every field of its type, as stored."""
        admitted = await self.gate.admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        self.stats.details += 1
        details = self.store.details(request.query.get("activityId", ""), admitted.access_key)
        if details is None:  # as a real account answers an unknown or deleted Id
            return error(500, UNKNOWN_ACTIVITY, "Activity does not exist")
        return web.json_response(details)

    async def _activity_setting(self, request: web.Request) -> web.StreamResponse:
        """"Get Activity Type Details" for the sandbox's event codes."""
        admitted = await self.gate.admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        code = request.query.get("code", "")
        setting = self.catalog.setting(int(code)) if code.isdigit() else None
        if setting is None:
            return error(500, "MXInvalidInputException", f"Activity event {code} does not exist")
        return web.json_response(setting)

    async def _user(self, request: web.Request) -> web.StreamResponse:
        """"UserByAccessKey.Get": the keys' user, naming this region as the account's host."""
        admitted = await self.gate.admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        app = f"app{self.region[3:]}" if self.region.startswith("api") else self.region
        return web.json_response({
            "ID": "5f1c1a52-0000-4000-8000-000000000001", "FirstName": "Sandbox",
            "LastName": "User", "EmailAddress": "sandbox@example.com",
            "Role": "Administrator", "TimeZone": self.time_zone, "OrgShortCode": "10000",
            "LSQCommonServiceURLs": {"api": self.region, "app": app}})

    async def _activity_types(self, request: web.Request) -> web.StreamResponse:
        """"Get List of Activity Types": the types the sandbox lists."""
        admitted = await self.gate.admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        return web.json_response(self.catalog.listed())

    async def _lead_by_email(self, request: web.Request) -> web.StreamResponse:
        """"Get Lead by Email Address": a list with the lead, or an empty list."""
        admitted = await self.gate.admit(request, lookup=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        return web.json_response(self.store.leads_by_email(request.query.get("emailaddress", "")))


async def serve(sandbox: Sandbox, host: str, port: int, announce: Any) -> None:
    """Serve until cancelled (SIGINT/SIGTERM in the CLI); ``announce`` gets the URL."""
    url = await sandbox.start(host, port)
    announce(url)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
