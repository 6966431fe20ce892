"""Planning a row: what the feeder does with it, from everything known of it before.

The one place where a row's fate is decided before any request; the feeder only applies
the :class:`Plan`. Pure: plain values in, a plan out, no I/O. What is known of a row:

- its line in the results file: :class:`~bulkpost.core.resume.Recorded`, and the whole line
  when the plan uses it (:func:`needs_line` says when, so that a resume reads from disk
  only the lines it uses);
- with ``--history``, what the history or an earlier row of this input holds of its key
  (:class:`~bulkpost.core.key_holder.KeyHolder`);
- the input's other rows with its key (:class:`~bulkpost.core.repeats.Repeat`), with or without
  a history;
- the run's options that bear on it (:class:`PlanOptions`).

The rules are :func:`decide`'s decisions, in the order they apply, one function each whose
docstring states its rule: the results file's first (:func:`~bulkpost.core.resume.plan_row`,
with its refusals of a results file written for another input), then the input's repeated
keys, then, with ``--history``, the key's holder and ``--on-changed``. A row looked up first
carries when earlier attempts may have reached the API (:func:`sent_until`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bulkpost.core.activity import Activity, InvalidRow, identity_hash
from bulkpost.core.attempts import BACKOFF_CAP
from bulkpost.core.key_holder import KeyHolder
from bulkpost.core.options import RunOptions
from bulkpost.core.reconcile import SendWindow
from bulkpost.core.repeats import REPEAT, Repeat
from bulkpost.core.results_line import RowOutcome, parse_utc_text
from bulkpost.core.resume import Action, Recorded, plan_row
from bulkpost.core.statuses import Status

# What --on-changed post does, said wherever it is named: it never updates, it adds.
POST_CREATES = ("--on-changed post would create a new activity beside the existing one (a "
                "second copy)")
# A row skipped for these reasons is decided again by each run (:func:`_decided_again`).
DECIDED_AGAIN = ("changed", "duplicate key")
_PASSED_OVER = frozenset({Action.SKIP_POSTED, Action.KEEP, Action.SKIP_KEY,
                          Action.SKIP_CHANGED, Action.SKIP_REPEAT})
_SENDS = frozenset({Action.SEND, Action.RECONCILE, Action.UPDATE})


def sent_until(last: datetime, attempts: int, timeout: float, backoff: float) -> SendWindow:
    """When ``attempts`` that ended at ``last`` may have reached the API: each of at most a
    ``timeout`` and the longest wait between attempts (:data:`BACKOFF_CAP` backoffs)."""
    span = attempts * (timeout + BACKOFF_CAP * backoff)
    return SendWindow.around(last - timedelta(seconds=span), last, timeout)


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """The run's options as a row's plan reads them: the run's own, read and never copied,
    and whether the run reads a history."""

    run: RunOptions
    history: bool = False  # a history is read (given, or the account's): keys plan rows too

    @property
    def key_column(self) -> str:
        """The key's column, named by a row that --on-changed fail records invalid."""
        return self.run.mapping.key_column or ""

    def sent_until(self, last: datetime, attempts: int) -> SendWindow:
        """When this run's ``attempts`` that ended at ``last`` may have reached the API."""
        return sent_until(last, attempts, self.run.timeout, self.run.backoff)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the feeder does with one row: send it (its job's fields), or count it now."""

    action: Action
    counted: Status | None = None  # counted now as this, never sent; None: sent (or to send)
    record: RowOutcome | None = None  # the line to record now, if any
    recorded_status: Status | None = None  # sent: its status on file, which its job carries
    window: SendWindow | None = None  # looked up first: when earlier attempts may have gone
    problem: tuple[str, str] | None = None  # (column, reason): why the row is invalid
    changed: bool = False  # --history: its key was posted before with other content
    repair: str = ""  # --history: mark its key posted with this activity (it was not)
    sample: tuple[str, SendWindow] | None = None  # its activity, to calibrate look-ups with
    other_claim: str = ""  # sent although a run that stopped (this id) sent other content
    update_of: str = ""  # --on-changed update: the activity to update

    @property
    def sends(self) -> bool:
        return self.action in _SENDS

    @property
    def passed_over(self) -> bool:
        """An earlier run finished the row (it moves the progress bar, not the rate)."""
        return self.action in _PASSED_OVER


# The commonest plans, made once: a resume plans a million rows.
_SEND = Plan(Action.SEND)
_PASSED = Plan(Action.SKIP_POSTED, Status.SKIPPED)


def decide(row: Activity | InvalidRow, recorded: Recorded | None, line: RowOutcome | None,
           key_holder: KeyHolder | None, options: PlanOptions, *,
           sample_wanted: bool = False, repeat: Repeat | None = None) -> Plan:
    """The plan for one row: the decisions below, one function each stating its rule, in the
    order they apply.

    1. what the results file says (:func:`~bulkpost.core.resume.plan_row`), all there is to
       say of a row that does not validate (:func:`_invalid_row`);
    2. whether a skip on file is decided again (:func:`_decided_again`), and whether the
       history lacks a row the results file holds done (:func:`_history_repair`);
    3. what the input's repeated keys say (:func:`_by_repeats`);
    4. a row an earlier run finished is passed over (:func:`_passed_over`), a rejected one
       unchanged kept;
    5. what the history, or an earlier row, holds of its key (:func:`_by_key`), and what
       ``--on-changed`` asks when that is other content (:func:`_on_changed`);
    6. a row to send: when its earlier attempts may have reached the API (:func:`_to_send`).

    ``recorded``: what the results file holds of it; ``line``: its last line there, when
    :func:`needs_line` says the plan uses it (else None); ``key_holder``: who holds its key,
    the history or an earlier row of this input (with ``--history``; only valid rows are
    screened); ``sample_wanted``: look-ups are not calibrated yet and a posted row may
    calibrate them; ``repeat``: the input's rows with its key, when it has more than one.
    Raises UsageError for a results file written for another input.
    """
    action = plan_row(row, recorded, options.run.resend_unknown)
    if isinstance(row, InvalidRow):
        return _invalid_row(row, action, recorded)
    holder = key_holder if options.history else None
    again = _decided_again(action, recorded, line, options)
    if again is not None:
        action, recorded = Action.SEND, None
    repair = _history_repair(action, recorded, line, holder, options)
    planned = _by_repeats(row, action, recorded, repeat, options, again)
    if planned is not None:
        return planned
    if action is Action.SKIP_POSTED:
        return _passed_over(row, recorded, line, options, repair, sample_wanted)
    if action is Action.KEEP:
        assert recorded is not None
        return Plan(action, recorded.status)
    if holder is None:
        return _to_send(action, recorded, line, None, options)
    return _by_key(row, action, recorded, line, holder, options, again)


def _invalid_row(row: InvalidRow, action: Action, recorded: Recorded | None) -> Plan:
    """A row that does not validate is recorded ``invalid``, naming its cell, unless the
    results file holds it done (skipped) or maybe created (kept: it cannot be looked up)."""
    if action is Action.RECORD_INVALID:
        return Plan(action, Status.INVALID, RowOutcome(
            row.row, row.key, Status.INVALID, error_type=row.column, error=row.reason,
            content_hash=row.content_hash), problem=(row.column, row.reason))
    assert recorded is not None  # skipped or kept: there was a line
    return Plan(action, Status.SKIPPED if action is Action.SKIP_POSTED else recorded.status)


def _decided_again(action: Action, recorded: Recorded | None, line: RowOutcome | None,
                   options: PlanOptions) -> RowOutcome | None:
    """The skipped line of a row an earlier run skipped, when this run decides it again (as a
    row to send); None: it stays skipped. Decided again: a ``repeat`` (the export may be
    fixed) and, with a history, a ``changed`` or ``duplicate key`` (``--on-changed`` or the
    input's other rows may say otherwise now)."""
    if (action is not Action.SKIP_POSTED or recorded is None
            or recorded.status is not Status.SKIPPED or line is None):
        return None
    if line.error_type == REPEAT or (options.history and line.error_type in DECIDED_AGAIN):
        return line
    return None


def _history_repair(action: Action, recorded: Recorded | None, line: RowOutcome | None,
                    holder: KeyHolder | None, options: PlanOptions) -> str:
    """The activity the history is told holds the row's key ("": none): with a history, not
    in a dry run, for a row the results file holds done by an activity (posted or updated by
    it, or skipped naming the activity holding its key) that the history lacks
    (:func:`_history_lacks`). A fixed row's key is the fix's: never repaired."""
    activity_id = line.activity_id if line is not None else ""
    if (action is not Action.SKIP_POSTED or recorded is None or not activity_id
            or recorded.status is Status.FIXED or not options.history or options.run.dry_run):
        return ""
    return activity_id if _history_lacks(recorded.status, activity_id, holder) else ""


def _history_lacks(status: Status, activity_id: str, holder: KeyHolder | None) -> bool:
    """Whether the history lacks what the results file holds done: the key posted by no
    activity and in no earlier row (the run stopped before committing it, or used another
    history; a key posted since, with any content, is left as it is), or, the row updated,
    the activity held with its content before the update (the run stopped before the
    history took the new content)."""
    if holder is None or not (holder.posted or holder.row):
        return True
    return (status is Status.UPDATED and holder.posted and not holder.same_content
            and holder.activity_id == activity_id)


def _by_repeats(row: Activity, action: Action, recorded: Recorded | None,
                repeat: Repeat | None, options: PlanOptions,
                again: RowOutcome | None) -> Plan | None:
    """What the input's other rows with the key of a row still to be sent say (not of one
    that may have been sent: that is looked up first, as before): with other content,
    ``invalid``, naming them; an earlier row with its content, skipped as a ``repeat`` of it.
    None: they say nothing (no other row, or the key's first row)."""
    if (repeat is None or action is not Action.SEND
            or (recorded is not None and recorded.status is Status.UNKNOWN)):
        return None
    if repeat.differ:
        column = options.key_column or "key"
        reason = repeat.conflict(row.row)
        return Plan(Action.KEY_CONFLICT, Status.INVALID, RowOutcome(
            row.row, row.key, Status.INVALID, error_type=column, error=reason,
            content_hash=row.content_hash), problem=(column, reason))
    if repeat.first != row.row:
        return _skipped(row, options, Action.SKIP_REPEAT, REPEAT, repeat.repeat_of(), "",
                        again)
    return None


def _passed_over(row: Activity, recorded: Recorded | None, line: RowOutcome | None,
                 options: PlanOptions, repair: str, sample_wanted: bool) -> Plan:
    """A row an earlier run finished is skipped; its key is given to the history if it lacks
    it (``repair``), and it is offered to calibrate the look-ups while they are not
    (:func:`_sample`)."""
    sample = _sample(row, recorded, line, options) if sample_wanted else None
    if not repair and sample is None:
        return _PASSED
    return Plan(Action.SKIP_POSTED, Status.SKIPPED, repair=repair, sample=sample)


def _by_key(row: Activity, action: Action, recorded: Recorded | None,
            line: RowOutcome | None, holder: KeyHolder, options: PlanOptions,
            again: RowOutcome | None) -> Plan:
    """What the history, or an earlier row of this input, holding the key of a row to send
    says: with this content, posted or in an earlier row: skipped; claimed by a run that
    stopped: looked up first; other content claimed only: sent, naming the run (whether that
    was created cannot be looked up: its content is not known here, and the key may hold
    nothing yet); other content posted, or in an earlier row: :func:`_on_changed`."""
    if holder.same_content and (holder.row or holder.posted):
        return _skipped(row, options, Action.SKIP_KEY,
                        "duplicate key" if holder.row else "history",
                        f"{_named_key(row)} was {holder.describe()}",
                        holder.activity_id if holder.posted else "", again)
    if holder.same_content:
        return _to_send(Action.RECONCILE, recorded, line, holder, options)
    if not (holder.posted or holder.row):
        return _to_send(action, recorded, line, holder, options, other_claim=holder.run_id)
    return _on_changed(row, action, recorded, line, holder, options, again)


def _on_changed(row: Activity, action: Action, recorded: Recorded | None,
                line: RowOutcome | None, holder: KeyHolder, options: PlanOptions,
                again: RowOutcome | None) -> Plan:
    """What ``--on-changed`` asks of a row whose key was posted, or is in an earlier row,
    with other content: ``post`` sends it (counted changed); ``update`` updates the key's
    activity when an update can bring it to the row (:func:`_not_updatable`), else skips it
    as ``changed``, saying why; ``skip`` skips it as ``changed``; ``fail`` records it
    ``invalid``, naming the key's column."""
    held = f"{_named_key(row)} was {holder.describe()}, with other content"
    asked = options.run.on_changed
    if asked == "post":
        return _to_send(action, recorded, line, holder, options, changed=True)
    if asked == "update":
        why = _not_updatable(row, holder)
        if not why:
            return Plan(Action.UPDATE, recorded_status=recorded.status if recorded else None,
                        update_of=holder.activity_id)
        return _skipped(row, options, Action.SKIP_CHANGED, "changed",
                        f"{held}, but {why}, which an update cannot change (--on-changed "
                        f"update); {POST_CREATES}", "", again, changed=True)
    if asked == "skip":
        return _skipped(row, options, Action.SKIP_CHANGED, "changed",
                        f"{held}; skipped (--on-changed skip)", "", again, changed=True)
    column, reason = options.key_column or "key", f"{held} (--on-changed fail)"
    return Plan(Action.FAIL_CHANGED, Status.INVALID, RowOutcome(
        row.row, row.key, Status.INVALID, error_type=column, error=reason,
        content_hash=row.content_hash), problem=(column, reason), changed=True)


def _named_key(row: Activity) -> str:
    """The row's key as a reason names it."""
    return f"key {row.key!r}" if row.key else "its content"


def _to_send(action: Action, recorded: Recorded | None, line: RowOutcome | None,
             holder: KeyHolder | None, options: PlanOptions, *, changed: bool = False,
             other_claim: str = "") -> Plan:
    """A row sent (looked up first if ``action`` says so), with when its earlier attempts
    may have reached the API (:func:`_window`)."""
    if action is Action.SEND and recorded is None and not changed and not other_claim:
        return _SEND
    return Plan(action, recorded_status=recorded.status if recorded else None,
                window=_window(action, recorded, line, holder, options), changed=changed,
                other_claim=other_claim)


def _not_updatable(row: Activity, holder: KeyHolder) -> str:
    """Why updating the key's activity cannot bring it to this row ("": it can)."""
    if holder.row:
        return f"row {holder.row} of this input has the key (updates go across runs)"
    if not holder.identity:
        return ("the history does not know the activity's lead and date-time (posted by an "
                "older bulkpost, or imported without --input and --mapping: bulkpost history "
                "import RESULTS --input INPUT --mapping MAPPING records them)")
    if holder.event_code is not None and holder.event_code != row.event:
        return f"its event code changed ({holder.event_code} → {row.event})"
    if holder.identity != identity_hash(row):
        return "its lead or date-time changed"
    return ""


def needs_line(row: Activity | InvalidRow, recorded: Recorded | None,
               key_holder: KeyHolder | None, options: PlanOptions, *,
               sample_wanted: bool = False) -> bool:
    """Whether :func:`decide` uses the row's recorded line (read from disk, a row at a
    time: a resume of a million posted rows reads none it does not use)."""
    if recorded is None or not isinstance(row, Activity):
        return False
    status = recorded.status
    if status is Status.SKIPPED:
        return True  # a repeat (or, with a history, a changed key) is decided again
    if status is Status.POSTED or status is Status.UPDATED:
        return options.history or (sample_wanted and status is Status.POSTED
                                   and recorded.content_hash == row.content_hash)
    if (status is Status.UNKNOWN or status is Status.FAILED) and not options.run.dry_run:
        return decide(row, recorded, None, key_holder, options).action is Action.RECONCILE
    return False


def _skipped(row: Activity, options: PlanOptions, action: Action, error_type: str,
             error: str, activity_id: str, again: RowOutcome | None, *,
             changed: bool = False) -> Plan:
    """A row skipped by the history: recorded, unless its skipped line (decided again) says
    so already or this is a dry run (which decides nothing)."""
    unchanged = again is not None and (again.status, again.error_type, again.activity_id) == (
        Status.SKIPPED, error_type, activity_id)
    record = None if unchanged or options.run.dry_run else RowOutcome(
        row.row, row.key, Status.SKIPPED, activity_id=activity_id, error_type=error_type,
        error=error, content_hash=row.content_hash)
    return Plan(action, Status.SKIPPED, record, changed=changed)


def _sample(row: Activity, recorded: Recorded | None, line: RowOutcome | None,
            options: PlanOptions) -> tuple[str, SendWindow] | None:
    """A row an earlier run posted, with this very content: what calibration may look up,
    while look-ups are not calibrated (a resumed run)."""
    if (recorded is None or recorded.status is not Status.POSTED
            or recorded.content_hash != row.content_hash
            or line is None or not line.activity_id or not line.updated_at):
        return None
    return line.activity_id, options.sent_until(parse_utc_text(line.updated_at),
                                                max(1, line.attempts))


def _window(action: Action, recorded: Recorded | None, line: RowOutcome | None,
            key_holder: KeyHolder | None, options: PlanOptions) -> SendWindow | None:
    """When earlier attempts of a row looked up first may have reached the API: those the
    results file recorded, and the claim a run that stopped left in the history."""
    if action is not Action.RECONCILE or options.run.dry_run:
        return None
    window = None
    if (recorded is not None and recorded.status in (Status.UNKNOWN, Status.FAILED)
            and line is not None and line.updated_at):
        window = options.sent_until(parse_utc_text(line.updated_at), max(1, line.attempts))
    if key_holder is not None and not key_holder.posted and not key_holder.row:
        # The claim was marked at ``at`` by its last attempt, of at most --max-attempts.
        window = options.sent_until(datetime.fromtimestamp(key_holder.at, UTC),
                                    options.run.max_attempts).joined(window)
    return window
