"""A first mapping drafted from an export: what ``bulkpost init`` writes. No I/O.

Owns the guesses and how the file says them. From the header and a sample of rows it finds
the lead column (GUIDs, else e-mail addresses), the activity date-time column and its
``strptime`` format, the note column and a row key, and matches the other columns to the
activity type's custom fields by display name. Every guess that needs a person's eye is
written as a comment in the file (``CONFIRM``, ``!!!`` when a run would go wrong without
it) and returned as a warning; nothing is mapped silently, and a column left over is listed.

The rules, each a plain function tested with plain tables:

- a lead or date-time column is told by its values: at least :data:`SHARE` of the sampled
  non-empty cells must look the part (the others are said: their rows will be invalid);
  the header breaks ties; a key column is named like one and unique in the sample;
- day-first or month-first is proved by the values only: a first field above 12 proves
  day-first, a second field above 12 month-first. When no value tells, day-first (or the
  order the caller was told) is written with a loud comment; when values prove both, no
  format is written and the file says why;
- a column name matches a field's display name when both reduce to the same letters and
  digits (case, punctuation, underscores, units in brackets and a few common
  abbreviations aside), or when ``difflib`` rates them at least :data:`NEAR_MATCH` apart
  from short names, which must match exactly. One field takes one column: the best match
  wins, the others are listed as comments.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from difflib import SequenceMatcher
from typing import Literal

from bulkpost.activity import EMAIL, GUID
from bulkpost.schema import ActivityType, FieldSpec

DateOrder = Literal["day-first", "month-first"]

SHARE = 0.5  # of the sampled non-empty cells that must look like a GUID, e-mail, date-time
NEAR_MATCH = 0.85  # difflib ratio from which a column name is a near spelling of a field's
SHORT_NAME = 5  # names of fewer letters and digits match only exactly ("qty" is no "city")
HINT = 0.6  # a column whose closest field rates this much has it named in its comment
LONG_TEXT = 40  # mean length of a free-text column taken as the note without a header hint
WIDTH = 92  # comments are wrapped to this width

_ABBREVIATIONS = {"no": "number", "num": "number", "nbr": "number", "qty": "quantity",
                  "amt": "amount", "dt": "date", "desc": "description", "ref": "reference"}
_UNITS = re.compile(r"\s*(\([^()]*\)|\[[^\[\]]*\])")
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

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TIME = (r"(?:(?P<tsep>[ T])\d{1,2}:\d{2}(?P<sec>:\d{2})?"
         r"(?:(?P<ampm>\s?)[AaPp][Mm])?)?")
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ].+)?")
_YMD = re.compile(r"\d{4}(?P<sep>[/.-])\d{1,2}(?P=sep)\d{1,2}" + _TIME)
_DMY = re.compile(r"(?P<first>\d{1,2})(?P<sep>[/.-])(?P<second>\d{1,2})(?P=sep)"
                  r"(?P<year>\d{4}|\d{2})" + _TIME)


@dataclass(frozen=True, slots=True)
class ColumnSample:
    """One input column and its sampled cells, as the reader gave them."""

    name: str
    values: tuple[str, ...]
    typed: bool = False  # a typed date or timestamp column (Parquet): ISO text already
    aware: bool = False  # a zone-aware timestamp column: its values are UTC

    @property
    def filled(self) -> list[str]:
        return [v.strip() for v in self.values if v.strip()]


# -- names ---------------------------------------------------------------------------------

def name_tokens(name: str) -> tuple[str, ...]:
    """The words of a column or field name, lower case, units in brackets and punctuation
    dropped, common abbreviations spelled out: "Order No. (#)" → ("order", "number")."""
    text = name.replace("#", " number ")
    unitless = _UNITS.sub(" ", text)
    text = unitless if re.search(r"[^\W_]", unitless) else text
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # camelCase: OrderNo → Order No
    return tuple(_ABBREVIATIONS.get(w, w) for w in re.findall(r"[^\W_]+", text.casefold()))


def similarity(column: str, spec: FieldSpec) -> float:
    """How alike a column name and a field are: 1.0 for the same letters and digits (or
    the SchemaName itself), else difflib's ratio; 0.0 for short names that differ."""
    if column.strip().casefold() == spec.schema_name.casefold():
        return 1.0
    a, b = "".join(name_tokens(column)), "".join(name_tokens(spec.display_name))
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    if min(len(a), len(b)) < SHORT_NAME:
        return 0.0
    return SequenceMatcher(None, a, b).ratio()


