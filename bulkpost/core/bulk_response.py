"""What the answer to a bulk call means: the call's verdict, and one outcome per item.

The bulk calls ("…/Bulk/CustomActivity/Add", "Update Activities in Bulk") answer item by
item, in a shape only partly documented, so :func:`classify_bulk` reads it tolerantly and
trusts it no further than it can be trusted:

- the items' list is the document itself or under a known key (``Response``, ``Data``…);
  an answer without one is classified as a single call's
  (:func:`bulkpost.core.response.classify_not_done`);
- entries are matched to items by ``RowNumber`` (1-based), or by position when no entry has
  one and there is one per item; an answer that cannot be matched safely leaves every item
  unknown;
- an item is posted when its entry names a well-formed activity Id (or says "created" beside
  one) and nothing else; rate limited, rejected or not created by its exception and text
  (the rules of :mod:`bulkpost.core.response`); anything contradictory, unproven or missing
  is unknown (None): it may have been created, and is looked up before any re-send. So is an
  item answered twice, or given an Id another item was also given.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bulkpost.core.allowance import RATE_LIMIT_SENTENCE
from bulkpost.core.response import (
    RATE_LIMIT_TYPE,
    UNKNOWN_ACTIVITY_TYPE,
    Classified,
    Verdict,
    classify_not_done,
    one_line,
    parse_body,
    proves_refusal,
    unknown_activity,
    well_formed_id,
)

_ITEM_LISTS = ("Response", "Responses", "Result", "Results", "Data", "Message")
_ITEM_IDS = ("ProspectActivityId", "ProspectActivityID", "ActivityId")


def _items_of(document: Any) -> list[Any] | None:
    """The per-item list of a bulk answer: the document itself, or under a known key."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in _ITEM_LISTS:
            value = document.get(key)
            if isinstance(value, list):
                return value
    return None


