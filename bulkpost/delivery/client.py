"""The HTTP side: one aiohttp session per run, keys in headers, one call per activity.

Owns the connection to LeadSquared (Create, bulk Create, and the look-ups: "Get Activities
of a Lead" and "Get Lead by Email Address" for reconciliation, "Get Activity Type Details"
for the preflight, "Get Custom Fields of an Activity" for reading back what was stored,
"UserByAccessKey.Get" for the keys' region, "Get List of Activity Types" for ``types``):
the host check (``https://`` required, except for loopback), the credentials (sent only as
``x-LSQ-AccessKey``/``x-LSQ-SecretKey`` headers, never in a URL, so aiohttp's exception
texts, which quote URLs, cannot carry them), explicit timeouts, and turning transport
failures into :class:`Classified` answers. A connection that does not open is said in plain
words, with the host tried: refused, a name that does not resolve, ``https://`` to a server
that speaks plain HTTP.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import ssl
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bulkpost.core.bulk_response import classify_bulk
from bulkpost.core.credentials import Credentials
from bulkpost.core.hosts import host_url
from bulkpost.core.response import (
    Classified,
    classify,
    classify_read,
    classify_update,
    transport_failure,
    unreachable,
)
from bulkpost.errors import HOST, Given, UsageError

CREATE_PATH = "/v2/ProspectActivity.svc/Create"
RETRIEVE_PATH = "/v2/ProspectActivity.svc/Retrieve"
LEAD_BY_EMAIL_PATH = "/v2/LeadManagement.svc/Leads.GetByEmailaddress"
ACTIVITY_SETTING_PATH = "/v2/ProspectActivity.svc/CustomActivity/GetActivitySetting"
BULK_BY_ID_PATH = "/v2/ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadId"
BULK_BY_FIELD_PATH = "/v2/ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadField"
ACTIVITY_DETAILS_PATH = "/v2/ProspectActivity.svc/GetActivityDetails"
UPDATE_PATH = "/v2/ProspectActivity.svc/CustomActivity/Update"
BULK_UPDATE_PATH = "/v2/ProspectActivity.svc/Bulk/CustomActivity/Update"
USER_BY_ACCESS_KEY_PATH = "/v2/Authentication.svc/UserByAccessKey.Get"
ACTIVITY_TYPES_PATH = "/v2/ProspectActivity.svc/ActivityTypes.Get"


def is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def check_host(host: str) -> str:
    """Validate ``--host`` and return it as a URL without a trailing slash.

    A bare name (``api-in21.leadsquared.com``, as the README lists the regions) means
    ``https://`` that name.
    """
    parts = urlsplit(host_url(host.strip()))
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError("{host}: expected a host such as api-in21.leadsquared.com or "
                         "https://api-in21.leadsquared.com", host=Given(HOST, host))
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError("{host}: https:// is required (http:// only for loopback)",
                         host=Given(HOST, host))
    if parts.query or parts.fragment:
        raise UsageError("{host}: give the host only, no query string", host=Given(HOST, host))
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


# What OpenSSL says when its hello is answered in plain text (an HTTP server's 400 page).
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG",
                      "RECORD_LAYER_FAILURE"})


def cannot_connect(base: str, error: OSError) -> tuple[str, str]:
    """Why no connection to ``base`` opened, in plain words, and what to check."""
    parts = urlsplit(base)
    name = parts.hostname or base
    check = "is the host right?"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"cannot connect to {base}: its TLS certificate is not valid "
                f"({error.verify_message or error.reason})", check)
    if isinstance(error, ssl.SSLError):
        if error.reason in _NOT_TLS:
            if is_loopback(name):
                netloc = parts.netloc if parts.port else f"{parts.netloc}:443"
                check = f"use {urlunsplit(('http', netloc, parts.path, '', ''))}"
            else:
                check = "are the host and its port right?"
            return f"the server at {base} does not speak HTTPS (plain HTTP?)", check
        return (f"cannot connect to {base}: the TLS handshake failed ({error.reason or error})",
                check)
    if isinstance(error, socket.gaierror):
        if error.errno == socket.EAI_AGAIN:
            return (f"cannot connect to {base}: the name {name} cannot be resolved now "
                    "(temporary failure in name resolution)",
                    "is the network up, and is the host right?")
        return f"cannot connect to {base}: the name {name} does not resolve", check
    if isinstance(error, ConnectionRefusedError):
        return f"cannot connect to {base}: connection refused", check
    reason = error.strerror or str(error) or type(error).__name__
    return (f"cannot connect to {base}: {reason[:1].lower()}{reason[1:]}",
            "is the network up, and is the host right?")


# No real answer comes near this (a page of 25 activities is tens of kB): a larger one is
# not read, so that a broken proxy or server cannot take the process's memory.
MAX_ANSWER_BYTES = 16 * 2**20


class _AnswerTooLarge(Exception):
    """An answer longer than :data:`MAX_ANSWER_BYTES`."""


async def _read_capped(response: aiohttp.ClientResponse) -> bytes | None:
    """The answer's body, or None when it is longer than :data:`MAX_ANSWER_BYTES` (not read
    past that)."""
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(2**16):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class LeadSquaredClient:
    """Posts activities; use as ``async with LeadSquaredClient(...) as client``."""

    def __init__(self, host: str, credentials: Credentials, *, timeout: float = 30.0,
                 connections: int = 20) -> None:
        self.base = check_host(host)
        self.credentials = credentials
        self.timeout = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        # Until the host answers once, a connection that cannot be opened means a wrong or
        # unreachable host: fatal at once (response.unreachable), not retried for seconds.
        self._answered = False

    async def __aenter__(self) -> LeadSquaredClient:
        self._session = aiohttp.ClientSession(
            headers={
                "x-LSQ-AccessKey": self.credentials.access_key,
                "x-LSQ-SecretKey": self.credentials.secret_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(10.0, self.timeout)),
            connector=aiohttp.TCPConnector(limit=self._connections),
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, *, body: bytes | None = None,
                    params: dict[str, str] | None = None, read: bool = False,
                    items: int = 0, update_of: str = "",
                    refusal: bool = False) -> tuple[Classified, Any]:
        """One request, classified. Never raises for I/O: failures become RETRY answers.

        ``read``: a look-up (the parsed document comes back); ``items``: a bulk call of that
        many items (their outcomes come back); ``update_of``: an update of that activity;
        ``refusal``: a look-up refused with 401 brings back the refusal's text (scrubbed)."""
        assert self._session is not None, "use the client as an async context manager"
        try:
            # No redirects: they would carry the key headers to whatever host they name.
            async with self._session.request(method, self.base + path, data=body,
                                             params=params, allow_redirects=False) as response:
                self._answered = True
                raw = await _read_capped(response)
                if raw is None:
                    raise _AnswerTooLarge
                if items:
                    return classify_bulk(response.status, response.headers, raw, items)
                if read:
                    answer, document = classify_read(response.status, response.headers, raw)
                    if refusal and answer.http_status == 401:
                        document = self.credentials.scrub(raw[:4000].decode("utf-8", "replace"))
                    return answer, document
                if update_of:
                    return classify_update(response.status, response.headers, raw,
                                           update_of), None
                return classify(response.status, response.headers, raw), None
        except _AnswerTooLarge:
            # Read no further: the request arrived, so a create may have been carried out.
            failure = transport_failure("answer too large", f"an answer of over "
                                        f"{MAX_ANSWER_BYTES // 2**20} MiB was not read")
        except TimeoutError:
            failure = transport_failure("timeout", f"no answer within {self.timeout:g} s")
        except aiohttp.ClientConnectorError as exc:
            # The connection never opened: the request certainly did not arrive.
            what, check = cannot_connect(self.base, exc.os_error)
            failure = unreachable(self.credentials.scrub(what), check,
                                  answered_before=self._answered)
        except aiohttp.ServerDisconnectedError:
            failure = transport_failure("disconnected", "the server closed the connection")
        except aiohttp.ClientPayloadError as exc:
            failure = transport_failure("payload error", self.credentials.scrub(str(exc)))
        except (aiohttp.ClientError, OSError) as exc:
            failure = transport_failure(type(exc).__name__, self.credentials.scrub(str(exc)))
        if read:
            failure = dataclasses.replace(failure, uncertain=False)
        return failure, None

    async def post_activity(self, body: bytes) -> Classified:
        """Post one activity ("Post an Activity on a Lead")."""
        answer, _ = await self._call("POST", CREATE_PATH, body=body)
        return answer

    async def post_bulk(self, body: bytes, items: int,
                        by_email: bool) -> tuple[Classified, list[Classified | None]]:
        """Post up to 25 activities in one call ("Post Bulk Activities on Leads").

        Returns the call's verdict (OK when answered item by item) and each item's outcome
        (None: not accounted for). ``by_email``: the items carry ``SearchByValue``."""
        path, params = ((BULK_BY_FIELD_PATH, {"searchBy": "EmailAddress"}) if by_email
                        else (BULK_BY_ID_PATH, None))
        answer, outcomes = await self._call("POST", path, body=body, params=params, items=items)
        return answer, outcomes or []

    async def update_activity(self, body: bytes, activity_id: str) -> Classified:
        """Update one activity's note and custom fields ("Update an Activity")."""
        answer, _ = await self._call("POST", UPDATE_PATH, body=body, update_of=activity_id)
        return answer

    async def update_bulk(self, body: bytes, activity_ids: list[str]
                          ) -> tuple[Classified, list[Classified | None]]:
        """Update up to 25 activities in one call ("Update Activities in Bulk"); as
        :meth:`post_bulk`. An item answered with another activity's Id than the one it
        updates is not accounted for (None)."""
        answer, outcomes = await self._call("POST", BULK_UPDATE_PATH, body=body,
                                            items=len(activity_ids))
        if not outcomes:  # not answered item by item
            return answer, []
        return answer, [None if outcome is not None and outcome.activity_id
                        and outcome.activity_id != activity_id else outcome
                        for outcome, activity_id in zip(outcomes, activity_ids, strict=True)]

    async def retrieve_activities(self, lead_id: str, event: int, offset: int,
                                  count: int = 25) -> tuple[Classified, Any]:
        """One page of "Get Activities of a Lead" for one event code, newest first."""
        query = {"Parameter": {"ActivityEvent": event},
                 "Paging": {"Offset": str(offset), "RowCount": str(count)}}
        return await self._call("POST", RETRIEVE_PATH, params={"leadId": lead_id},
                                body=json.dumps(query).encode(), read=True)

    async def activity_setting(self, code: int) -> tuple[Classified, Any]:
        """"Get Activity Type Details": the type's custom fields and their rules."""
        return await self._call("GET", ACTIVITY_SETTING_PATH, params={"code": str(code)},
                                read=True)

    async def activity_details(self, activity_id: str) -> tuple[Classified, Any]:
        """"Get Custom Fields of an Activity": one activity's type and field values."""
        return await self._call("GET", ACTIVITY_DETAILS_PATH,
                                params={"activityId": activity_id}, read=True)

    async def user_by_access_key(self) -> tuple[Classified, Any]:
        """"UserByAccessKey.Get": the keys' user, with its account's API host. Refused (401),
        the document is the refusal's text, which may name the keys' region."""
        return await self._call("GET", USER_BY_ACCESS_KEY_PATH, read=True, refusal=True)

    async def activity_types(self) -> tuple[Classified, Any]:
        """"Get List of Activity Types": the account's activity types and their fields."""
        return await self._call("GET", ACTIVITY_TYPES_PATH, read=True)

    async def lead_by_email(self, email: str) -> tuple[Classified, Any]:
        """"Get Lead by Email Address": a list of matching leads."""
        return await self._call("GET", LEAD_BY_EMAIL_PATH, params={"emailaddress": email},
                                read=True)
