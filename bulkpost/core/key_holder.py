"""Who holds a row's key: what the history, or an earlier row of this input, holds of it.

With ``--history``, a row is planned (:func:`bulkpost.core.planner.decide`) knowing who holds
its key, and with what content: the history (posted, or claimed by a run that stopped before
knowing) or the input's first row of the key. The history reads its rows of a key and hands
them to :func:`key_holder_of`, which says which of them decides the row. Pure: plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bulkpost.core.results_line import utc_text


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """Who holds a row's key, and how: the history (posted, or claimed by a run that
    stopped), or an earlier row of this input."""

    posted: bool  # False: claimed, sent by a run that stopped before knowing
    same_content: bool
    activity_id: str = ""
    run_id: str = ""
    at: int = 0
    row: int = 0  # non-zero: the earlier row of this input that has the key
    event_code: int | None = None  # posted: the activity's event code (None: not known)
    identity: str = ""  # posted: its lead and date-time, fingerprinted ("": not known)

    def describe(self) -> str:
        """Where the key was, to follow "key 'K' was …"."""
        if self.row:
            return f"in row {self.row} of this input"
        what = "posted" if self.posted else "sent (outcome unknown)"
        held = f" as activity {self.activity_id}" if self.activity_id and self.posted else ""
        return f"{what}{held} by run {self.run_id} at {utc_text(self.at)}"


def key_holder_of(content: int, first: tuple[int, int] | None,
                  posted: tuple[str, int, str, int, int | None, str] | None,
                  claims: Mapping[int, tuple[str, int, str]]) -> KeyHolder | None:
    """What decides a row with this content (a signed 64-bit hash) from what is held of its
    key: ``first``, the input's first row of the key (its number, its content); ``posted``,
    the key's posted activity (Id, content, run id, at, event code, identity); ``claims``,
    the key's open claims (content → run id, at, the activity it updates or ""). None:
    nothing; the row is the key's first."""
    if first is not None:  # the input's first row of a key decides for the later ones
        row, first_content = first
        return KeyHolder(posted=False, same_content=content == first_content, row=row)
    claim = claims.get(content)
    if posted is not None and (posted[1] == content or claim is None or claim[2]):
        # Posted: with this content, or with another and this one never sent, or sent as
        # an update of the posted activity (idempotent: it is simply updated again).
        activity_id, posted_content, run_id, at, event_code, identity = posted
        return KeyHolder(posted=True, same_content=posted_content == content,
                         activity_id=activity_id, run_id=run_id, at=at,
                         event_code=event_code, identity=identity)
    if claim is not None:  # this very content may be on the API already
        run_id, at, _ = claim
        return KeyHolder(posted=False, same_content=True, run_id=run_id, at=at)
    if claims:  # only other content was sent under this key
        run_id, at, _ = max(claims.values(), key=lambda claim: claim[1])
        return KeyHolder(posted=False, same_content=False, run_id=run_id, at=at)
    return None
