"""Column names, and columns matched to an activity type's custom fields by them. No I/O.

Owns how ``bulkpost init`` reads a name: its words (:func:`name_tokens`, also the header
hints of :mod:`bulkpost.onboarding.sampled_columns`), which column fills which field and why each
other column is left, and how a name or value is written (:func:`quoted`). The rules, each
a plain function tested with plain tables:

- a column name matches a field's display name when both reduce to the same letters and
  digits (case, punctuation, underscores, units in brackets and a few common abbreviations
  aside), or is the field's SchemaName;
- else it is a near spelling when ``difflib`` rates the two at least :data:`NEAR_MATCH`;
  names of fewer than :data:`SHORT_NAME` letters and digits match only exactly;
- one field takes one column: the higher similarity wins, then the name closer as written,
  then the leftmost; the others are left with the reason;
- a match carries the fields of the same display name (``twins``: the mapping must name the
  right SchemaName) and the sampled values the field would refuse, with
  :meth:`~bulkpost.core.schema.FieldSpec.check`'s reason (those rows will be invalid).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from difflib import SequenceMatcher

from bulkpost.core.schema import ActivityType, FieldSpec

NEAR_MATCH = 0.85  # difflib ratio from which a column name is a near spelling of a field's
SHORT_NAME = 5  # names of fewer letters and digits match only exactly ("qty" is no "city")
HINT = 0.6  # a column whose closest field rates this much has it named in its comment

_ABBREVIATIONS = {"no": "number", "num": "number", "nbr": "number", "qty": "quantity",
                  "amt": "amount", "dt": "date", "desc": "description", "ref": "reference"}
_UNITS = re.compile(r"\s*(\([^()]*\)|\[[^\[\]]*\])")


def name_tokens(name: str) -> tuple[str, ...]:
    """The words of a column or field name, lower case, units in brackets and punctuation
    dropped, common abbreviations spelled out: "Order No. (#)" → ("order", "number")."""
    text = name.replace("#", " number ")
    unitless = _UNITS.sub(" ", text)
    text = unitless if re.search(r"[^\W_]", unitless) else text
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # camelCase: OrderNo → Order No
    return tuple(_ABBREVIATIONS.get(w, w) for w in re.findall(r"[^\W_]+", text.casefold()))


def quoted(text: str) -> str:
    """A TOML basic string of ``text``, also safe inside a comment (no line breaks): how a
    name or value is written in the mapping and said in a message."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


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
