"""What a sample of an input column's values says it holds. No I/O.

Owns the guesses ``bulkpost init`` makes from values: the lead's column (GUIDs, else e-mail
addresses), the activity's date-time and its ``strptime`` format, the note and the row key.
The header only helps: its words (:func:`~bulkpost.onboarding.field_matching.name_tokens`) break
ties
and rule columns out. The rules, each a plain function tested with plain tables:

- a lead or date-time column is told by its values: at least :data:`SHARE` of the sampled
  non-empty cells must look the part as a run reads them (:mod:`bulkpost.core.activity`'s
  ``GUID``, ``EMAIL`` and ``to_api_datetime``); the others are returned, as their rows will
  be invalid. A header naming someone else (owner, agent) or a thing (order) is no lead's;
- day-first or month-first is proved by the values only: a first field above 12 proves
  day-first, a second field above 12 month-first. When no value tells, day-first (or the
  order asked for) is written, ``ambiguous``; values that prove an order win over the one
  asked for (``overruled``); values that prove both, or come in more than one form, get no
  format, only the ``problem``;
- a column of dates with no time of day takes its time from a column of times of day
  (``14:05``, ``2:05 PM``, ``02:05:33 pm``; a typed Parquet time), the one beside it first;
- the note is a column named like one, else the one column of long free text; the key is
  named like an id, and filled and unique in every sampled row (a column left out only
  because a value repeats is named, with the value and its rows: :func:`repeated_key_values`).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from bulkpost.core.activity import EMAIL, GUID, to_api_datetime
from bulkpost.onboarding.field_matching import name_tokens, quoted

DateOrder = Literal["day-first", "month-first"]

SHARE = 0.5  # of the sampled non-empty cells that must look like a GUID, e-mail, date-time
LONG_TEXT = 40  # mean length of a free-text column taken as the note without a header hint

_LEAD_WORDS = {"lead", "prospect", "contact", "customer", "client", "email", "mail"}
_NOT_LEAD_WORDS = {"owner", "agent", "rep", "user", "assigned", "created", "modified",
                   "manager", "staff", "employee", "order", "source", "activity", "row",
                   "record", "transaction", "external", "product", "sender"}
_NOTE_WORDS = {"note", "notes", "comment", "comments", "remark", "remarks", "description",
               "details", "memo", "narration"}
_DATE_WORDS = {"date", "time", "datetime", "timestamp", "when", "occurred", "created", "at",
               "on", "activity"}
_KEY_WORDS = {"id", "key", "uuid", "guid"}
_WEAK_KEY_WORDS = {"number", "reference", "code"}

_TIME = (r"(?:(?P<tsep>[ T])\d{1,2}:\d{2}(?P<sec>:\d{2})?"
         r"(?:(?P<ampm>\s?)[AaPp][Mm])?)?")
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ].+)?")
_YMD = re.compile(r"\d{4}(?P<sep>[/.-])\d{1,2}(?P=sep)\d{1,2}" + _TIME)
_DMY = re.compile(r"(?P<first>\d{1,2})(?P<sep>[/.-])(?P<second>\d{1,2})(?P=sep)"
                  r"(?P<year>\d{4}|\d{2})" + _TIME)
_CLOCK = re.compile(r"\d{1,2}:\d{2}(?P<sec>:\d{2})?(?:(?P<ampm>\s?)[AaPp][Mm])?")
_TYPED_CLOCK = re.compile(r"\d{2}:\d{2}:\d{2}")  # a typed time column's cells


@dataclass(frozen=True, slots=True)
class ColumnSample:
    """One input column and its sampled cells, as the reader gave them."""

    name: str
    values: tuple[str, ...]
    typed: bool = False  # a typed date or timestamp column (Parquet): ISO text already
    aware: bool = False  # a zone-aware timestamp column: its values are UTC
    numbers: tuple[int, ...] = ()  # the sampled rows' numbers, as a run numbers them (): 1…

    @property
    def filled(self) -> list[str]:
        return [v.strip() for v in self.values if v.strip()]

    @property
    def empty(self) -> int:
        """How many sampled cells are empty (or blank)."""
        return len(self.values) - len(self.filled)


def other_order(order: DateOrder | None) -> DateOrder:
    return "month-first" if order == "day-first" else "day-first"


# -- the lead ------------------------------------------------------------------------------

def _share(values: list[str], pattern: re.Pattern[str]) -> float:
    return sum(1 for v in values if pattern.fullmatch(v)) / len(values) if values else 0.0


@dataclass(frozen=True, slots=True)
class LeadColumns:
    id_column: str | None
    email_column: str | None
    others: tuple[str, ...]  # further columns of GUIDs or e-mails, not taken
    unlike: tuple[tuple[str, str], ...] = ()  # (column, value): a cell that is neither


def _lead_score(name: str) -> int:
    words = set(name_tokens(name))
    if words & _NOT_LEAD_WORDS:
        return -1
    return 1 if words & _LEAD_WORDS else 0


def find_lead_columns(samples: Sequence[ColumnSample]) -> LeadColumns:
    """The column of lead GUIDs and the column of lead e-mails, each when there is one.

    A column whose header names someone else (owner, agent, created by) or a thing (order,
    source, row) is not taken for the lead's."""
    chosen: dict[str, str | None] = {}
    others: list[str] = []
    unlike: list[tuple[str, str]] = []
    for kind, pattern in (("id", GUID), ("email", EMAIL)):
        found = [s for s in samples if s.filled and _share(s.filled, pattern) >= SHARE]
        leads = sorted((s for s in found if _lead_score(s.name) >= 0),
                       key=lambda s: -_lead_score(s.name))
        chosen[kind] = leads[0].name if leads else None
        others += [s.name for s in found if s.name != chosen[kind]]
        unlike += [(leads[0].name, v) for v in leads[0].filled
                   if not pattern.fullmatch(v)] if leads else []
    return LeadColumns(chosen["id"], chosen["email"], tuple(others), tuple(unlike))


