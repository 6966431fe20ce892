"""Calibration: how a run learns the way the account answers look-ups. Pure.

A look-up's "not found" is trusted only once a look-up has found, by content, an activity
known to be created from a row. What is learnt is a :class:`~bulkpost.core.reconcile.Reading`
(the ``CreatedOn`` rule, the entity rule, how ``Paging.Offset`` counts, what ``RecordCount``
means; ``calibrated`` once "not found" may be trusted), which the matching reads. This
module owns how it is learnt:

- :func:`calibrate`: what one look-up of a known activity teaches, or why it cannot be
  trusted (every field and the note must read back as sent, ``CreatedOn`` be the date-time
  sent or a moment the row was on the wire); :func:`probe_rule` and :func:`steady`: how
  ``Offset`` counts, from pages read at ``Offset`` 0, 1 and 2 of a lead whose first page is
  full and held still meanwhile. The pages are read by
  :mod:`bulkpost.delivery.lookup_calibration`;
- a calibrated reading is kept (:func:`bulkpost.storage.kept.save_reading`): in the file of
  lessons beside the results file (``RESULTS.learnt.json``) and in the history's ``meta``
  table, per host. A resumed run, or the next night's, trusts look-ups from its first row
  instead of calibrating again. A reading is reused only for the host it was learned on; a
  file that cannot be read or was written by another version is ignored (the run
  calibrates again), never trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from bulkpost.core.reconcile import PAGE_SIZE, Fingerprint, FoundActivity, Reading, SendWindow
from bulkpost.core.values import entity_rule, parse_shown_datetime, same_value


# -- learning it: the Offset rule, and one look-up of a known activity -----------------
def _overlaps(first: list[str], page: list[str]) -> bool:
    """Whether ``page`` mostly repeats ``first`` (activities arriving meanwhile shift pages
    by a few items, never by half a page between two quick reads)."""
    return len(set(first) & set(page)) * 2 > len(first)


def probe_rule(first: list[str], one: list[str], two: list[str] | None) -> str | None:
    """The Offset rule, from a lead whose first page (``Offset 0``, ``first``) is full: the
    page at ``Offset 1`` (``one``) and, when that one mostly repeats the first, the page at
    ``Offset 2`` (``two``). Counting rows, both repeat the first page but an item or two;
    counting pages from 0, ``Offset 1`` is the next page; from 1, ``Offset 1`` is the first
    page again and ``Offset 2`` the next. None: not a full first page, or ``two`` missing."""
    if len(first) < PAGE_SIZE // 2:
        return None
    if not _overlaps(first, one):
        return "pages0"
    if two is None:
        return None
    return "rows" if _overlaps(first, two) else "pages1"


def steady(first: list[str], again: list[str]) -> bool:
    """Whether the first page read again (``again``) is the first read (``first``) with at
    most a third of a page of activities that arrived meanwhile on top, and nothing else
    changed: then pages read in between were shifted by no more than that, which
    :func:`probe_rule` tolerates (it errs only past 10 of 25)."""
    if not first or first[0] not in again:
        return False
    shift = again.index(first[0])
    return shift <= PAGE_SIZE // 3 and again[shift:] == first[:len(again) - shift]


@dataclass(frozen=True, slots=True)
class Calibration:
    """What one look-up of a known activity taught, or why it cannot be trusted."""

    reading: Reading | None  # None: the look-up contradicts the row (see ``problem``)
    problem: str = ""


def calibrate(row: Fingerprint, activity_id: str, found: FoundActivity,
              window: SendWindow | None, kinds: Mapping[str, str],
              known: Reading) -> Calibration:
    """Learn from ``found``, the activity ``activity_id`` known to be created from ``row``.

    Every field must read back as the row's value (by meaning); the note must be shown
    (else a look-up could not tell rows apart by it) unless the row's note is empty.
    """
    try:
        entities = _note_read_back(row, activity_id, found, known.entities)
        entities = _fields_read_back(row, activity_id, found, kinds, entities)
        created_on = _created_on_rule(row, activity_id, found, window, known.created_on)
    except _Contradicts as contradiction:
        return Calibration(None, contradiction.problem)
    return Calibration(replace(known, calibrated=True, created_on=created_on,
                               entities=entities, fields_at=found.where or known.fields_at))


class _Contradicts(Exception):
    """The look-up of a known activity contradicts its row: it cannot be trusted."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _note_read_back(row: Fingerprint, activity_id: str, found: FoundActivity,
                    entities: str | None) -> str | None:
    """The entity rule, as the note shows it; raises :class:`_Contradicts` when the note is
    not shown (and the row has one) or reads back as another."""
    if found.note is None:
        if row.note:
            raise _Contradicts(f"the look-up shows no note for activity {activity_id}, "
                               "so rows cannot be told apart by their notes")
        return entities
    entities = entity_rule(row.note, found.note) or entities
    if not same_value("string", row.note, found.note, entities):
        raise _Contradicts(f"activity {activity_id} shows the note "
                           f"{found.note[:80]!r}, sent as {row.note[:80]!r}")
    return entities


def _fields_read_back(row: Fingerprint, activity_id: str, found: FoundActivity,
                      kinds: Mapping[str, str], entities: str | None) -> str | None:
    """The entity rule, as the fields show it (when the note did not tell); raises
    :class:`_Contradicts` when a field sent is not shown or reads back as another value."""
    for name, value in row.fields:
        shown = found.fields.get(name)
        if shown is None:
            if value:
                raise _Contradicts(f"the look-up does not show {name} of activity "
                                   f"{activity_id} (sent {value[:60]!r})")
            continue
        kind = kinds.get(name, "string")
        if kind == "string" and entities is None:
            entities = entity_rule(value, shown) or entities
        if not same_value(kind, value, shown, entities):
            raise _Contradicts(f"activity {activity_id} shows {name} as "
                               f"{shown[:60]!r}, sent as {value[:60]!r}")
    return entities


def _created_on_rule(row: Fingerprint, activity_id: str, found: FoundActivity,
                     window: SendWindow | None, known: str | None) -> str | None:
    """What ``CreatedOn`` shows: the date-time sent ("posted") or the arrival ("arrival");
    ``known`` when the row sent no date-time. Raises :class:`_Contradicts` when it is
    neither, or not a date-time."""
    created = parse_shown_datetime(found.created_on)
    if created is None:
        raise _Contradicts(f"activity {activity_id} shows CreatedOn "
                           f"{found.created_on!r}, which is not a date-time")
    if row.when is not None:
        if created == parse_shown_datetime(row.when):
            return "posted"
        if window is not None and window.holds(created):
            return "arrival"
        raise _Contradicts(f"activity {activity_id} shows CreatedOn "
                           f"{found.created_on!r}: neither the date-time sent "
                           f"({row.when}) nor a moment it was on the wire")
    if window is not None and not window.holds(created):
        raise _Contradicts(f"activity {activity_id} shows CreatedOn "
                           f"{found.created_on!r}, outside the time it was on the wire")
    return known
