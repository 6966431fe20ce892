"""The account's time zone: the clock of a ``--share`` schedule and of ``--daily-calls``.

``--timezone ZONE`` (an IANA name) wins; else "UserByAccessKey.Get" answers the account's
``TimeZone``. An IANA name is used as it is, and a Windows-style name only when it is one of
the few whose IANA zone is beyond doubt (:data:`WINDOWS_ZONES`). Anything else fails closed:
a schedule read in a guessed zone would take the whole limit in the customer's business
hours, so the run is refused, asking for ``--timezone``. The zone the account answered is
kept in the history's ``meta`` (``account_zone ACCOUNT``), so a later run asks no more.

:class:`AccountClock` is the account's wall clock; :func:`share_fraction` reads a
``--share`` schedule on it for the rate limit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bulkpost.core.response import Verdict
from bulkpost.core.share import ShareSchedule
from bulkpost.delivery.calls import ApiCalls
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.errors import UsageError
from bulkpost.storage.history.database import History

# Windows zone names (as Windows and .NET spell them) with a single IANA zone, from CLDR's
# windowsZones table (territory 001).
WINDOWS_ZONES = {
    "UTC": "UTC",
    "India Standard Time": "Asia/Kolkata",
    "Arabian Standard Time": "Asia/Dubai",
    "Arab Standard Time": "Asia/Riyadh",
    "Singapore Standard Time": "Asia/Singapore",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Pacific Standard Time": "America/Los_Angeles",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "South Africa Standard Time": "Africa/Johannesburg",
    "E. Africa Standard Time": "Africa/Nairobi",
    "SE Asia Standard Time": "Asia/Bangkok",
    "China Standard Time": "Asia/Shanghai",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Nepal Standard Time": "Asia/Kathmandu",
    "Bangladesh Standard Time": "Asia/Dhaka",
    "Sri Lanka Standard Time": "Asia/Colombo",
    "Pakistan Standard Time": "Asia/Karachi",
}


def given_zone(name: str) -> ZoneInfo:
    """``--timezone``'s zone; a :class:`UsageError` when it is not an IANA name."""
    zone = _iana(name.strip())
    if zone is None:
        raise UsageError(f"--timezone {name!r}: not a time zone name; expected an IANA name "
                         "such as Asia/Kolkata or Europe/London")
    return zone


def _iana(name: str) -> ZoneInfo | None:
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_answered(document: Any) -> ZoneInfo:
    """The zone of a "UserByAccessKey.Get" answer; a :class:`UsageError` (fail closed) when
    it names none, or one that is neither an IANA name nor a Windows name mapped above."""
    named = document.get("TimeZone") if isinstance(document, dict) else None
    if not isinstance(named, str) or not named.strip():
        raise UsageError("the account's time zone is not known (UserByAccessKey.Get named "
                         "none): give the zone to read --share's hours and --daily-calls' "
                         "day in with --timezone, such as --timezone Asia/Kolkata")
    name = named.strip()
    zone = _iana(name) or (_iana(WINDOWS_ZONES[name]) if name in WINDOWS_ZONES else None)
    if zone is None:
        raise UsageError(f"the account's time zone {name!r} (UserByAccessKey.Get) is not one "
                         "bulkpost can read for certain: give the zone to read --share's "
                         "hours and --daily-calls' day in with --timezone, such as "
                         "--timezone Asia/Kolkata")
    return zone


async def ask_zone(calls: ApiCalls, client: LeadSquaredClient, needed_for: str) -> ZoneInfo:
    """The account's zone, asked of "UserByAccessKey.Get" under the run's limit; a
    :class:`UsageError` (fail closed) naming ``needed_for`` when it cannot be had."""
    answer, document = await calls.call(client.user_by_access_key)
    if answer.verdict is not Verdict.OK:
        raise UsageError("the account's time zone could not be read (UserByAccessKey.Get: "
                         f"{answer.error or answer.error_type}): give the zone to read "
                         f"{needed_for} in with --timezone")
    return zone_answered(document)


class AccountClock:
    """The account's wall clock: UTC until the account's zone is known (:attr:`zone`)."""

    def __init__(self, zone: ZoneInfo | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.zone = zone
        self._clock = clock

    def now(self) -> datetime:
        """The time now, in the account's zone once known."""
        now = self._clock()
        return now.astimezone(self.zone) if self.zone is not None else now

    def utc(self) -> datetime:
        return self._clock()


def share_fraction(schedule: ShareSchedule, clock: AccountClock) -> Callable[[float], float]:
    """The rate limit's ``fraction``: the schedule read on the account's clock (the loop's
    time it is given is not wall time). Until the zone is known, a timed schedule takes its
    smallest fraction."""
    if not schedule.timed:
        return lambda _now: schedule.rest
    least = min([schedule.rest, *(r.fraction for r in schedule.ranges)])

    def fraction(_now: float) -> float:
        if clock.zone is None:
            return least
        return schedule.fraction_at(clock.now())
    return fraction


def remembered_zone(history: History | None, account: str) -> ZoneInfo | None:
    """The zone an earlier run read from the account, kept in the history."""
    if history is None:
        return None
    name = history.meta(f"account_zone {account}")
    return _iana(name) if name else None


def remember_zone(history: History | None, account: str, zone: ZoneInfo) -> None:
    """Keep the zone the account answered, for later runs (committed with the history's
    next group commit)."""
    if history is not None:
        history.set_meta(f"account_zone {account}", zone.key)
