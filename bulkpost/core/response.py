"""Every response policy in one pure function: what an answer from the API means.

``classify`` turns (HTTP status, headers, body) into a :class:`Verdict` that says what the
worker does next. The rules, from our API notes:

- posted: ``"Status": "Success"`` with a ``Message.Id``. HTTP 200 alone proves nothing.
- rate limited: HTTP 429, or ``MXAPIRateLimitExceededException`` under any status, or the
  rate-limit sentence ("API calls exceeded the limit of 10 in 5 second(s)") under any status
  without an exception type: in a JSON body's ``ExceptionMessage`` or ``Message``, or as a
  plain-text body (real accounts answered it under 403 and 200; :func:`rate_limit_said`).
  Nothing was created. All workers pause (``Retry-After`` honoured when sent), then the row
  is retried. A body naming another exception type is that exception, whatever its text.
- rejected: a 4xx that is not about keys or the URL, or an ``MX…`` exception that proves a
  refusal (:func:`proves_refusal`: any under a 4xx; under a 5xx or a 200 only the
  validation family, ``MXInvalid…Exception``, as seen answering invalid input, and an
  unknown or deleted activity: ``MXUnknownProspectActivityException``, its error saying the
  activity is missing or deleted). The API refused this row; retrying cannot help. Any other
  ``MX…`` exception under a 5xx or a 200 is a refusal *not proven* (``uncertain``): the
  server may have failed after saving (the sandbox's ``mx-after``), so the row is looked
  up before it is called refused, and never sent again on the strength of it.
- retry: a 5xx without an MX type, an HTML gateway page, an unreadable 200, a timeout or a
  reset. Backed off and retried; all but a connection that never opened are *uncertain*:
  the activity may have been created, so the row is reconciled before it is sent again.
- fatal: 401 (keys, or the wrong regional host), 403 without the rate-limit sentence (no
  access to this API), 404 (wrong
  URL) and any redirect (never followed: it would carry the keys elsewhere): stop the run.
  So is a connection that cannot be opened before the host has ever answered (refused, a
  name that does not resolve, ``https://`` to a plain-HTTP server): the host is wrong or
  out of reach, and backing off would only delay saying so. Once it has answered, the same
  failure is a passing one: retried, and certain (nothing was sent).
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bulkpost.core.allowance import RATE_LIMIT_SENTENCE
from bulkpost.core.hosts import described, named_host


class Verdict(enum.Enum):
    POSTED = "posted"
    RATE_LIMITED = "rate_limited"
    REJECTED = "rejected"
    RETRY = "retry"
    FATAL = "fatal"
    OK = "ok"  # a look-up answered


@dataclass(frozen=True, slots=True)
class Classified:
    """What a response means, with what the results file records of it."""

    verdict: Verdict
    http_status: int | None = None
    activity_id: str = ""
    error_type: str = ""
    error: str = ""
    retry_after: float | None = None  # seconds, when the server said so
    uncertain: bool = False  # a retry, or a refusal, whose request may have been carried out


RATE_LIMIT_TYPE = "MXAPIRateLimitExceededException"
UNKNOWN_ACTIVITY_TYPE = "MXUnknownProspectActivityException"
MAX_RETRY_AFTER = 3600.0  # a longer wait is a spent quota, not a pause
MISSING = "the activity is missing or deleted in LeadSquared"  # an unknown activity's error
_MAX_ERROR_TEXT = 500
_MAX_SEARCHED = 4096  # of a plain-text body, the bytes searched for the rate-limit sentence


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_MAX_ERROR_TEXT]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "inf", "nan" and "1e400" parse as floats but are no wait time.
        return min(MAX_RETRY_AFTER, max(0.0, seconds)) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


# What an activity Id looks like: a GUID on every answer seen; any word of letters, digits,
# "-" and "_" is taken. Blank, spaced, multi-line or huge is no Id: it proves no create.
_WELL_FORMED_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")


def well_formed_id(value: object) -> str:
    """``value`` when it is a well-formed activity Id, else ""."""
    return value if isinstance(value, str) and _WELL_FORMED_ID.fullmatch(value) else ""


def proves_refusal(exception_type: str, status: int | None) -> bool:
    """Whether an ``MX…`` exception answered with ``status`` proves that nothing was done.

    Any 4xx does. Under a 5xx or a 200, only what evidence shows answering a request that
    could not be carried out: the validation family (``MXInvalidInputException`` and its
    kin, ``MXInvalid…Exception``) and an unknown or deleted activity. Anything else may
    come after the request was carried out."""
    if status is not None and 400 <= status < 500:
        return True
    return ((exception_type.startswith("MXInvalid") and exception_type.endswith("Exception"))
            or exception_type == UNKNOWN_ACTIVITY_TYPE)


def rate_limit_said(document: Any, body: bytes) -> str:
    """The text of an answer that carries the rate-limit sentence ("…exceeded the limit of
    N in T second(s)"), on one line; "" when it does not.

    Looked for where an error's text is: a JSON object's ``ExceptionMessage`` or ``Message``
    (never inside the data of an answer), a JSON string, or a body that is not JSON at all
    (plain text). Whether the answer names an exception type is the caller's to weigh."""
    if isinstance(document, dict):
        texts = [document.get("ExceptionMessage"), document.get("Message")]
    elif isinstance(document, str):
        texts = [document]
    elif document is None:
        texts = [body[:_MAX_SEARCHED].decode("utf-8", "replace")]
    else:
        return ""
    said = next((t for t in texts if isinstance(t, str) and RATE_LIMIT_SENTENCE.search(t)), "")
    return _one_line(said)


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def classify(status: int, headers: Mapping[str, str], body: bytes,
             now: datetime | None = None) -> Classified:
    """Decide what one answer to "Post an Activity" means. Pure; never raises."""
    document = _parse(body)
    payload = document if isinstance(document, dict) else {}
    if 200 <= status < 300 and payload.get("Status") == "Success":
        inner = payload.get("Message")
        activity_id = well_formed_id(inner.get("Id") if isinstance(inner, dict) else None)
        if activity_id:
            return Classified(Verdict.POSTED, status, activity_id=activity_id)
    return _not_done(status, headers, body, document, now,
                     "HTTP 200 without a Success status and a well-formed activity Id")


def classify_update(status: int, headers: Mapping[str, str], body: bytes, activity_id: str,
                    now: datetime | None = None) -> Classified:
    """Decide what one answer to "Update an Activity" of ``activity_id`` means. Pure.

    Success is HTTP 2xx with ``"Status": "Success"``; an Id in ``Message`` must be the one
    updated (POSTED carries the Id the answer names, which delivery compares: another Id is
    an answer not understood). Everything else is classified as for a create."""
    document = _parse(body)
    payload = document if isinstance(document, dict) else {}
    if 200 <= status < 300 and payload.get("Status") == "Success":
        inner = payload.get("Message")
        named = inner.get("Id") if isinstance(inner, dict) else None
        return Classified(Verdict.POSTED, status, activity_id=named.strip()
                          if isinstance(named, str) and named.strip() else activity_id)
    return _not_done(status, headers, body, document, now, "HTTP 200 without a Success status")


def classify_read(status: int, headers: Mapping[str, str], body: bytes,
                  now: datetime | None = None) -> tuple[Classified, Any]:
    """Decide what the answer to a look-up means: ``(verdict, parsed JSON)``.

    Success is HTTP 200 with a JSON document that is not an error body; everything else is
    classified as for a create (a look-up creates nothing, so nothing is uncertain).
    """
    document = _parse(body)
    payload = document if isinstance(document, dict) else {}
    if (status == 200 and document is not None and not payload.get("ExceptionType")
            and payload.get("Status") != "Error" and not rate_limit_said(document, body)):
        return Classified(Verdict.OK, status), document
    verdict = _not_done(status, headers, body, document, now, "HTTP 200 with no readable JSON")
    return dataclasses.replace(verdict, uncertain=False), None


def _not_done(status: int, headers: Mapping[str, str], body: bytes, document: Any,
              now: datetime | None, unreadable_200: str) -> Classified:
    payload = document if isinstance(document, dict) else {}
    exception_type = str(payload.get("ExceptionType") or "")
    message = _one_line(str(payload.get("ExceptionMessage") or payload.get("Message") or ""))
    # The sentence alone: under any status, but never beside another exception type, nor in
    # an answer that says Success (that one is not understood, never "nothing created").
    said = "" if exception_type or payload.get("Status") == "Success" else rate_limit_said(
        document, body)
    if status == 429 or exception_type == RATE_LIMIT_TYPE or said:
        return Classified(Verdict.RATE_LIMITED, status,
                          error_type=exception_type or f"HTTP {status}",
                          error=said or message or "rate limit exceeded",
                          retry_after=parse_retry_after(headers.get("Retry-After"), now))
    if status == 401:
        home = named_host(message)
        if home is not None:  # the wrong region, and its answer names the right one
            return Classified(Verdict.FATAL, status, error_type=exception_type or "HTTP 401",
                              error=f"the API refused the keys (401) and says they belong to "
                                    f"{described(home)}: use --host {home}, or leave --host "
                                    "out to find the host from the keys")
        return Classified(Verdict.FATAL, status, error_type=exception_type or "HTTP 401",
                          error="the API refused the keys (401): check LSQ_ACCESS_KEY, "
                                "LSQ_SECRET_KEY and that --host is your account's region")
    if status == 403:
        return Classified(Verdict.FATAL, status, error_type=exception_type or "HTTP 403",
                          error="the API refused access (403): check that the keys' user may "
                                "use this API and that the account's plan includes it")
    if status == 404:
        return Classified(Verdict.FATAL, status, error_type=exception_type or "HTTP 404",
                          error="the API path was not found (404): check --host")
    if 300 <= status < 400:
        # Never followed: a redirect would carry the keys to another host.
        location = headers.get("Location", "")
        return Classified(Verdict.FATAL, status, error_type=f"HTTP {status}",
                          error=f"the API answered with a redirect to {location!r}, which "
                                "bulkpost does not follow: check --host")
    if exception_type == UNKNOWN_ACTIVITY_TYPE:
        return Classified(Verdict.REJECTED, status, error_type=exception_type,
                          error=f"{MISSING}: {message}" if message else MISSING)
    if exception_type.startswith("MX"):
        return Classified(Verdict.REJECTED, status, error_type=exception_type,
                          error=message or exception_type,
                          uncertain=not proves_refusal(exception_type, status))
    if 400 <= status < 500 and status not in (408, 425):
        return Classified(Verdict.REJECTED, status, error_type=f"HTTP {status}",
                          error=message or _one_line(body.decode("utf-8", "replace"))
                          or "no body")
    if document is None and body.lstrip()[:1] == b"<":
        reason = "HTML page instead of JSON (gateway error)"
    elif status == 200:
        reason = unreadable_200
    else:
        reason = message or _one_line(body.decode("utf-8", "replace")) or "no body"
    # The server took the request and failed somewhere: it may have been carried out.
    return Classified(Verdict.RETRY, status, error_type=f"HTTP {status}", error=reason,
                      uncertain=True)


def transport_failure(kind: str, detail: str, *, uncertain: bool = True) -> Classified:
    """A request that got no HTTP answer: retried; uncertain unless it never left."""
    return Classified(Verdict.RETRY, None, error_type=kind, error=_one_line(detail),
                      uncertain=uncertain)


def unreachable(what: str, check: str, *, answered_before: bool) -> Classified:
    """A connection that never opened (``what`` went wrong): nothing was sent. Fatal, with
    what to ``check``, when the host has never answered; else retried."""
    if answered_before:
        return transport_failure("connect error", what, uncertain=False)
    return Classified(Verdict.FATAL, None, error_type="connect error",
                      error=_one_line(f"{what} — {check}"))


# -- bulk calls ----------------------------------------------------------------------------
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
    ids = [entry[k] for k in _ITEM_IDS if isinstance(entry.get(k), str)]
    if created is True and isinstance(entry.get("Id"), str):
        ids.append(entry["Id"])  # a bare "Id" only beside an explicit "created"
    if any(i.strip() and not well_formed_id(i) for i in ids):
        return None  # an Id that is not one proves nothing: the look-up will say
    activity_id = next((i for i in ids if i), "")
    exception_type = str(entry.get("ExceptionType") or "")
    reason = _one_line(str(entry.get("ExceptionMessage") or ""))
    if activity_id or created is True:
        if exception_type or reason or created is False or not activity_id:
            return None  # contradictory, or created without an Id: the look-up will say
        return Classified(Verdict.POSTED, 200, activity_id=activity_id)
    if exception_type == RATE_LIMIT_TYPE or (not exception_type
                                             and RATE_LIMIT_SENTENCE.search(reason)):
        return Classified(Verdict.RATE_LIMITED, 200, error_type=exception_type or "item error",
                          error=reason or "rate limit exceeded")
    if exception_type == UNKNOWN_ACTIVITY_TYPE:
        return Classified(Verdict.REJECTED, 200, error_type=exception_type,
                          error=f"{MISSING}: {reason}" if reason else MISSING)
    if exception_type.startswith("MX") and not proves_refusal(exception_type, None):
        return None  # a refusal not proven: the item may have been created; look it up
    if created is False or exception_type.startswith("MX"):
        if exception_type.startswith("MX") or reason:
            return Classified(Verdict.REJECTED, 200, error_type=exception_type or "item error",
                              error=reason or exception_type)
        # Said not created, and why not: nothing. Safe to send again.
        return Classified(Verdict.RETRY, 200, error_type="item not created",
                          error="the bulk answer says the item was not created, "
                                "without a reason")
    return None  # a message alone, or nothing: look it up


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
    document = _parse(body)
    entries = _items_of(document) if 200 <= status < 300 else None
    payload = document if isinstance(document, dict) else {}
    if entries is None or payload.get("ExceptionType") or payload.get("Status") == "Error":
        return _not_done(status, headers, body, document, now,
                         "HTTP 200 without a readable list of items"), []
    outcomes: list[Classified | None] = [None] * count
    indices = _indices(entries, count)
    if indices is None:
        return Classified(Verdict.OK, status), outcomes
    seen = [0] * count
    for index, entry in zip(indices, entries, strict=True):
        seen[index] += 1
        outcomes[index] = _item_verdict(entry)
    holders: dict[str, int] = {}
    for outcome in outcomes:
        if outcome is not None and outcome.activity_id:
            holders[outcome.activity_id] = holders.get(outcome.activity_id, 0) + 1
    for index, outcome in enumerate(outcomes):
        if seen[index] > 1 or (outcome is not None and holders.get(outcome.activity_id, 0) > 1):
            outcomes[index] = None  # two answers for one item, or one Id for two: neither
    return Classified(Verdict.OK, status), outcomes