# -- values --------------------------------------------------------------------------------

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


def _parses(value: str, fmt: str | None) -> datetime | None:
    try:
        return datetime.strptime(value, fmt) if fmt else datetime.fromisoformat(value)
    except ValueError:
        return None


def _evidence(values: list[str]) -> tuple[str | None, str | None]:
    """A value that proves day-first and one that proves month-first (None: none does)."""
    day = month = None
    for value in values:
        match = _DMY.fullmatch(value)
        if match:
            if day is None and int(match["first"]) > 12:
                day = value
            if month is None and int(match["second"]) > 12:
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
        parsed = [_parses(v, None) for v in values]
        aware = all(p is not None and p.tzinfo is not None for p in parsed)
        unparsed = tuple(v for v, p in zip(values, parsed, strict=True) if p is None)
        return DateTimeGuess(sample.name, None, aware=aware, has_time=has_time,
                             example=values[0], unparsed=unparsed)
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
            other: DateOrder = "month-first" if written == "day-first" else "day-first"
            guess = replace(guess, ambiguous=order is None, other_format=_format(form, other))
        else:
            guess = replace(guess, overruled=order is not None and order != proved,
                            proof=(day if proved == "day-first" else month) or "")
            written = proved
        guess = replace(guess, order=written)
    fmt = _format(form, written)
    unparsed = tuple(v for v in values if _parses(v, fmt) is None)
    return replace(guess, format=fmt, unparsed=unparsed)


def choose_datetime(guesses: Sequence[DateTimeGuess]) -> DateTimeGuess | None:
    """The activity's date-time among the date-time columns: a header that says so first,
    then one with times of day, then the leftmost."""
    def rank(item: tuple[int, DateTimeGuess]) -> tuple[int, int, int]:
        index, guess = item
        hinted = bool(set(name_tokens(guess.column)) & _DATE_WORDS)
        return (-int(hinted), -int(guess.has_time), index)

    ranked = sorted(enumerate(guesses), key=rank)
    return ranked[0][1] if ranked else None


def find_note_column(samples: Sequence[ColumnSample]) -> str | None:
    """A column named like a note (note, comment, remarks, description…), else the one
    long free-text column, if any."""
    named = [s.name for s in samples if set(name_tokens(s.name)) & _NOTE_WORDS]
    if named:
        return min(named, key=lambda n: (len(name_tokens(n)), samples_index(samples, n)))
    texts = []
    for sample in samples:
        values = sample.filled
        if len(values) >= 2 and sum(len(v) for v in values) / len(values) >= LONG_TEXT \
                and sum(" " in v for v in values) >= len(values) / 2:
            texts.append(sample.name)
    return texts[0] if len(texts) == 1 else None


def samples_index(samples: Sequence[ColumnSample], name: str) -> int:
    return next(i for i, s in enumerate(samples) if s.name == name)


def find_key_column(samples: Sequence[ColumnSample]) -> str | None:
    """A column of ids (id, key, uuid in its name; or number, reference, code) filled and
    unique in every sampled row."""
    best: tuple[int, int, str] | None = None
    for index, sample in enumerate(samples):
        words = set(name_tokens(sample.name))
        strength = 2 if words & _KEY_WORDS else 1 if words & _WEAK_KEY_WORDS else 0
        values = [v.strip() for v in sample.values]
        if (not strength or len(values) < 2 or not all(values)
                or len(set(values)) != len(values)):
            continue
        if best is None or (-strength, index) < (-best[0], best[1]):
            best = (strength, index, sample.name)
    return best[2] if best else None


# -- fields --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FieldMatch:
    column: str
    spec: FieldSpec
    score: float
    twins: tuple[str, ...] = ()  # other fields of the same display name
    problems: tuple[str, ...] = ()  # sampled values the field would refuse, with why


