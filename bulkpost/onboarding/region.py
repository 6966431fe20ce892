"""The account's regional API host: given, cached, or found from the keys.

Owns finding the host when ``--host`` (or ``LSQ_HOST``) is not given. LeadSquared serves each
account from one regional host (the API notes: ``api.leadsquared.com`` Singapore, then
``api-us11``, ``api-in21``, ``api-in22``, ``api-ir31``, ``api-ca12``); a call to another
region answers 401. :func:`find_host` asks "UserByAccessKey.Get" of those hosts, in that
order, through the call layer (:class:`~bulkpost.delivery.calls.ApiCalls`, under a rate limit):

- an answer names the account's host in ``LSQCommonServiceURLs.api`` (read tolerantly: the
  object itself, or under ``d``); that host is used only if it is a documented one, and an
  answer that names none fails closed;
- a 401 whose message names a documented host sends the next question there (and says so);
  a 401 that names none, or any other failure, moves on to the next host;
- when no host accepts the keys, a :class:`~bulkpost.errors.UsageError` names the hosts
  tried. Messages carry host names and the API's own words, never the keys.

What was found is kept in a per-user cache, ``hosts.json`` in the user's cache directory
(``platformdirs``: ``$XDG_CACHE_HOME/bulkpost``, by default ``~/.cache/bulkpost``, on Linux;
``~/Library/Caches/bulkpost`` on macOS; ``%LOCALAPPDATA%\\bulkpost\\Cache`` on Windows),
keyed by a hash of the access key, never the key:
``{"version": 1, "hosts": {"<sha256 hex>": {"host": NAME, "found_at": ISO}}}``. A cached host
is used without a request (the command's own first call proves it); a command whose cached
host then refuses the keys asks :func:`host_again` for the host found afresh, once.

Only documented names are ever asked. Tests stand loopback sandboxes in for them with
``BULKPOST_REGION_URLS`` (a JSON object: documented name → ``http://127.0.0.1:PORT``);
a stand-in must be a loopback URL, so the keys still go nowhere else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
import structlog

from bulkpost.core.allowance import RateSpec
from bulkpost.core.credentials import Credentials
from bulkpost.core.hosts import REGIONS, host_url, named_host
from bulkpost.core.response import Classified, Verdict
from bulkpost.delivery.calls import ApiCalls, DeliverySettings, Stopped
from bulkpost.delivery.client import LeadSquaredClient, check_host, is_loopback
from bulkpost.delivery.ratelimit import RateLimit
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import UsageError

log = structlog.get_logger("bulkpost")

URLS_ENV = "BULKPOST_REGION_URLS"
CACHE_VERSION = 1
# Per host, for answers that may be tried again (5xx, timeouts). With find_host's 10 s for
# one answer, a network that drops every packet is given up on within two minutes.
_ATTEMPTS = 2


def _get(document: Any, key: str) -> Any:
    """``document[key]``, the key in any case; None when absent or not an object."""
    if not isinstance(document, dict):
        return None
    if key in document:
        return document[key]
    wanted = key.casefold()
    return next((value for name, value in document.items()
                 if isinstance(name, str) and name.casefold() == wanted), None)


def api_host(document: Any) -> str | None:
    """The host name in a "UserByAccessKey.Get" answer's ``LSQCommonServiceURLs.api``.

    Tolerant: the user object, a list holding it, or either under ``d``; the value a name or
    a URL (``https://api-in21.leadsquared.com/``). None when the answer names no host."""
    if isinstance(document, list):
        document = next((item for item in document if isinstance(item, dict)), None)
    urls = _get(document, "LSQCommonServiceURLs")
    if urls is None:
        urls = _get(_get(document, "d"), "LSQCommonServiceURLs")
    value = _get(urls, "api")
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    hostname = urlsplit(host_url(text)).hostname
    return hostname.lower() if hostname else None


def _label(name: str) -> str:
    return f"{name} ({REGIONS[name]})"


def region_urls(environ: Mapping[str, str]) -> dict[str, str]:
    """The loopback stand-ins of documented hosts that ``BULKPOST_REGION_URLS`` gives."""
    text = environ.get(URLS_ENV, "").strip()
    if not text:
        return {}
    try:
        given = json.loads(text)
    except ValueError:
        raise UsageError(f"{URLS_ENV}: expected a JSON object of host names to URLs") from None
    if not isinstance(given, dict):
        raise UsageError(f"{URLS_ENV}: expected a JSON object of host names to URLs")
    urls: dict[str, str] = {}
    for name, url in given.items():
        if name not in REGIONS:
            raise UsageError(f"{URLS_ENV}: {name!r} is not a documented regional host "
                             f"({', '.join(REGIONS)})")
        checked = check_host(str(url))
        if not is_loopback(urlsplit(checked).hostname or ""):
            raise UsageError(f"{URLS_ENV}: {name} stands in for a loopback URL only, "
                             f"not {url!r}")
        urls[name] = checked
    return urls


def url_of(name: str, urls: Mapping[str, str]) -> str:
    """Where to call documented host ``name``: its stand-in, or ``https://`` it."""
    return urls.get(name, host_url(name))


class HostCache:
    """The hosts found earlier, per access key (by hash), in one JSON file.

    Reading is tolerant (a missing or unreadable file is an empty cache); a write replaces
    the file whole, readable by its owner only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> HostCache | None:
        """The user's cache directory's (``platformdirs``, which reads the environment: a
        relative ``XDG_CACHE_HOME`` is ignored); None without a home."""
        try:
            return cls(platformdirs.user_cache_path("bulkpost", appauthor=False) / "hosts.json")
        except (RuntimeError, KeyError, OSError):
            return None

    @staticmethod
    def key_of(access_key: str) -> str:
        return hashlib.sha256(f"bulkpost hosts\0{access_key}".encode()).hexdigest()

    def _entries(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(document, dict) or document.get("version") != CACHE_VERSION:
            return {}
        hosts = document.get("hosts")
        return hosts if isinstance(hosts, dict) else {}

    def get(self, access_key: str) -> str | None:
        """The documented host cached for these keys, or None."""
        entry = self._entries().get(self.key_of(access_key))
        host = entry.get("host") if isinstance(entry, dict) else None
        return host if isinstance(host, str) and host in REGIONS else None

    def put(self, access_key: str, host: str) -> None:
        entries = self._entries()
        entries[self.key_of(access_key)] = {
            "host": host, "found_at": datetime.now(UTC).isoformat(timespec="seconds")}
        self._write(entries)

    def drop(self, access_key: str) -> None:
        entries = self._entries()
        if entries.pop(self.key_of(access_key), None) is not None:
            self._write(entries)

    def _write(self, entries: dict[str, Any]) -> None:
        """Replace the file; a cache that cannot be written is said, not fatal."""
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(descriptor, "w", encoding="utf-8") as handle:
                json.dump({"version": CACHE_VERSION, "hosts": entries}, handle, indent=1)
                handle.write("\n")
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            log.warning("region.cache_not_saved", path=str(self.path),
                        reason=exc.strerror or str(exc))


async def _ask(calls: ApiCalls, url: str, credentials: Credentials,
               answer_s: float) -> tuple[Classified, Any]:
    """One host's answer to "UserByAccessKey.Get": 5xx and timeouts tried again a few
    times; a refusal's document is its own text."""
    async with LeadSquaredClient(url, credentials, timeout=answer_s, connections=2) as client:
        answer, document = await calls.call(client.user_by_access_key)
        for failed in range(1, _ATTEMPTS):
            if answer.verdict is not Verdict.RETRY:
                break
            await calls.backoff(calls.backoff_schedule.after(failed))
            answer, document = await calls.call(client.user_by_access_key)
    return answer, document


async def _discover(credentials: Credentials, urls: Mapping[str, str], answer_s: float) -> str:
    """Ask the documented hosts in turn; the host the answer names (see the module)."""
    calls = ApiCalls(DeliverySettings(_ATTEMPTS, 0.5, answer_s, 120.0),
                     RateLimit(RateSpec(25, 5.0)), StopSignal())
    queue = collections.deque(REGIONS)
    tried: list[str] = []
    unreached: list[str] = []
    while queue:
        name = queue.popleft()
        if name in tried:
            continue
        tried.append(name)
        log.info("region.asking", host=name, region=REGIONS[name])
        try:
            answer, document = await _ask(calls, url_of(name, urls), credentials, answer_s)
        except Stopped:  # rate limited for minutes on end
            unreached.append(f"{name}: rate limited")
            continue
        if answer.verdict is Verdict.OK:
            found = api_host(document)
            if found is None:
                raise UsageError(f"{name} accepted the keys, but its answer names no API host "
                                 "(LSQCommonServiceURLs.api): give the host with --host "
                                 "(or LSQ_HOST)")
            if found not in REGIONS:
                raise UsageError(f"the keys' account is on {found}, which is not one of "
                                 f"LeadSquared's documented API hosts ({', '.join(REGIONS)}): "
                                 "bulkpost sends the keys there only if you give it with "
                                 "--host (or LSQ_HOST)")
            return found
        if answer.http_status == 401:
            home = named_host(document if isinstance(document, str) else "")
            if home is not None and home not in tried:
                log.info("region.redirected", refused_by=name, home=home, region=REGIONS[home])
                queue.appendleft(home)
            continue
        unreached.append(f"{name}: {credentials.scrub(answer.error or answer.error_type)}")
    also = f"; not answered: {'; '.join(unreached)}" if unreached else ""
    if len(unreached) == len(tried):  # not one refusal: nothing is known of the keys
        raise UsageError(f"no LeadSquared region could be asked for the keys' host{also}: "
                         "is the network up? Or give your account's host with --host (or "
                         "LSQ_HOST)")
    raise UsageError(f"no LeadSquared region accepted the keys (tried {', '.join(tried)}"
                     f"{also}): the keys may be wrong (check LSQ_ACCESS_KEY and "
                     "LSQ_SECRET_KEY), or give your account's host with --host (or LSQ_HOST)")


async def find_host(credentials: Credentials, *, urls: Mapping[str, str] | None = None,
                    cache: HostCache | None = None, answer_s: float = 10.0) -> str:
    """The documented API host of the keys' account: cached (no request), or found.

    ``urls``: stand-ins of documented hosts (default: ``BULKPOST_REGION_URLS``); ``cache``:
    where found hosts are kept (None: nowhere); ``answer_s``: seconds to wait for one answer.
    Raises UsageError when it cannot be found."""
    urls = region_urls(os.environ) if urls is None else urls
    cached = cache.get(credentials.access_key) if cache is not None else None
    if cached is not None:
        log.info("region.host", host=cached, region=REGIONS[cached], from_cache=True,
                 cache=str(cache.path) if cache else None)
        return cached
    found = await _discover(credentials, urls, answer_s)
    if cache is not None:
        cache.put(credentials.access_key, found)
    log.info("region.host", host=found, region=REGIONS[found], from_cache=False,
             cache=str(cache.path) if cache else None)
    return found


@dataclass(frozen=True, slots=True)
class HostChoice:
    """The host a command uses: its URL, and whether it came from the cache."""

    url: str
    name: str = ""  # the documented host found ("" when given)
    cached: bool = False


def choose_host(host_option: str, credentials: Credentials) -> HostChoice:
    """``--host`` when given (checked), else the keys' host, cached or found."""
    if host_option:
        return HostChoice(check_host(host_option))
    cache = HostCache.default()
    urls = region_urls(os.environ)
    was_cached = cache is not None and cache.get(credentials.access_key) is not None
    name = asyncio.run(find_host(credentials, urls=urls, cache=cache))
    return HostChoice(url_of(name, urls), name, was_cached)


def cached_url(credentials: Credentials) -> str | None:
    """The URL of the keys' host when the cache holds it (no request is made), else None:
    what a dry run uses, since it asks no host."""
    cache = HostCache.default()
    name = cache.get(credentials.access_key) if cache is not None else None
    if cache is None or name is None:
        return None
    log.info("region.host", host=name, region=REGIONS[name], from_cache=True,
             cache=str(cache.path))
    return url_of(name, region_urls(os.environ))


async def find_url(credentials: Credentials) -> str:
    """The URL of the keys' host, for code already in an event loop (the Python API's
    runs, which cannot be run again as a command is): a cached host is asked once first,
    and dropped and found afresh if it refuses the keys."""
    urls = region_urls(os.environ)
    cache = HostCache.default()
    cached = cache is not None and cache.get(credentials.access_key) is not None
    name = await find_host(credentials, urls=urls, cache=cache)
    if cached and (again := await _found_again(HostChoice(url_of(name, urls), name, True),
                                               credentials)) is not None:
        return again
    return url_of(name, urls)


async def _refuses(url: str, credentials: Credentials) -> bool:
    calls = ApiCalls(DeliverySettings(1, 0.5, 30.0, 120.0), RateLimit(RateSpec(25, 5.0)),
                     StopSignal())
    try:
        answer, _ = await _ask(calls, url, credentials, 30.0)
    except Stopped:
        return False
    return answer.http_status == 401


async def _found_again(choice: HostChoice, credentials: Credentials) -> str | None:
    """If the cached host ``choice`` now refuses the keys (one question): drop it from the
    cache and return the URL of the host found afresh; else None."""
    if not await _refuses(choice.url, credentials):
        return None
    log.info("region.cache_dropped", host=choice.name)
    urls = region_urls(os.environ)
    cache = HostCache.default()
    if cache is not None:
        cache.drop(credentials.access_key)
    return url_of(await find_host(credentials, urls=urls, cache=cache), urls)


def host_again(choice: HostChoice | None, credentials: Credentials | None) -> str | None:
    """After a command failed on a host that came from the cache: if that host now refuses
    the keys (one question), drop it and return the URL of the host found afresh; else None
    (the failure was something else: the command's own message stands)."""
    if choice is None or credentials is None or not choice.cached:
        return None
    return asyncio.run(_found_again(choice, credentials))