# -- the date-time -------------------------------------------------------------------------

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


# -- the note and the key ------------------------------------------------------------------

def find_note_column(samples: Sequence[ColumnSample]) -> str | None:
    """A column named like a note (note, comment, remarks, description…), else the one
    long free-text column, if any."""
    named = [(len(name_tokens(s.name)), index, s.name) for index, s in enumerate(samples)
             if set(name_tokens(s.name)) & _NOTE_WORDS]
    if named:
        return min(named)[2]
    texts = []
    for sample in samples:
        values = sample.filled
        if len(values) >= 2 and sum(len(v) for v in values) / len(values) >= LONG_TEXT \
                and sum(" " in v for v in values) >= len(values) / 2:
            texts.append(sample.name)
    return texts[0] if len(texts) == 1 else None


def _key_strength(sample: ColumnSample) -> int:
    words = set(name_tokens(sample.name))
    return 2 if words & _KEY_WORDS else 1 if words & _WEAK_KEY_WORDS else 0


def find_key_column(samples: Sequence[ColumnSample]) -> str | None:
    """A column of ids (id, key, uuid in its name; or number, reference, code) filled and
    unique in every sampled row."""
    best: tuple[int, int, str] | None = None
    for index, sample in enumerate(samples):
        strength = _key_strength(sample)
        values = [v.strip() for v in sample.values]
        if (not strength or len(values) < 2 or not all(values)
                or len(set(values)) != len(values)):
            continue
        if best is None or (-strength, index) < (-best[0], best[1]):
            best = (strength, index, sample.name)
    return best[2] if best else None


@dataclass(frozen=True, slots=True)
class RepeatedKey:
    """A column named like a key and filled in every sampled row, left out as the key
    because a value repeats: the first such value, the rows that hold it (up to five) and
    how many do."""

    column: str
    value: str
    rows: tuple[int, ...]
    count: int

    def describe(self) -> str:
        rows = ", ".join(map(str, self.rows))
        more = f" and {self.count - len(self.rows)} more" if self.count > len(self.rows) else ""
        return f"{quoted(self.value)} is in rows {rows}{more} of {quoted(self.column)}"


def repeated_key_values(samples: Sequence[ColumnSample]) -> list[RepeatedKey]:
    """The columns :func:`find_key_column` leaves out only because a value repeats (named
    like a key, filled in every sampled row), with the first value that does."""
    found = []
    for sample in samples:
        values = [v.strip() for v in sample.values]
        if not _key_strength(sample) or len(values) < 2 or not all(values):
            continue
        numbers = sample.numbers or tuple(range(1, len(values) + 1))
        rows: dict[str, list[int]] = {}
        for value, row in zip(values, numbers, strict=True):
            rows.setdefault(value, []).append(row)
        repeated = [(held[1], value) for value, held in rows.items() if len(held) > 1]
        if repeated:
            _, value = min(repeated)  # the value repeated first
            held = rows[value]
            found.append(RepeatedKey(sample.name, value, tuple(held[:5]), len(held)))
    return found
