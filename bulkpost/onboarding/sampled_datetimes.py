"""What a sample of an input column's values says of its date-times. No I/O.

Owns the guesses ``bulkpost init`` makes of the activity's date-time: which column holds it,
its ``strptime`` format, and the column of times of day a column of dates takes its time
from. The header only helps (:func:`~bulkpost.onboarding.field_matching.name_tokens`): its
words break ties. The rules, each a plain function tested with plain tables:

- a date-time column is told by its values: at least
  :data:`~bulkpost.onboarding.sampled_columns.SHARE` of the sampled non-empty cells must read
  as a run reads them (:mod:`bulkpost.core.activity`'s ``to_api_datetime``); the others are
  returned, as their rows will be invalid;
- day-first or month-first is proved by the values only: a first field above 12 proves
  day-first, a second field above 12 month-first. When no value tells, day-first (or the
  order asked for) is written, ``ambiguous``; values that prove an order win over the one
  asked for (``overruled``); values that prove both, or come in more than one form, get no
  format, only the ``problem``;
- a column of dates with no time of day takes its time from a column of times of day
  (``14:05``, ``2:05 PM``, ``02:05:33 pm``; a typed Parquet time), the one beside it first.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from bulkpost.core.activity import to_api_datetime
from bulkpost.onboarding.field_matching import name_tokens, quoted
from bulkpost.onboarding.sampled_columns import SHARE, ColumnSample

DateOrder = Literal["day-first", "month-first"]

_DATE_WORDS = {"date", "time", "datetime", "timestamp", "when", "occurred", "created", "at",
               "on", "activity"}

_TIME = (r"(?:(?P<tsep>[ T])\d{1,2}:\d{2}(?P<sec>:\d{2})?"
         r"(?:(?P<ampm>\s?)[AaPp][Mm])?)?")
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ].+)?")
_YMD = re.compile(r"\d{4}(?P<sep>[/.-])\d{1,2}(?P=sep)\d{1,2}" + _TIME)
_DMY = re.compile(r"(?P<first>\d{1,2})(?P<sep>[/.-])(?P<second>\d{1,2})(?P=sep)"
                  r"(?P<year>\d{4}|\d{2})" + _TIME)
_CLOCK = re.compile(r"\d{1,2}:\d{2}(?P<sec>:\d{2})?(?:(?P<ampm>\s?)[AaPp][Mm])?")
_TYPED_CLOCK = re.compile(r"\d{2}:\d{2}:\d{2}")  # a typed time column's cells


def other_order(order: DateOrder | None) -> DateOrder:
    return "month-first" if order == "day-first" else "day-first"


@dataclass(frozen=True, slots=True)
class DateTimeGuess:
    """What a column's values say of their date-time form."""

    column: str
    format: str | None  # None: ISO 8601, read without a format (or no format: see problem)
    order: DateOrder | None = None  # for day and month fields: the order written
    ambiguous: bool = False  # no value tells the order: the order written is a default
    overruled: bool = False  # the values prove the other order than the one asked for
    proof: str = ""  # a value that proves the order written
    other_format: str | None = None  # the format of the other order, when ambiguous
    problem: str | None = None  # why no format can be written
    aware: bool = False  # every value carries a UTC offset
    has_time: bool = False
    example: str = ""
    unparsed: tuple[str, ...] = ()  # sampled values the format does not read


def _shape(value: str) -> tuple[str, ...] | None:
    """The form of one value, from which a format is built; None when not a date-time."""
    if _ISO.fullmatch(value):
        return ("iso",)
    for kind, pattern in (("ymd", _YMD), ("dmy", _DMY)):
        match = pattern.fullmatch(value)
        if match:
            year = str(len(match["year"])) if kind == "dmy" else "4"
            ampm = match["ampm"]
            return (kind, match["sep"], year, match["tsep"] or "", "s" if match["sec"] else "",
                    "-" if ampm is None else ampm)
    return None


def _format(shape: tuple[str, ...], order: DateOrder) -> str:
    kind, sep, year, tsep, seconds, ampm = shape
    if kind == "ymd":
        date = f"%Y{sep}%m{sep}%d"
    else:
        first, second = ("%d", "%m") if order == "day-first" else ("%m", "%d")
        date = f"{first}{sep}{second}{sep}{'%Y' if year == '4' else '%y'}"
    if not tsep:
        return date
    hour = "%H" if ampm == "-" else "%I"
    return (date + tsep + f"{hour}:%M" + (":%S" if seconds else "")
            + ("" if ampm == "-" else f"{ampm}%p"))


def _unread(values: list[str], fmt: str | None) -> tuple[str, ...]:
    """The values a run would refuse as date-times under ``fmt`` (None: ISO 8601)."""
    refused = []
    for value in values:
        try:
            to_api_datetime(value, fmt, UTC)
        except ValueError:
            refused.append(value)
    return tuple(refused)


def _has_offset(value: str) -> bool:
    """Whether an ISO 8601 value carries a UTC offset (False when it does not read)."""
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _real_date(day: int, month: int, year: str) -> bool:
    """Whether the day and month make a date of ``year`` (two digits read as strptime's
    ``%y`` reads them)."""
    full = int(year) if len(year) == 4 else int(year) + (1900 if int(year) >= 69 else 2000)
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(full, month)[1]


def _evidence(values: list[str]) -> tuple[str | None, str | None]:
    """A value that proves day-first and one that proves month-first (None: none does). Only
    a date that exists in that order proves it: "31/02/2025" is no date either way."""
    day = month = None
    for value in values:
        match = _DMY.fullmatch(value)
        if match:
            first, second, year = int(match["first"]), int(match["second"]), match["year"]
            if day is None and first > 12 and _real_date(first, second, year):
                day = value
            if month is None and second > 12 and _real_date(second, first, year):
                month = value
    return day, month


