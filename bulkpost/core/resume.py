"""Planning a resume: what to do with a row, given what an earlier run recorded for it.

Pure functions over plain values, no I/O. The rules:

- never seen: send it (or record it ``invalid``);
- ``posted``: skip; it is never sent twice;
- ``updated`` (``--on-changed update``: its key's activity was updated in place): skip, the
  same;
- ``skipped`` (its key was in the history, or an earlier row's): skip, the same;
- ``fixed`` (loaded, fixed, from a failures file: ``run --fixes``): skip, whatever the row
  holds now (the input still holds the content that failed; never "another input");
- ``failed`` (retryable, attempts spent): reconcile (an attempt may have created it), then
  send if it was not created;
- ``rejected``: send again only if the request it would send changed (content hash);
- ``invalid``: validate again (free: no call); send if it is now valid;
- ``unknown`` (may have reached the API): reconcile, then send if it was not created;
  with ``--resend-unknown``, send without looking.

A row whose key differs from the key recorded under its number means the results file was
written for another input (unless the row was recorded ``invalid``: it was never sent, and
its key may be fixed as its other cells may, say to give two calls under one key each
their own); so does a row recorded ``posted`` whose number now maps to other
content (the row would be skipped, never sent). Both stop the run before any request: the
run compares every posted row before it sends (:func:`posted_differs`), and the planner
refuses such a row again should a one-pass stream bring one. The refusal says what a new
results file would send again (:data:`new_results_file`: the run sets it, from its history).

These are the results file's rules (:func:`plan_row`); the planner
(:func:`bulkpost.core.planner.decide`), the one place a row's plan is made, starts from them and
adds the history's.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from typing import TYPE_CHECKING, NamedTuple

from bulkpost.core.activity import Activity, InvalidRow
from bulkpost.core.row_numbers import row_and_line, rows_and_lines
from bulkpost.core.statuses import Status
from bulkpost.errors import UsageError

_MASK = (1 << 64) - 1

if TYPE_CHECKING:
    from pathlib import Path


# Rows whose request the API carried out with the content the results file records.
_DONE_WITH_CONTENT = frozenset({Status.POSTED, Status.UPDATED})
# Rows an earlier run finished: skipped, never sent again.
_DONE = frozenset({Status.POSTED, Status.SKIPPED, Status.UPDATED, Status.FIXED})


class Action(enum.Enum):
    """What this run does with a row. :func:`plan_row` decides among the first five from the
    results file; the planner (:mod:`bulkpost.core.planner`) adds the history's four and the
    input's repeated keys' two. Internal:
    a value is the member's name, never written to a file or shown (unlike :class:`Status`)."""

    SEND = "send"            # post it
    RECONCILE = "reconcile"  # look it up first: an earlier run may have created it
    RECORD_INVALID = "record_invalid"  # record it invalid, send nothing
    SKIP_POSTED = "skip_posted"  # recorded posted, updated (or skipped) by an earlier run
    KEEP = "keep"            # keep the earlier outcome (rejected unchanged)
    SKIP_KEY = "skip_key"    # --history: its key was posted, or in an earlier row, as is
    SKIP_CHANGED = "skip_changed"  # --on-changed skip: its key holds other content
    FAIL_CHANGED = "fail_changed"  # --on-changed fail: recorded invalid, naming the key
    UPDATE = "update"        # --on-changed update: update the activity its key holds
    SKIP_REPEAT = "skip_repeat"  # an exact repeat of an earlier row of the input
    KEY_CONFLICT = "key_conflict"  # its key is in other rows with other content: invalid


class Recorded(NamedTuple):
    """What the results file recorded last for one row, in brief (a tuple: a resume makes a
    million; :class:`~bulkpost.storage.results_file.RowOutcome` is the whole line)."""

    status: Status
    content_hash: str
    key_digest: int  # key_digest() of the recorded key; 0 when it had none


def key_digest(key: str) -> int:
    """A non-zero 64-bit digest of a row key or activity Id, so that a resume need not
    hold every key in memory.

    Python's own string hash (SipHash, salted per process): digests are only ever compared
    within one process, never stored, and this is the cheapest one to compute a million
    times on a resume.
    """
    return (hash(key) & _MASK) or 1


