"""The mapping file ``bulkpost init`` writes, and what a person must hear about it. No I/O.

Owns how the guesses are said: the ``[activity]`` and ``[fields]`` lines, in TOML that
:func:`bulkpost.core.mapping.parse_mapping` reads, drafted from the columns' samples
(:mod:`bulkpost.onboarding.sampled_columns`: lead, note, key;
:mod:`bulkpost.onboarding.sampled_datetimes`: date-time or a date and a time of day)
and their matches to the type's fields (:mod:`bulkpost.onboarding.field_matching`). Its rules:

- nothing is mapped silently: every guess that needs a person's eye is a comment in the
  file, ``CONFIRM`` for a guess to check and ``!!!`` when a run would go wrong without an
  edit, and each loud one is also returned as a warning (said on stderr);
- the columns are claimed in one order: the lead's, then the fields' (with the type's
  schema), then the date-time and the note among the rest; the key may also fill a field.
  A column left over is listed with why, and the type's fields with no column are listed
  (mandatory ones loudly: :func:`bulkpost.core.schema.preflight` refuses the mapping without);
- a date with no time of day is never silent: with a time column beside it the two are
  mapped together (``date_column`` and ``time_column``), else every activity lands at
  midnight and that is loud; sampled empty date or time cells are loud (their rows will be
  invalid unless the mapping opts in);
- names and values are written as TOML basic strings
  (:func:`~bulkpost.onboarding.field_matching.quoted`); in comments a control character is escaped,
  or it would end the comment. Comments are wrapped to :data:`WIDTH` columns.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bulkpost.core.schema import ActivityType, preflight
from bulkpost.onboarding.field_matching import FieldMatch, match_fields, quoted, value_problems
from bulkpost.onboarding.sampled_columns import (
    ColumnSample,
    find_key_column,
    find_lead_columns,
    find_note_column,
    repeated_key_values,
)
from bulkpost.onboarding.sampled_datetimes import (
    DateOrder,
    DateTimeGuess,
    TimeGuess,
    choose_datetime,
    choose_time,
    detect_datetime,
    detect_time,
    other_order,
)

WIDTH = 92  # comments are wrapped to this width

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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

    def flag(self, comment: str, warning: str) -> None:
        """What a run would get wrong: a loud comment in the file, a warning on stderr."""
        self.comment(comment, loud=True)
        self.warnings.append(warning)


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
        draft.flag(f"{len(odd)} sampled value(s) of {quoted(column)} are not {what}, e.g. "
                   f"{quoted(odd[0])}: their rows will be invalid",
                   f"lead column {quoted(column)}: {len(odd)} sampled value(s) are not {what}, "
                   f"e.g. {quoted(odd[0])}")
    if not used:
        draft.flag("no column of lead GUIDs or e-mail addresses was found: name yours here",
                   "no column of lead GUIDs or e-mail addresses found: set lead_id_column or "
                   "lead_email_column in the mapping")
        out('# lead_id_column = ""')
    matches: list[FieldMatch] = []
    left: dict[str, str] = {}
    if activity is not None:
        matches, left = match_fields([s.name for s in samples if s.name not in used], activity)
        by_name = {s.name: s for s in samples}
        matches = [replace(m, problems=value_problems(m.spec, by_name[m.column].values))
                   for m in matches]
        used |= {m.column for m in matches}
    rest = [s for s in samples if s.name not in used]
    guesses = [g for s in rest if (g := detect_datetime(s, order)) is not None]
    when = choose_datetime(guesses)
    if when is not None:
        used.add(when.column)
        clock: TimeGuess | None = None
        if not when.has_time and not when.aware:
            # A date alone: its time of day may be in a column of its own.
            times = [t for s in rest if s.name != when.column
                     and (t := detect_time(s)) is not None]
            clock = choose_time(when.column, times, [s.name for s in samples])
            for other_time in times:
                if other_time is not clock:
                    left.setdefault(other_time.column, "also holds times of day")
        by_name = {s.name: s for s in samples}
        if clock is not None:
            used.add(clock.column)
            # A time counts as missing only beside a date: with no date the row is
            # invalid whatever the time (and said so for the date).
            days, clocks = by_name[when.column].values, by_name[clock.column].values
            empty_times = sum(1 for day, time in zip(days, clocks, strict=True)
                              if day.strip() and not time.strip())
            _date_and_time_lines(draft, when, clock, timezone, by_name[when.column].empty,
                                 empty_times)
        else:
            _datetime_lines(draft, when, timezone, by_name[when.column].empty)
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
    candidates = [s for s in samples if s.name not in used - {m.column for m in matches}]
    key = find_key_column(candidates)
    for repeated in repeated_key_values(candidates):
        draft.flag(f"{quoted(repeated.column)} is not the key_column: {repeated.describe()} "
                   "sampled (two calls under one id, or one exported twice?). With a repeated "
                   "key, a run creates an exact repeat once and sends none of the rows of a "
                   "key whose contents differ; "
                   + ("without a key column, a row's key is its content" if key is None
                      else f"{quoted(key)} is the key instead"),
                   f"{quoted(repeated.column)} is not the key column: {repeated.describe()} "
                   "sampled")
        left.setdefault(repeated.column, "a value repeats: not the key (see above)")
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


def _datetime_lines(draft: Draft, when: DateTimeGuess, timezone: str | None,
                    empty: int = 0) -> None:
    """One column of date-times (or of dates alone, which land at midnight)."""
    _date_lines(draft, when, "datetime", empty)
    if not when.has_time and not when.aware:
        column = quoted(when.column)
        draft.flag(f"the values of {column} have no time of day, and no column of times of day "
                   "was found beside it: every activity will land at midnight (00:00 in the "
                   "timezone below). If the time is in another column, map the two as "
                   "date_column/date_format and time_column/time_format instead.",
                   f"date-time column {column} holds dates with no time of day and no time "
                   "column was found: every activity will land at midnight")
    _timezone_lines(draft, when, timezone)
    draft.found.append(f"date-time {quoted(when.column)}"
                       + (f" ({when.format})" if when.format and not when.problem else ""))


def _date_and_time_lines(draft: Draft, when: DateTimeGuess, clock: TimeGuess,
                         timezone: str | None, empty: int, empty_times: int) -> None:
    """A column of dates and a column of times of day: the date-time built from the two."""
    out = draft.lines.append
    draft.comment("the date-time is built from a column of dates and a column of times of "
                  "day, read together in the timezone below")
    _date_lines(draft, when, "date", empty)
    column = quoted(clock.column)
    out(f"time_column = {column}  # e.g. {quoted(clock.example)}")
    if clock.problem is not None:
        draft.flag(f"no time_format written: {clock.problem}. Write one that reads every "
                   "value (Python's strptime codes: %H or %I with %p, %M, %S).",
                   f"time column {column}: {clock.problem}; write time_format by hand")
        out('# time_format = ""')
    elif clock.format is not None:
        out(f"time_format = {quoted(clock.format)}")
    _unparsed_flag(draft, clock.unparsed, "times of day", f"time column {column}")
    if empty_times:
        draft.flag(f"{empty_times} sampled cell(s) of {column} are empty beside a date: their "
                   "rows will be invalid. To post them at midnight instead, add "
                   'empty_time = "midnight".',
                   f"time column {column}: {empty_times} sampled cell(s) are empty beside a "
                   "date; their rows will be invalid")
    _timezone_lines(draft, when, timezone)
    draft.found.append(f"date {quoted(when.column)}"
                       + (f" ({when.format})" if when.format and not when.problem else "")
                       + f" and time {column}"
                       + (f" ({clock.format})" if clock.format and not clock.problem else ""))


def _date_lines(draft: Draft, when: DateTimeGuess, key: str, empty: int) -> None:
    """The ``{key}_column`` and ``{key}_format`` lines (key: datetime, or date)."""
    out, warn = draft.lines.append, draft.warnings.append
    column = quoted(when.column)
    what = "date-time" if key == "datetime" else "date"
    out(f"{key}_column = {column}  # e.g. {quoted(when.example)}")
    if when.problem is not None:
        draft.flag(f"no {key}_format written: {when.problem}. Write one that reads every "
                   "value (Python's strptime codes).",
                   f"{what} column {column}: {when.problem}; write {key}_format by hand")
        out(f'# {key}_format = ""')
    elif when.format is not None:
        if when.ambiguous:
            other = other_order(when.order)
            draft.flag(
                f"CONFIRM: no sampled value tells day-first from month-first (every value "
                f"reads both ways, e.g. {quoted(when.example)}); {when.order} is written. If "
                f"the dates are {other}, write {quoted(when.other_format or '')} (or run init "
                f"again with --{other}).",
                f"{what} column {column}: no sampled value tells day-first from "
                f"month-first; {when.order} was written: confirm it in the mapping")
        elif when.proof:
            draft.comment(f"{when.order}: {quoted(when.proof)} reads no other way"
                          + (", whatever was asked for" if when.overruled else ""))
        if when.overruled:
            warn(f"{what} column {column}: the values prove {when.order}; the order asked "
                 "for was not used")
        out(f"{key}_format = {quoted(when.format)}")
    _unparsed_flag(draft, when.unparsed, f"{what}s", f"{what} column {column}")
    if empty:
        draft.flag(f"{empty} sampled cell(s) of {column} are empty: their rows will be invalid "
                   "(sent without a date, an activity is stamped with the time of its "
                   'arrival). To post them so instead, add empty_datetime = "now".',
                   f"{what} column {column}: {empty} sampled cell(s) are empty; their rows "
                   "will be invalid")


def _unparsed_flag(draft: Draft, unparsed: Sequence[str], noun: str, label: str) -> None:
    """Flag sampled values of a date or time column that do not read as ``noun``: their rows
    will be invalid (``label`` names the column in the warning)."""
    if not unparsed:
        return
    count, example = len(unparsed), quoted(unparsed[0])
    draft.flag(f"{count} sampled value(s) do not read as {noun}, e.g. {example}: their rows "
               "will be invalid",
               f"{label}: {count} sampled value(s) do not read as {noun}, e.g. {example}")


def _timezone_lines(draft: Draft, when: DateTimeGuess, timezone: str | None) -> None:
    out = draft.lines.append
    column = quoted(when.column)
    if timezone is not None:
        out(f"timezone = {quoted(timezone)}")
    elif when.aware:
        draft.comment("every sampled value carries its UTC offset: no timezone is needed")
    else:
        draft.flag("CONFIRM the time zone: the values carry no UTC offset, and without a "
                   "timezone line they are read as UTC. Write the zone they were written in "
                   "(an IANA name) and remove the # :",
                   f"date-time column {column}: the values carry no UTC offset; set timezone "
                   "in the mapping (without it they are read as UTC)")
        out('# timezone = "Asia/Kolkata"')


def _field_lines(draft: Draft, matches: list[FieldMatch], activity: ActivityType | None) -> None:
    out = draft.lines.append
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
            count, example = len(match.problems), match.problems[0]
            draft.flag(f"{count} sampled value(s) of {quoted(match.column)} would be invalid, "
                       f"e.g. {example}",
                       f"column {quoted(match.column)} → {spec.label()}: {count} sampled "
                       f"value(s) would be invalid, e.g. {example}")
    draft.found.append(f"{len(matches)} field(s)")
    if activity is None:
        return
    unmapped = preflight([(m.spec.schema_name, m.column) for m in matches], activity)
    for spec in unmapped.mandatory_unmapped:
        draft.comment(f"MANDATORY FIELD WITH NO COLUMN: {spec.label()}: the run refuses "
                      "the mapping until a column is mapped to it", loud=True)
    if unmapped.mandatory_unmapped:
        draft.warnings.append(
            f"mandatory field(s) of type {activity.code} with no column: "
            f"{', '.join(s.label() for s in unmapped.mandatory_unmapped)}; the run refuses the "
            "mapping until they are mapped")
    if unmapped.unmapped:
        draft.comment(f"Fields of type {activity.code} with no column: "
                      + ", ".join(s.label() for s in unmapped.unmapped))
