"""What a sample of an input column's values says it holds. No I/O.

Owns what every guess ``bulkpost init`` makes starts from (:class:`ColumnSample`) and the
guesses of the lead's column (GUIDs, else e-mail addresses), the note and the row key; the
activity's date-time and its ``strptime`` format are
:mod:`bulkpost.onboarding.sampled_datetimes`'. The header only helps: its words
(:func:`~bulkpost.onboarding.field_matching.name_tokens`) break ties and rule columns out.
The rules, each a plain function tested with plain tables:

- a lead column is told by its values: at least :data:`SHARE` of the sampled non-empty
  cells must look the part as a run reads them (:mod:`bulkpost.core.activity`'s ``GUID``
  and ``EMAIL``); the others are returned, as their rows will be invalid. A header naming
  someone else (owner, agent) or a thing (order) is no lead's;
- the note is a column named like one, else the one column of long free text; the key is
  named like an id, and filled and unique in every sampled row (a column left out only
  because a value repeats is named, with the value and its rows: :func:`repeated_key_values`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bulkpost.core.activity import EMAIL, GUID
from bulkpost.onboarding.field_matching import name_tokens, quoted

SHARE = 0.5  # of the sampled non-empty cells that must look like a GUID, e-mail, date-time
LONG_TEXT = 40  # mean length of a free-text column taken as the note without a header hint

_LEAD_WORDS = {"lead", "prospect", "contact", "customer", "client", "email", "mail"}
_NOT_LEAD_WORDS = {"owner", "agent", "rep", "user", "assigned", "created", "modified",
                   "manager", "staff", "employee", "order", "source", "activity", "row",
                   "record", "transaction", "external", "product", "sender"}
_NOTE_WORDS = {"note", "notes", "comment", "comments", "remark", "remarks", "description",
               "details", "memo", "narration"}
_KEY_WORDS = {"id", "key", "uuid", "guid"}
_WEAK_KEY_WORDS = {"number", "reference", "code"}


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