def match_fields(columns: Sequence[str], activity: ActivityType
                 ) -> tuple[list[FieldMatch], dict[str, str]]:
    """Each column's best field, one column per field; and why each other column is left.

    Two columns claiming one field: the higher similarity wins, then the name closer as
    written ("Amount" over "Amount (INR)" for Amount), then the leftmost."""
    specs = list(activity.fields.values())
    claims: dict[str, list[tuple[float, float, int, str]]] = {}
    left: dict[str, str] = {}
    for index, column in enumerate(columns):
        scored = sorted(((similarity(column, s), -n, s.schema_name) for n, s in enumerate(specs)),
                        reverse=True)
        if not scored or scored[0][0] < NEAR_MATCH:
            closest = scored[0] if scored else None
            left[column] = (f"no field of type {activity.code} resembles it"
                            if closest is None or closest[0] < HINT else
                            f"closest field {activity.fields[closest[2]].label()} is not "
                            f"near enough ({closest[0]:.2f} < {NEAR_MATCH})")
            continue
        score, _, name = scored[0]
        as_written = SequenceMatcher(None, column.casefold(),
                                     activity.fields[name].display_name.casefold()).ratio()
        claims.setdefault(name, []).append((score, as_written, -index, column))
    matches: list[FieldMatch] = []
    for name, claimants in claims.items():
        score, _, _, winner = max(claimants)
        spec = activity.fields[name]
        twins = tuple(s.schema_name for s in specs if s.schema_name != name
                      and s.display_name.casefold() == spec.display_name.casefold())
        matches.append(FieldMatch(winner, spec, score, twins))
        for *_, loser in claimants:
            if loser != winner:
                left[loser] = (f"resembles {spec.label()}, but {quoted(winner)} matches it "
                               "better")
    order = {c: i for i, c in enumerate(columns)}
    return sorted(matches, key=lambda m: order[m.column]), left


def value_problems(spec: FieldSpec, values: Iterable[str]) -> tuple[str, ...]:
    """The sampled values a field would refuse, each with the field's reason."""
    found = []
    for value in values:
        try:
            spec.check(value, UTC)
        except ValueError as exc:
            found.append(f"{quoted(value)} {exc}")
    return tuple(found)


# -- the draft -----------------------------------------------------------------------------

def quoted(text: str) -> str:
    """A TOML basic string of ``text``, also safe inside a comment (no line breaks)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


@dataclass(slots=True)
class Draft:
    """The mapping file's text, and what a person must hear about it."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)  # one-line summary of each guess

    @property
    def text(self) -> str:
        # Names and values in comments are written as they are: a control character in
        # one (a line break in a header) is escaped, or it would end the comment.
        return "\n".join(_CONTROL.sub(lambda c: f"\\x{ord(c.group()):02x}", line)
                         for line in self.lines) + "\n"

    def comment(self, text: str, *, loud: bool = False) -> None:
        """A comment of one or more lines; ``loud`` ones start with ``!!!``."""
        first = "# !!! " if loud else "# "
        wrapped = textwrap.wrap(text, WIDTH - len(first), break_long_words=False,
                                break_on_hyphens=False)
        self.lines += [first + wrapped[0], *(("#     " if loud else "# ") + line
                                             for line in wrapped[1:])]