def posted_differs(current: Activity | InvalidRow, recorded: Recorded | None) -> bool:
    """Whether the results file holds ``current``'s row number as posted with other
    content: then this is not the input (or the mapping) that results file was written for.

    Only a valid row can be compared (an invalid row's fingerprint is of its cells, not of
    a request); a posted row that no longer validates, say after its activity type's
    fields changed, is skipped as posted."""
    return (isinstance(current, Activity) and recorded is not None
            and recorded.status in _DONE_WITH_CONTENT
            and bool(recorded.content_hash) and recorded.content_hash != current.content_hash)


# What a new results file would send again, said by the refusals of another input: the run
# sets it once its history is known (:func:`new_results_advice`).
new_results_file: ContextVar[str] = ContextVar(
    "new_results_file", default="A new --results file sends again every row that no history "
    "holds as created, those posted here too")


def new_results_advice(history: Path | None, create_again: bool) -> str:
    """What loading this input with a new results file would send again: nothing a history
    holds as created; every row without one."""
    if history is not None:
        return (f"With a new --results file, rows the history ({history}) holds as created "
                "(by key; by content without a key column) are skipped, not sent again; rows "
                "posted by a run that kept no history there (--create-again, another "
                "--history) would be sent again")
    if create_again:
        return ("A new --results file sends every row again, those posted here too: "
                "--create-again keeps no history to skip them")
    return ("A new --results file sends every row again, those posted here too: this run "
            "reads no history")


def other_input(rows: list[int]) -> UsageError:
    """The refusal when rows recorded posted now hold other content."""
    return UsageError(
        f"the results file was written for another input (or another mapping): "
        f"{rows_and_lines(rows)} {'is' if len(rows) == 1 else 'are'} recorded as posted, but "
        f"{'holds' if len(rows) == 1 else 'hold'} other content in this input, so "
        f"{'it' if len(rows) == 1 else 'they'} "
        "would be skipped without being sent. Nothing was sent. Rows are numbered per file: "
        "another input needs a results file of its own (editing rows that were not posted "
        f"is fine). {new_results_file.get()}")


def plan_row(current: Activity | InvalidRow, recorded: Recorded | None,
             resend_unknown: bool = False) -> Action:
    """What the results file alone says to do with one row (one of the first five actions);
    the planner (:func:`bulkpost.core.planner.decide`) starts from this. Raises UsageError for a
    results file written for another input (:func:`_refuse_another_input`)."""
    _refuse_another_input(current, recorded)
    status = recorded.status if recorded else None
    if status in _DONE:
        return Action.SKIP_POSTED
    if isinstance(current, InvalidRow):
        return _invalid_again(status, resend_unknown)
    if status is Status.UNKNOWN:
        return Action.SEND if resend_unknown else Action.RECONCILE
    if status is Status.FAILED:
        return Action.RECONCILE
    if (status is Status.REJECTED and recorded is not None
            and recorded.content_hash == current.content_hash):
        return Action.KEEP
    return Action.SEND


def _refuse_another_input(current: Activity | InvalidRow, recorded: Recorded | None) -> None:
    """Raises UsageError when the results file was written for another input: the row's key
    is not the one recorded under its number (unless it was recorded ``invalid``), or the
    row recorded posted holds other content (:func:`posted_differs`)."""
    if (recorded is not None and recorded.key_digest and recorded.status is not Status.INVALID
            and recorded.key_digest != key_digest(current.key)):
        raise UsageError(
            f"the results file was written for another input: {row_and_line(current.row)} "
            f"has key {current.key!r} here but another key in the results file: another "
            f"input needs a results file of its own. {new_results_file.get()}")
    if posted_differs(current, recorded):
        raise other_input([current.row])


def _invalid_again(status: Status | None, resend_unknown: bool) -> Action:
    """A row that no longer validates, not done: recorded ``invalid``; but a row recorded
    unknown or failed (it may have been created) is kept as it was, since it cannot be
    looked up, so that once it validates again it is looked up before it is sent, never
    sent blind (unknown with ``--resend-unknown``: recorded invalid)."""
    if (status is Status.UNKNOWN and not resend_unknown) or status is Status.FAILED:
        return Action.KEEP
    return Action.RECORD_INVALID