def _row_number(value: Any) -> int | None:
    """A ``RowNumber`` as an int: 3, 3.0 and "3" are read; anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 6:
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _indices(entries: list[Any], count: int) -> list[int] | None:
    """Which item each entry answers, or None when the answer cannot be matched safely.

    By ``RowNumber`` (1-based) when entries carry one: then every entry must be an object
    with a valid one, and an answer that leaves items out must name the last item (so it
    cannot be numbered from 0). By position only when no entry has a number and there is
    exactly one object per item: an unnumbered answer that leaves items out cannot say
    which ones it left out.
    """
    if not all(isinstance(entry, dict) for entry in entries):
        return None
    numbers = [entry.get("RowNumber", entry.get("rowNumber")) for entry in entries]
    if all(number is None for number in numbers):
        return list(range(count)) if len(entries) == count else None
    indices = []
    for value in numbers:
        number = _row_number(value)
        if number is None or not 1 <= number <= count:
            return None  # numbered from 0, or nonsense: trust none of it
        indices.append(number - 1)
    if len(set(indices)) < count and count - 1 not in indices:
        return None  # items left out, and nothing proves the numbering starts at 1
    return indices


def _created(entry: dict[str, Any]) -> bool | None:
    """The entry's "created" (for an update: "successful") flag: true/false, "true"/"false"
    or 1/0; None if absent."""
    value = entry.get("ActivityCreated", entry.get("IsCreated", entry.get(
        "Created", entry.get("IsSuccessful"))))
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def _item_verdict(entry: dict[str, Any]) -> Classified | None:
    """One item's outcome; None when the entry does not say for certain (look it up).

    An entry that contradicts itself (an Id or "created" beside an error, a rate limit or
    "not created") is not believed either way.
    """
    created = _created(entry)
    activity_id = _item_id(entry, created)
    if activity_id is None:
        return None  # an Id that is not one proves nothing: the look-up will say
    exception_type = str(entry.get("ExceptionType") or "")
    reason = one_line(str(entry.get("ExceptionMessage") or ""))
    if activity_id or created is True:
        if exception_type or reason or created is False or not activity_id:
            return None  # contradictory, or created without an Id: the look-up will say
        return Classified(Verdict.POSTED, 200, activity_id=activity_id)
    return _item_not_created(created, exception_type, reason)


def _item_id(entry: dict[str, Any], created: bool | None) -> str | None:
    """The activity Id an entry names ("" for none); None when one it names is no Id."""
    ids = [entry[k] for k in _ITEM_IDS if isinstance(entry.get(k), str)]
    if created is True and isinstance(entry.get("Id"), str):
        ids.append(entry["Id"])  # a bare "Id" only beside an explicit "created"
    if any(i.strip() and not well_formed_id(i) for i in ids):
        return None
    return next((i for i in ids if i), "")


def _item_not_created(created: bool | None, exception_type: str,
                      reason: str) -> Classified | None:
    """The outcome of an entry that names no activity: rate limited, refused, or not created
    without a reason; None when that is not certain (look it up)."""
    if exception_type == RATE_LIMIT_TYPE or (not exception_type
                                             and RATE_LIMIT_SENTENCE.search(reason)):
        return Classified(Verdict.RATE_LIMITED, 200, error_type=exception_type or "item error",
                          error=reason or "rate limit exceeded")
    if exception_type == UNKNOWN_ACTIVITY_TYPE:
        return unknown_activity(200, reason)
    if exception_type.startswith("MX") and not proves_refusal(exception_type, None):
        return None  # a refusal not proven: the item may have been created; look it up
    if created is False or exception_type.startswith("MX"):
        return _refused_item(exception_type, reason)
    return None  # a message alone, or nothing: look it up


def _refused_item(exception_type: str, reason: str) -> Classified:
    """An item said not created, or refused with a proven ``MX…`` exception: rejected with
    its reason; retried when it was said not created without one."""
    if exception_type.startswith("MX") or reason:
        return Classified(Verdict.REJECTED, 200, error_type=exception_type or "item error",
                          error=reason or exception_type)
    # Said not created, and why not: nothing. Safe to send again.
    return Classified(Verdict.RETRY, 200, error_type="item not created",
                      error="the bulk answer says the item was not created, without a reason")


def classify_bulk(status: int, headers: Mapping[str, str], body: bytes, count: int,
                  now: datetime | None = None) -> tuple[Classified, list[Classified | None]]:
    """Decide what the answer to a bulk call of ``count`` items means. Pure; never raises.

    Returns the call's verdict and, when the call was answered item by item (verdict OK),
    one outcome per item in request order. The response's shape is only partly documented,
    so it is read tolerantly but never trusted further than it can be: an item the answer
    does not account for, accounts for twice, or answers with an Id another item was also
    given, is None: it may have been created, and is looked up before any re-send. An
    answer whose entries cannot be matched to items safely leaves every item None.
    """
    document = parse_body(body)
    entries = _items_of(document) if 200 <= status < 300 else None
    payload = document if isinstance(document, dict) else {}
    if entries is None or payload.get("ExceptionType") or payload.get("Status") == "Error":
        return classify_not_done(status, headers, body, document, now,
                                 "HTTP 200 without a readable list of items"), []
    outcomes: list[Classified | None] = [None] * count
    indices = _indices(entries, count)
    if indices is None:
        return Classified(Verdict.OK, status), outcomes
    seen = [0] * count
    for index, entry in zip(indices, entries, strict=True):
        seen[index] += 1
        outcomes[index] = _item_verdict(entry)
    _forget_doubles(outcomes, seen)
    return Classified(Verdict.OK, status), outcomes


def _forget_doubles(outcomes: list[Classified | None], seen: list[int]) -> None:
    """Two answers for one item (``seen`` twice), or one Id for two: neither is believed."""
    holders: dict[str, int] = {}
    for outcome in outcomes:
        if outcome is not None and outcome.activity_id:
            holders[outcome.activity_id] = holders.get(outcome.activity_id, 0) + 1
    for index, outcome in enumerate(outcomes):
        if seen[index] > 1 or (outcome is not None and holders.get(outcome.activity_id, 0) > 1):
            outcomes[index] = None