def draft_mapping(samples: Sequence[ColumnSample], event: int, activity: ActivityType | None,
                  *, source: str, rows: int, order: DateOrder | None = None,
                  timezone: str | None = None, unreadable: Sequence[str] = ()) -> Draft:
    """The mapping for an input whose columns are ``samples`` (``rows`` rows sampled),
    posting activities of type ``event``; ``activity`` is the type's schema, or None
    without keys (the columns are then left as comments). ``unreadable``: columns of a type
    that has no string form (Parquet lists, structs), listed as left out."""
    draft = Draft()
    out, warn = draft.lines.append, draft.warnings.append
    type_name = f"activity type {event}" + (f" ({activity.name})" if activity and
                                            activity.name else "")
    draft.comment(f"Mapping for {source}, drafted by `bulkpost init` from its header and "
                  f"{rows} sampled rows, for {type_name}. Read every line marked CONFIRM or "
                  "!!! before the first run.")
    out("")
    out("[activity]")
    out(f"event = {event}")
    leads = find_lead_columns(samples)
    used = {c for c in (leads.id_column, leads.email_column) if c}
    if leads.id_column:
        out(f"lead_id_column = {quoted(leads.id_column)}  # GUIDs: RelatedProspectId")
        draft.found.append(f"lead id {quoted(leads.id_column)}")
    if leads.email_column:
        note = " where the id is empty" if leads.id_column else ""
        out(f"lead_email_column = {quoted(leads.email_column)}  # e-mail addresses{note}")
        draft.found.append(f"lead e-mail {quoted(leads.email_column)}")
    for column in dict.fromkeys(c for c, _ in leads.unlike):
        odd = [v for c, v in leads.unlike if c == column]
        what = "GUIDs" if column == leads.id_column else "e-mail addresses"
        draft.comment(f"{len(odd)} sampled value(s) of {quoted(column)} are not {what}, e.g. "
                      f"{quoted(odd[0])}: their rows will be invalid", loud=True)
        warn(f"lead column {quoted(column)}: {len(odd)} sampled value(s) are not {what}, e.g. "
             f"{quoted(odd[0])}")
    if not used:
        draft.comment("no column of lead GUIDs or e-mail addresses was found: name yours "
                      "here", loud=True)
        out('# lead_id_column = ""')
        warn("no column of lead GUIDs or e-mail addresses found: set lead_id_column or "
             "lead_email_column in the mapping")
    matches: list[FieldMatch] = []
    left: dict[str, str] = {}
    if activity is not None:
        matches, left = match_fields([s.name for s in samples if s.name not in used], activity)
        by_name = {s.name: s for s in samples}
        matches = [FieldMatch(m.column, m.spec, m.score, m.twins,
                              value_problems(m.spec, by_name[m.column].values))
                   for m in matches]
        used |= {m.column for m in matches}
    rest = [s for s in samples if s.name not in used]
    guesses = [g for s in rest if (g := detect_datetime(s, order)) is not None]
    when = choose_datetime(guesses)
    if when is not None:
        used.add(when.column)
        _datetime_lines(draft, when, timezone)
        for other in guesses:
            if other is not when:
                left.setdefault(other.column, "also holds date-times")
    else:
        draft.comment("no column of date-times was found: each activity takes the time of "
                      "its call")
    note_column = find_note_column([s for s in samples if s.name not in used])
    if note_column is not None:
        used.add(note_column)
        out(f"note_column = {quoted(note_column)}")
        draft.found.append(f"note {quoted(note_column)}")
    key = find_key_column([s for s in samples if s.name not in used - {m.column for m in matches}])
    if key is not None:
        draft.comment(f"key: unique in the {rows} sampled rows; CONFIRM that a row keeps it in "
                      "every export")
        out(f"key_column = {quoted(key)}")
        draft.found.append(f"key {quoted(key)}")
        used.add(key)
    out("")
    _field_lines(draft, matches, activity)
    for name in leads.others:
        left.setdefault(name, "also holds GUIDs or e-mail addresses: another lead?")
    for name in unreadable:
        left[name] = "its type cannot be sent as a field value"
    unmatched = [s.name for s in samples if s.name not in used] + list(unreadable)
    if unmatched:
        out("")
        draft.comment("Columns not mapped: map them by hand, or leave them out."
                      + (" Matching them to the type's fields needs the keys: run init "
                         "again with LSQ_ACCESS_KEY, LSQ_SECRET_KEY and --host."
                         if activity is None else ""))
        for name in unmatched:
            reason = left.get(name)
            out(f"#   {quoted(name)}" + (f": {reason}" if reason else ""))
    if activity is None and unmatched:
        warn(f"{len(unmatched)} column(s) left as comments: matching them to the type's fields "
             "needs the keys (LSQ_ACCESS_KEY, LSQ_SECRET_KEY and --host)")
    return draft


