"""The sandbox's endpoints that write: Create, the bulk creates, and the two updates.

Owns what each of them does with a call the gate let through: validate (as the API would
answer), store in the :class:`~bulkpost.sandbox.store.ActivityStore` (or update what it
holds), play out a fault that strikes after saving, and answer. Create answers
``{"Status": "Success", "Message": {"Id"}}``; the bulk creates ("Post Bulk Activities on
Leads", by lead Id and by e-mail with ``searchBy=EmailAddress`` and ``SearchByValue``) take
up to 25 items, each validated like a single create, and answer ``{"Response": [{"RowNumber",
"ActivityCreated", "ProspectActivityId" | "ExceptionMessage"}, …]}``; "Update an Activity"
answers ``{"Status": "Success", "Message": {"Id", "IsSuccessful"}}``; "Update Activities in
Bulk" answers as the bulk creates do, with ``IsSuccessful`` (the docs show no answer).
:class:`~bulkpost.sandbox.app.Sandbox` serves them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bulkpost.sandbox import paths
from bulkpost.sandbox.dialect import Dialect
from bulkpost.sandbox.gate import UNKNOWN_ACTIVITY, Admitted, Gate
from bulkpost.sandbox.stats import ServerCounts
from bulkpost.sandbox.store import ActivityStore
from bulkpost.sandbox.validation import (
    Catalog,
    bulk_item,
    bulk_problem,
    create_problem,
    update_problem,
)


def _refusal(problem: str | None, entry: dict[str, Any] | None) -> str:
    """The exception type refusing an update: of an activity the key does not hold
    (unknown, or deleted), the one a look-up of it answers; else a validation error."""
    named = problem is None or problem.startswith("Activity ")
    return UNKNOWN_ACTIVITY if entry is None and named else "MXInvalidInputException"


class WriteEndpoints:
    """The writing endpoints of :class:`~bulkpost.sandbox.app.Sandbox` (its base)."""

    gate: Gate
    store: ActivityStore
    stats: ServerCounts
    dialect: Dialect
    catalog: Catalog

    # -- creating ----------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.StreamResponse:
        called = await self._admitted_json(request)
        if isinstance(called, web.StreamResponse):
            return called
        admitted, body = called
        problem = create_problem(body, self.dialect.typed, self.catalog)
        if problem is not None:
            self.stats.rejected += 1
            return self.gate.refuse(admitted, 500, "MXInvalidInputException", problem)
        activity_id = admitted.fate.new_id()
        self.store.record(admitted.access_key, activity_id, body, admitted.arrived)
        failed = await self.gate.after_saving(request, admitted)
        if failed is not None:
            return failed
        return web.json_response({"Status": "Success", "Message": {"Id": activity_id}})

    async def _bulk(self, request: web.Request) -> web.StreamResponse:
        """"Post Bulk Activities on Leads": by lead Id, or by e-mail (``SearchByValue``)."""
        admitted = await self.gate.admit(request, bulk=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        self.stats.bulk_calls += 1
        by_email = request.path == paths.BULK_BY_LEAD_FIELD
        if by_email and request.query.get("searchBy") != "EmailAddress":
            return self.gate.refuse(admitted, 400, "MXInvalidInputException",
                                    "searchBy must be EmailAddress")
        items = await self._bulk_items(request, admitted)
        if isinstance(items, web.StreamResponse):
            return items
        answers: list[dict[str, Any]] = []
        for number, item in enumerate(items, start=1):
            if not self.gate.live(admitted):  # an item before brought it down: no more
                break
            body = bulk_item(item, by_email)
            problem = create_problem(body, self.dialect.typed, self.catalog)
            if problem is not None:
                self.stats.rejected += 1
                answers.append({"RowNumber": number, "ActivityCreated": False,
                                "ExceptionMessage": problem})
                continue
            activity_id = admitted.fate.new_id()
            self.store.record(admitted.access_key, activity_id, body, admitted.arrived,
                              bulk=True)
            answers.append({"RowNumber": number, "ActivityCreated": True,
                            "ProspectActivityId": activity_id})
        return await self._bulk_answer(request, admitted, answers)

    # -- updating ----------------------------------------------------------------------------
    async def _update(self, request: web.Request) -> web.StreamResponse:
        """"Update an Activity": its note and custom fields."""
        called = await self._admitted_json(request)
        if isinstance(called, web.StreamResponse):
            return called
        admitted, body = called
        entry = self.store.activity(body.get("ProspectActivityId") if isinstance(body, dict)
                                    else None, admitted.access_key)
        problem = update_problem(body, entry, self.dialect.typed, self.catalog)
        if problem is not None or entry is None:
            self.stats.rejected += 1
            return self.gate.refuse(admitted, 500, _refusal(problem, entry),
                                    problem or "Activity does not exist")
        self.store.update(entry, body, admitted.arrived)
        failed = await self.gate.after_saving(request, admitted)
        if failed is not None:
            return failed
        return web.json_response({"Status": "Success",
                                  "Message": {"Id": entry["Id"], "IsSuccessful": True}})

    async def _bulk_update(self, request: web.Request) -> web.StreamResponse:
        """"Update Activities in Bulk": up to 25 updates, each checked like a single one,
        answered ``{"Response": [{"RowNumber", "IsSuccessful", "ProspectActivityId" |
        "ExceptionType", "ExceptionMessage"}, …]}`` (the docs do not show the answer: this is
        the bulk create's shape)."""
        admitted = await self.gate.admit(request, bulk=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        self.stats.bulk_calls += 1
        items = await self._bulk_items(request, admitted)
        if isinstance(items, web.StreamResponse):
            return items
        answers: list[dict[str, Any]] = []
        for number, item in enumerate(items, start=1):
            if not self.gate.live(admitted):  # gone down meanwhile (a watch): no more
                break
            entry = self.store.activity(item.get("ProspectActivityId") if isinstance(
                item, dict) else None, admitted.access_key)
            problem = update_problem(item, entry, self.dialect.typed, self.catalog)
            if problem is not None or entry is None:
                self.stats.rejected += 1
                answers.append({"RowNumber": number, "IsSuccessful": False,
                                "ExceptionType": _refusal(problem, entry),
                                "ExceptionMessage": problem or "Activity does not exist"})
                continue
            self.store.update(entry, item, admitted.arrived, bulk=True)
            answers.append({"RowNumber": number, "IsSuccessful": True,
                            "ProspectActivityId": entry["Id"]})
        return await self._bulk_answer(request, admitted, answers)

    # -- shared ------------------------------------------------------------------------------
    async def _admitted_json(self, request: web.Request
                             ) -> tuple[Admitted, Any] | web.StreamResponse:
        """A single call let through the gate, with its JSON body; or the answer to give
        now (the gate's, or one refusing the body, counted as rejected)."""
        admitted = await self.gate.admit(request)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        if request.content_type != "application/json":
            self.stats.rejected += 1
            return self.gate.refuse(admitted, 400, "MXInvalidRequestException",
                                    "Content-Type must be application/json")
        try:
            return admitted, json.loads(await request.read())
        except ValueError:
            self.stats.rejected += 1
            return self.gate.refuse(admitted, 400, "MXInvalidRequestException",
                                    "The request body is not JSON")

    async def _bulk_items(self, request: web.Request,
                          admitted: Admitted) -> list[Any] | web.StreamResponse:
        """A bulk call's items, or the answer refusing it as a whole."""
        try:
            items = json.loads(await request.read())
        except ValueError:
            return self.gate.refuse(admitted, 400, "MXInvalidRequestException",
                                    "The request body is not JSON")
        problem = bulk_problem(items)
        if problem is not None:
            return self.gate.refuse(admitted, 400, "MXInvalidInputException", problem)
        assert isinstance(items, list)
        return items

    async def _bulk_answer(self, request: web.Request, admitted: Admitted,
                           answers: list[dict[str, Any]]) -> web.StreamResponse:
        """The answer of a bulk call whose items are carried out: a fault that strikes after
        saving, or ``{"Response": answers}`` (only the first half of them: bulk-partial)."""
        if admitted.fault == "bulk-partial":  # items is not empty: at least one answer goes
            self.gate.struck(admitted)
            answers = answers[:len(answers) // 2]
        failed = await self.gate.after_saving(request, admitted)
        if failed is not None:
            return failed
        return web.json_response({"Response": answers})