def detect_datetime(sample: ColumnSample, order: DateOrder | None = None
                    ) -> DateTimeGuess | None:
    """The date-time form of a column, or None when its values are not date-times.

    ``order`` is the caller's answer for values that cannot tell day-first from
    month-first; values that prove an order win over it (``overruled``)."""
    values = sample.filled
    if not values:
        return None
    if sample.typed:
        if all(_TYPED_CLOCK.fullmatch(v) for v in values):
            return None  # a typed time of day: :func:`detect_time`'s
        return DateTimeGuess(sample.name, None, aware=sample.aware,
                             has_time=any(" " in v for v in values), example=values[0])
    shapes = [_shape(v) for v in values]
    if sum(1 for s in shapes if s is not None) < SHARE * len(values):
        return None
    forms = sorted({s for s in shapes if s is not None})
    has_time = any(len(v) > 10 if s == ("iso",) else bool(s[3])
                   for s, v in zip(shapes, values, strict=True) if s is not None)
    if len(forms) > 1:
        examples = [next(v for v, s in zip(values, shapes, strict=True) if s == f)
                    for f in forms]
        return DateTimeGuess(sample.name, None, has_time=has_time, example=values[0],
                             problem="the values come in more than one form ("
                                     + ", ".join(map(quoted, examples[:3]))
                                     + "): one format cannot read them all")
    [form] = forms
    if form == ("iso",):
        return DateTimeGuess(sample.name, None, aware=all(map(_has_offset, values)),
                             has_time=has_time, example=values[0],
                             unparsed=_unread(values, None))
    guess = DateTimeGuess(sample.name, None, has_time=has_time, example=values[0])
    written: DateOrder = order or "day-first"
    if form[0] == "dmy":
        day, month = _evidence(values)
        if day is not None and month is not None:
            return replace(guess, problem=f"the values contradict each other: {quoted(day)} "
                                           f"is day-first, {quoted(month)} month-first")
        proved: DateOrder | None = ("day-first" if day is not None else
                                    "month-first" if month is not None else None)
        if proved is None:
            guess = replace(guess, ambiguous=order is None,
                            other_format=_format(form, other_order(written)))
        else:
            guess = replace(guess, overruled=order is not None and order != proved,
                            proof=(day if proved == "day-first" else month) or "")
            written = proved
        guess = replace(guess, order=written)
    fmt = _format(form, written)
    return replace(guess, format=fmt, unparsed=_unread(values, fmt))


def choose_datetime(guesses: Sequence[DateTimeGuess]) -> DateTimeGuess | None:
    """The activity's date-time among the date-time columns: a header that says so first,
    then one with times of day, then the leftmost."""
    def rank(item: tuple[int, DateTimeGuess]) -> tuple[int, int, int]:
        index, guess = item
        hinted = bool(set(name_tokens(guess.column)) & _DATE_WORDS)
        return (-int(hinted), -int(guess.has_time), index)

    ranked = sorted(enumerate(guesses), key=rank)
    return ranked[0][1] if ranked else None


# -- the time of day beside a date ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TimeGuess:
    """What a column's values say of their time-of-day form."""

    column: str
    format: str | None  # None: a typed time column, read without one (or see problem)
    example: str = ""
    problem: str | None = None  # why no format can be written
    unparsed: tuple[str, ...] = ()  # sampled values the format does not read


def _clock_format(match: re.Match[str]) -> str:
    ampm = match["ampm"]
    if ampm is None:
        return "%H:%M" + (":%S" if match["sec"] else "")
    return "%I:%M" + (":%S" if match["sec"] else "") + f"{ampm}%p"


def detect_time(sample: ColumnSample) -> TimeGuess | None:
    """The time-of-day form of a column (``14:05``, ``14:05:33``, ``2:05 PM``,
    ``02:05:33 pm``), or None when its values are not times of day."""
    values = sample.filled
    if not values:
        return None
    if sample.typed:
        if all(_TYPED_CLOCK.fullmatch(v) for v in values):
            return TimeGuess(sample.name, None, example=values[0])
        return None
    matches = [_CLOCK.fullmatch(v) for v in values]
    if sum(1 for m in matches if m is not None) < SHARE * len(values):
        return None
    formats = list(dict.fromkeys(_clock_format(m) for m in matches if m is not None))
    guess = TimeGuess(sample.name, None, example=values[0])
    if len(formats) > 1:
        examples = [next(v for v, m in zip(values, matches, strict=True)
                         if m is not None and _clock_format(m) == f) for f in formats]
        return replace(guess, problem="the values come in more than one form ("
                                      + ", ".join(map(quoted, examples[:3]))
                                      + "): one format cannot read them all")
    [fmt] = formats
    unread = []
    for value in values:
        try:
            datetime.strptime(value, fmt)
        except ValueError:
            unread.append(value)
    return replace(guess, format=fmt, unparsed=tuple(unread))


def choose_time(date_column: str, guesses: Sequence[TimeGuess],
                columns: Sequence[str]) -> TimeGuess | None:
    """The time of day of ``date_column`` among the columns of times (``columns``: every
    column, in file order): the one beside it, then a header naming a time, then the
    nearest."""
    position = {name: index for index, name in enumerate(columns)}

    def rank(guess: TimeGuess) -> tuple[bool, bool, int]:
        distance = abs(position[guess.column] - position[date_column])
        hinted = bool({"time", "hour", "at"} & set(name_tokens(guess.column)))
        return (distance != 1, not hinted, distance)

    return min(guesses, key=rank) if guesses else None