def _datetime_lines(draft: Draft, when: DateTimeGuess, timezone: str | None) -> None:
    out, warn = draft.lines.append, draft.warnings.append
    out(f"datetime_column = {quoted(when.column)}  # e.g. {quoted(when.example)}")
    summary = f"date-time {quoted(when.column)}"
    if when.problem is not None:
        draft.comment(f"no datetime_format written: {when.problem}. Write one that reads "
                      "every value (Python's strptime codes).", loud=True)
        out('# datetime_format = ""')
        warn(f"date-time column {quoted(when.column)}: {when.problem}; write datetime_format "
             "by hand")
    elif when.format is not None:
        if when.ambiguous:
            draft.comment(
                f"CONFIRM: no sampled value tells day-first from month-first (every value "
                f"reads both ways, e.g. {quoted(when.example)}); {when.order} is written. If "
                f"the dates are {_other(when.order)}, write {quoted(when.other_format or '')} "
                f"(or run init again with --{_other(when.order)}).", loud=True)
            warn(f"date-time column {quoted(when.column)}: no sampled value tells day-first "
                 f"from month-first; {when.order} was written: confirm it in the mapping")
        elif when.proof:
            draft.comment(f"{when.order}: {quoted(when.proof)} reads no other way"
                          + (", whatever was asked for" if when.overruled else ""))
        if when.overruled:
            warn(f"date-time column {quoted(when.column)}: the values prove {when.order}; "
                 "the order asked for was not used")
        out(f"datetime_format = {quoted(when.format)}")
        summary += f" ({when.format})"
    if when.unparsed:
        draft.comment(f"{len(when.unparsed)} sampled value(s) do not read as date-times, "
                      f"e.g. {quoted(when.unparsed[0])}: their rows will be invalid", loud=True)
        warn(f"date-time column {quoted(when.column)}: {len(when.unparsed)} sampled value(s) "
             f"do not read as date-times, e.g. {quoted(when.unparsed[0])}")
    if timezone is not None:
        out(f"timezone = {quoted(timezone)}")
    elif when.aware:
        draft.comment("every sampled value carries its UTC offset: no timezone is needed")
    else:
        draft.comment("CONFIRM the time zone: the values carry no UTC offset, and without a "
                      "timezone line they are read as UTC. Write the zone they were written "
                      "in (an IANA name) and remove the # :", loud=True)
        out('# timezone = "Asia/Kolkata"')
        warn(f"date-time column {quoted(when.column)}: the values carry no UTC offset; set "
             "timezone in the mapping (without it they are read as UTC)")
    draft.found.append(summary)


def _other(order: DateOrder | None) -> DateOrder:
    return "month-first" if order == "day-first" else "day-first"


def _field_lines(draft: Draft, matches: list[FieldMatch], activity: ActivityType | None) -> None:
    out, warn = draft.lines.append, draft.warnings.append
    out("[fields]")
    for match in matches:
        spec = match.spec
        what = f"{spec.display_name} ({spec.data_type}{', mandatory' if spec.mandatory else ''})"
        if match.score < 1.0:
            what += f": a near spelling ({match.score:.2f}): CONFIRM"
        if match.twins:
            what += f"; CONFIRM: {', '.join(match.twins)} has the same display name"
        out(f"{spec.schema_name} = {quoted(match.column)}  # {what}")
        if match.problems:
            draft.comment(f"{len(match.problems)} sampled value(s) of {quoted(match.column)} "
                          f"would be invalid, e.g. {match.problems[0]}", loud=True)
            warn(f"column {quoted(match.column)} → {spec.label()}: {len(match.problems)} "
                 f"sampled value(s) would be invalid, e.g. {match.problems[0]}")
    draft.found.append(f"{len(matches)} field(s)")
    if activity is None:
        return
    mapped = {m.spec.schema_name for m in matches}
    missing = [s for s in activity.fields.values() if s.schema_name not in mapped]
    mandatory = [s for s in missing if s.mandatory]
    for spec in mandatory:
        draft.comment(f"MANDATORY FIELD WITH NO COLUMN: {spec.label()}: the run refuses "
                      "the mapping until a column is mapped to it", loud=True)
    if mandatory:
        warn(f"mandatory field(s) of type {activity.code} with no column: "
             f"{', '.join(s.label() for s in mandatory)}; the run refuses the mapping until "
             "they are mapped")
    optional = [s for s in missing if not s.mandatory]
    if optional:
        draft.comment(f"Fields of type {activity.code} with no column: "
                      + ", ".join(s.label() for s in optional))
