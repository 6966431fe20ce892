"""The run's share of the account's rate limit (``--share``): a fraction, or a day's schedule.

The limit is account-wide: web forms, telephony connectors and automations spend it too.
``--share 60%`` lets this run take at most 60% of the limit in force (given, learnt or
remembered); ``--share "09:00-19:00=40%,100%"`` takes 40% from 09:00 to 19:00 and 100% for
the rest of the day. A range is ``HH:MM-HH:MM=P%``, its end excluded; it may wrap midnight
(``22:00-06:00=100%``); a final bare ``P%`` covers the hours no range names (100% when not
given). Ranges may not overlap. The clock is the account's
(:mod:`bulkpost.onboarding.account_zone`):
a schedule reads wall times, a plain fraction needs none.

Everything here is pure: :meth:`ShareSchedule.fraction_at` and
:meth:`ShareSchedule.next_change` take the wall time; :meth:`ShareSchedule.seconds_for`
integrates the fractions ahead, for the ETA.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from bulkpost.errors import UsageError

_DAY = 24 * 60  # minutes
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_RANGE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*=\s*(.+)")


@dataclass(frozen=True, slots=True)
class ShareRange:
    """From ``start`` to ``end`` (minutes after midnight, end excluded; ``end <= start``
    wraps midnight), the run takes ``fraction`` of the limit."""

    start: int
    end: int
    fraction: float

    def minutes(self) -> set[int]:
        if self.end > self.start:
            return set(range(self.start, self.end))
        return set(range(self.start, _DAY)) | set(range(0, self.end))

    def holds(self, minute: float) -> bool:
        if self.end > self.start:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def _fraction(text: str, option: str) -> float:
    match = _PERCENT.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{option} {text.strip()!r}: expected a percentage, such as 60%")
    value = float(match.group(1))
    if not 0 < value <= 100:
        raise UsageError(f"{option} {text.strip()!r}: a share is more than 0% and at most "
                         "100% of the limit")
    return value / 100


def _minute(hours: str, minutes: str, text: str, option: str) -> int:
    h, m = int(hours), int(minutes)
    if h == 24 and m == 0:
        return _DAY
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise UsageError(f"{option} {text!r}: {hours}:{minutes} is not a time of day "
                         "(00:00 to 24:00)")
    return h * 60 + m


@dataclass(frozen=True, slots=True)
class ShareSchedule:
    """The fraction of the limit the run takes, through the day."""

    ranges: tuple[ShareRange, ...]
    rest: float  # outside every range

    @classmethod
    def parse(cls, text: str, option: str = "--share") -> ShareSchedule:
        """``"60%"``, or ``"09:00-19:00=40%,100%"``; a :class:`UsageError` saying what is
        wrong otherwise (a bad time or percentage, overlapping ranges, 0% or over 100%)."""
        parts = [part.strip() for part in text.split(",")]
        if not text.strip() or any(not part for part in parts):
            raise UsageError(f"{option} {text!r}: expected a percentage (60%) or ranges "
                             "HH:MM-HH:MM=P% separated by commas, then a bare P% for the "
                             "rest of the day")
        ranges: list[ShareRange] = []
        rest: float | None = None
        for index, part in enumerate(parts):
            match = _RANGE.fullmatch(part)
            if match is None:
                if "=" in part or "-" in part or ":" in part:
                    raise UsageError(f"{option} {part!r}: expected HH:MM-HH:MM=P%, such as "
                                     "09:00-19:00=40%")
                if index != len(parts) - 1:
                    raise UsageError(f"{option} {text!r}: the bare percentage {part!r} is "
                                     "for the rest of the day: it comes last, once")
                rest = _fraction(part, option)
                continue
            start = _minute(match.group(1), match.group(2), part, option)
            end = _minute(match.group(3), match.group(4), part, option)
            start %= _DAY
            end %= _DAY
            if start == end:
                raise UsageError(f"{option} {part!r}: the range is empty (it starts where it "
                                 "ends); for the whole day give a bare percentage")
            fraction = _fraction(match.group(5), option)
            new = ShareRange(start, end, fraction)
            for other in ranges:
                if new.minutes() & other.minutes():
                    raise UsageError(f"{option} {text!r}: the ranges "
                                     f"{_spell(other)} and {_spell(new)} overlap")
            ranges.append(new)
        return cls(tuple(sorted(ranges, key=lambda r: r.start)),
                   1.0 if rest is None else rest)

    @property
    def timed(self) -> bool:
        """Whether the fraction depends on the time of day (it needs the account's zone)."""
        return bool(self.ranges)

    @property
    def most(self) -> float:
        """The largest fraction the schedule ever takes."""
        return max([self.rest, *(r.fraction for r in self.ranges)])

    def fraction_at(self, wall: datetime) -> float:
        """The fraction in force at ``wall`` (a time of day in the account's zone)."""
        minute = wall.hour * 60 + wall.minute + wall.second / 60 + wall.microsecond / 6e7
        for item in self.ranges:
            if item.holds(minute):
                return item.fraction
        return self.rest

    def next_change(self, wall: datetime) -> datetime | None:
        """The first moment after ``wall`` at which the fraction changes (None: never)."""
        if not self.ranges:
            return None
        now = self.fraction_at(wall)
        midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        edges = sorted({edge for r in self.ranges for edge in (r.start, r.end % _DAY)})
        for day in range(2):
            for edge in edges:
                at = midnight + timedelta(days=day, minutes=edge)
                if at > wall and self.fraction_at(at) != now:
                    return at
        return None

    def seconds_for(self, work: float, full_rate: float, wall: datetime) -> float:
        """How long ``work`` (rows, calls) takes from ``wall`` at ``full_rate`` per second
        times the fraction in force, piecewise over the schedule's ranges."""
        if work <= 0:
            return 0.0
        if full_rate <= 0:
            return math.inf
        elapsed = 0.0
        while True:
            rate = full_rate * self.fraction_at(wall)
            change = self.next_change(wall)
            if change is None:
                return elapsed + work / rate
            span = (change - wall).total_seconds()
            if work <= rate * span:
                return elapsed + work / rate
            work -= rate * span
            elapsed += span
            wall = change

    def __str__(self) -> str:
        parts = [f"{_spell(r)}={_percent(r.fraction)}" for r in self.ranges]
        return ",".join([*parts, _percent(self.rest)])


def _spell(item: ShareRange) -> str:
    return (f"{item.start // 60:02d}:{item.start % 60:02d}-"
            f"{item.end // 60:02d}:{item.end % 60:02d}")


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def share_of(calls: int, fraction: float) -> int:
    """The calls per window a share lets out of ``calls``: at least one."""
    if fraction >= 1:
        return calls
    return max(1, math.floor(calls * fraction + 1e-9))
