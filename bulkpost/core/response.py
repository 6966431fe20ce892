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

A bulk call's answer, read item by item, is :mod:`bulkpost.core.bulk_response`'s: it applies
these rules to each item, and :func:`classify_not_done` to an answer that is no list of items.
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


def one_line(text: str) -> str:
    """``text`` on one line, its blanks squeezed, cut to the length an error keeps."""
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
    return one_line(said)


def parse_body(body: bytes) -> Any:
    """An answer's JSON document; None when the body is empty or not JSON."""
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def classify(status: int, headers: Mapping[str, str], body: bytes,
             now: datetime | None = None) -> Classified:
    """Decide what one answer to "Post an Activity" means. Pure; never raises."""
    document = parse_body(body)
    payload = document if isinstance(document, dict) else {}
    if 200 <= status < 300 and payload.get("Status") == "Success":
        inner = payload.get("Message")
        activity_id = well_formed_id(inner.get("Id") if isinstance(inner, dict) else None)
        if activity_id:
            return Classified(Verdict.POSTED, status, activity_id=activity_id)
    return classify_not_done(status, headers, body, document, now,
                     "HTTP 200 without a Success status and a well-formed activity Id")


def classify_update(status: int, headers: Mapping[str, str], body: bytes, activity_id: str,
                    now: datetime | None = None) -> Classified:
    """Decide what one answer to "Update an Activity" of ``activity_id`` means. Pure.

    Success is HTTP 2xx with ``"Status": "Success"``; an Id in ``Message`` must be the one
    updated (POSTED carries the Id the answer names, which delivery compares: another Id is
    an answer not understood). Everything else is classified as for a create."""
    document = parse_body(body)
    payload = document if isinstance(document, dict) else {}
    if 200 <= status < 300 and payload.get("Status") == "Success":
        inner = payload.get("Message")
        named = inner.get("Id") if isinstance(inner, dict) else None
        return Classified(Verdict.POSTED, status, activity_id=named.strip()
                          if isinstance(named, str) and named.strip() else activity_id)
    return classify_not_done(status, headers, body, document, now,
                             "HTTP 200 without a Success status")


def classify_read(status: int, headers: Mapping[str, str], body: bytes,
                  now: datetime | None = None) -> tuple[Classified, Any]:
    """Decide what the answer to a look-up means: ``(verdict, parsed JSON)``.

    Success is HTTP 200 with a JSON document that is not an error body; everything else is
    classified as for a create (a look-up creates nothing, so nothing is uncertain).
    """
    document = parse_body(body)
    payload = document if isinstance(document, dict) else {}
    if (status == 200 and document is not None and not payload.get("ExceptionType")
            and payload.get("Status") != "Error" and not rate_limit_said(document, body)):
        return Classified(Verdict.OK, status), document
    verdict = classify_not_done(status, headers, body, document, now,
                                "HTTP 200 with no readable JSON")
    return dataclasses.replace(verdict, uncertain=False), None


def classify_not_done(status: int, headers: Mapping[str, str], body: bytes, document: Any,
                      now: datetime | None, unreadable_200: str) -> Classified:
    """What an answer that does not prove success means (``document``: its parsed body;
    ``unreadable_200``: the reason given to an HTTP 200 that says nothing understood)."""
    payload = document if isinstance(document, dict) else {}
    exception_type = str(payload.get("ExceptionType") or "")
    message = one_line(str(payload.get("ExceptionMessage") or payload.get("Message") or ""))
    return (_rate_limited(status, headers, body, document, exception_type, message, now)
            or _stop(status, headers, exception_type, message)
            or _refusal(status, body, exception_type, message)
            or _failed(status, body, document, message, unreadable_200))


def _rate_limited(status: int, headers: Mapping[str, str], body: bytes, document: Any,
                  exception_type: str, message: str, now: datetime | None) -> Classified | None:
    """Rate limited: a 429, the rate-limit exception, or the sentence alone; else None."""
    # The sentence alone: under any status, but never beside another exception type, nor in
    # an answer that says Success (that one is not understood, never "nothing created").
    success = isinstance(document, dict) and document.get("Status") == "Success"
    said = "" if exception_type or success else rate_limit_said(document, body)
    if status == 429 or exception_type == RATE_LIMIT_TYPE or said:
        return Classified(Verdict.RATE_LIMITED, status,
                          error_type=exception_type or f"HTTP {status}",
                          error=said or message or "rate limit exceeded",
                          retry_after=parse_retry_after(headers.get("Retry-After"), now))
    return None


def _stop(status: int, headers: Mapping[str, str], exception_type: str,
          message: str) -> Classified | None:
    """A fatal answer: the keys, the access, the path or a redirect; else None."""
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
    return None


def unknown_activity(status: int | None, message: str) -> Classified:
    """The activity is missing or deleted in LeadSquared: rejected, with the API's words."""
    return Classified(Verdict.REJECTED, status, error_type=UNKNOWN_ACTIVITY_TYPE,
                      error=f"{MISSING}: {message}" if message else MISSING)


def _refusal(status: int, body: bytes, exception_type: str, message: str) -> Classified | None:
    """A refusal of this request (an ``MX…`` exception, or a 4xx but a timeout); else None."""
    if exception_type == UNKNOWN_ACTIVITY_TYPE:
        return unknown_activity(status, message)
    if exception_type.startswith("MX"):
        return Classified(Verdict.REJECTED, status, error_type=exception_type,
                          error=message or exception_type,
                          uncertain=not proves_refusal(exception_type, status))
    if 400 <= status < 500 and status not in (408, 425):
        return Classified(Verdict.REJECTED, status, error_type=f"HTTP {status}",
                          error=message or one_line(body.decode("utf-8", "replace"))
                          or "no body")
    return None


def _failed(status: int, body: bytes, document: Any, message: str,
            unreadable_200: str) -> Classified:
    """The server took the request and failed somewhere: it may have been carried out."""
    if document is None and body.lstrip()[:1] == b"<":
        reason = "HTML page instead of JSON (gateway error)"
    elif status == 200:
        reason = unreadable_200
    else:
        reason = message or one_line(body.decode("utf-8", "replace")) or "no body"
    return Classified(Verdict.RETRY, status, error_type=f"HTTP {status}", error=reason,
                      uncertain=True)


def transport_failure(kind: str, detail: str, *, uncertain: bool = True) -> Classified:
    """A request that got no HTTP answer: retried; uncertain unless it never left."""
    return Classified(Verdict.RETRY, None, error_type=kind, error=one_line(detail),
                      uncertain=uncertain)


def unreachable(what: str, check: str, *, answered_before: bool) -> Classified:
    """A connection that never opened (``what`` went wrong): nothing was sent. Fatal, with
    what to ``check``, when the host has never answered; else retried."""
    if answered_before:
        return transport_failure("connect error", what, uncertain=False)
    return Classified(Verdict.FATAL, None, error_type="connect error",
                      error=one_line(f"{what} — {check}"))
