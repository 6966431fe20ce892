"""A lead's activities read page by page, the calls every look-up makes.

Owns the two calls: the lead found by its e-mail address when the row names it so, and one
page of "Get Activities of a Lead", both under the run's rate limit with its retries
(:meth:`~bulkpost.delivery.calls.ApiCalls.lookup`). A page is counted as a look-up, or, read
to learn how the account answers, as calibration; an answer not understood is
:class:`~bulkpost.delivery.calls.LookupFailed` with its shape, never a guess.
"""

from __future__ import annotations

import functools

from bulkpost.core.reconcile import PAGE_SIZE, Fingerprint, Page, parse_activities
from bulkpost.delivery.calls import ApiCalls, LookupFailed
from bulkpost.delivery.client import LeadSquaredClient


class LeadPageReader:
    """Reads leads and their pages of activities for the run's look-ups."""

    def __init__(self, calls: ApiCalls, client: LeadSquaredClient) -> None:
        self._calls = calls
        self._counts = calls.counts
        self._client = client

    async def lead_of(self, row: Fingerprint) -> str:
        if row.lead_id is not None:
            return row.lead_id
        assert row.email is not None
        leads = await self._calls.lookup(lambda: self._client.lead_by_email(row.email or ""))
        if not isinstance(leads, list) or not leads or not isinstance(leads[0], dict):
            raise LookupFailed(f"no lead has the e-mail address {row.email!r} (yet)")
        lead_id = str(leads[0].get("ProspectID") or leads[0].get("ProspectId") or "")
        if not lead_id:
            raise LookupFailed("the lead found by e-mail has no ProspectID")
        return lead_id

    async def page(self, lead_id: str, event: int, offset: int, count: int = PAGE_SIZE, *,
                   learning: bool = False) -> Page:
        """One page of "Get Activities of a Lead"; LookupFailed when not understood.
        ``learning``: read to learn how the account answers (counted apart)."""
        if learning:
            self._counts.calibration_calls += 1
        else:
            self._counts.lookup_calls += 1
        document = await self._calls.lookup(functools.partial(
            self._client.retrieve_activities, lead_id, event, offset, count))
        page = parse_activities(document)
        if page is None:
            shape = (f"an object with {', '.join(sorted(map(str, document))[:8])}"
                     if isinstance(document, dict) else type(document).__name__)
            raise LookupFailed(f"the look-up's answer is not understood ({shape})")
        return page
