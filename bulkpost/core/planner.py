"""Planning a row: what the feeder does with it, from everything known of it before.

The one place where a row's fate is decided before any request; the feeder only applies
the :class:`Plan`. Pure: plain values in, a plan out, no I/O. What is known of a row:

- its line in the results file: :class:`~bulkpost.core.resume.Recorded`, and the whole line
  when the plan uses it (:func:`needs_line` says when, so that a resume reads from disk
  only the lines it uses);
- with ``--history``, what the history or an earlier row of this input holds of its key
  (:class:`KeyHolder`, read by :func:`key_holder_of`);
- the input's other rows with its key (:class:`~bulkpost.core.repeats.Repeat`), with or without
  a history;
- the run's options that bear on it (:class:`PlanOptions`).

The rules, in the order they apply:

1. the results file's (:func:`~bulkpost.core.resume.plan_row`), with its refusals of a results
   file written for another input;
2. the input's repeated keys (:mod:`bulkpost.core.repeats`), for a row still to be sent (not one
   that may have been sent: that is looked up first, as before) or skipped as a ``repeat``
   (decided again: the export may have been fixed): other rows with its key and other
   content: ``invalid``, naming them; an earlier row with its key and content: ``skipped``
   as a ``repeat`` of it;
3. with ``--history``, for a row still to be sent, or skipped as ``changed`` or ``duplicate
   key`` (decided again: ``--on-changed`` or the input's other rows may say otherwise now):
   its key posted, or in an earlier row of this input, with this content: ``skipped``;
   claimed with this content by a run that stopped: looked up first (an update of it: updated
   again, an update is idempotent); claimed with other content only: sent (those contents
   cannot be looked up); posted, or in an earlier row, with other content: as
   ``--on-changed`` says. ``update`` updates the key's activity in place when only what an
   update can change differs (the note, the custom fields); a row whose lead, event code or
   date-time changed is skipped as ``changed``, saying why. A row posted or updated (or
   skipped because its key was posted) whose key the history does not hold as recorded has
   the history repaired;
4. a row looked up first carries when earlier attempts may have reached the API (its
   :class:`~bulkpost.core.reconcile.SendWindow`): each attempt took at most a timeout and a
   backoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bulkpost.core.activity import Activity, InvalidRow, identity_hash
from bulkpost.core.reconcile import SendWindow
from bulkpost.core.repeats import REPEAT, Repeat
from bulkpost.core.results_line import RowOutcome, parse_utc_text, utc_text
from bulkpost.core.resume import Action, Recorded, plan_row
from bulkpost.core.statuses import Status

# What --on-changed post does, said wherever it is named: it never updates, it adds.
POST_CREATES = ("--on-changed post would create a new activity beside the existing one (a "
                "second copy)")
# A row skipped for these reasons is decided again by each run (see rule 2).
DECIDED_AGAIN = ("changed", "duplicate key")
_PASSED_OVER = frozenset({Action.SKIP_POSTED, Action.KEEP, Action.SKIP_KEY,
                          Action.SKIP_CHANGED, Action.SKIP_REPEAT})
_SENDS = frozenset({Action.SEND, Action.RECONCILE, Action.UPDATE})


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


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """The run's options that bear on a row's plan."""

    resend_unknown: bool = False
    history: bool = False  # --history: rows are planned against their keys too
    on_changed: str = "skip"  # skip | post | update | fail
    dry_run: bool = False  # decides nothing: records no ``skipped`` line, sends nothing
    key_column: str = ""  # named by a row that --on-changed fail records invalid
    timeout: float = 30.0
    backoff: float = 1.0
    backoff_cap: float = 30  # the longest wait between attempts, in backoffs
    max_attempts: int = 5

    def sent_until(self, last: datetime, attempts: int) -> SendWindow:
        """When attempts that ended at ``last`` may have reached the API: each of at most
        a timeout and a backoff."""
        span = attempts * (self.timeout + self.backoff_cap * self.backoff)
        return SendWindow.around(last - timedelta(seconds=span), last, self.timeout)


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
    """The plan for one row.

    ``recorded``: what the results file holds of it; ``line``: its last line there, when
    :func:`needs_line` says the plan uses it (else None); ``key_holder``: who holds its key,
    the history or an earlier row of this input (with ``--history``; only valid rows are
    screened); ``sample_wanted``: look-ups are not calibrated yet and a posted row may
    calibrate them; ``repeat``: the input's rows with its key, when it has more than one.
    Raises UsageError for a results file written for another input.
    """
    action = plan_row(row, recorded, options.resend_unknown)
    if isinstance(row, InvalidRow):
        if action is Action.RECORD_INVALID:
            return Plan(action, Status.INVALID, RowOutcome(
                row.row, row.key, Status.INVALID, error_type=row.column, error=row.reason,
                content_hash=row.content_hash), problem=(row.column, row.reason))
        assert recorded is not None  # skipped or kept: there was a line
        return Plan(action, Status.SKIPPED if action is Action.SKIP_POSTED else recorded.status)
    if not options.history:
        key_holder = None
    again = None  # the row's skipped line, when it is decided again
    repair = ""
    if (action is Action.SKIP_POSTED and recorded is not None
            and recorded.status is Status.SKIPPED and line is not None
            and line.error_type == REPEAT):
        # A repeat is decided again (with or without a history): the export may be fixed.
        again, action, recorded = line, Action.SEND, None
    if (action is Action.SKIP_POSTED and recorded is not None and options.history
            and recorded.status is not Status.FIXED):  # fixed: its key is the fix's
        if (recorded.status is Status.SKIPPED and line is not None
                and line.error_type in DECIDED_AGAIN):
            again, action, recorded = line, Action.SEND, None
        elif (line is not None and line.activity_id and not options.dry_run
              and (key_holder is None or not (key_holder.posted or key_holder.row))):
            # Posted (by this row, or by the run its skipped line names), but not in this
            # history: the run stopped before committing it, or used another history. A key
            # posted since, with any content, is left as it is.
            repair = line.activity_id
        elif (recorded.status is Status.UPDATED and line is not None and line.activity_id
              and not options.dry_run and key_holder is not None and key_holder.posted
              and not key_holder.same_content and key_holder.activity_id == line.activity_id):
            # Updated, but the run stopped before the history took the new content.
            repair = line.activity_id
    if (repeat is not None and action is Action.SEND
            and (recorded is None or recorded.status is not Status.UNKNOWN)):
        planned = _repeated(row, repeat, options, again)
        if planned is not None:
            return planned
    if action is Action.SKIP_POSTED:
        sample = _sample(row, recorded, line, options) if sample_wanted else None
        if not repair and sample is None:
            return _PASSED
        return Plan(action, Status.SKIPPED, repair=repair, sample=sample)
    if action is Action.KEEP:
        assert recorded is not None
        return Plan(action, recorded.status)
    changed, other_claim = False, ""
    if key_holder is not None:
        key = f"key {row.key!r}" if row.key else "its content"
        if key_holder.same_content:
            if key_holder.row or key_holder.posted:
                return _skipped(row, options, Action.SKIP_KEY,
                                "duplicate key" if key_holder.row else "history",
                                f"{key} was {key_holder.describe()}",
                                key_holder.activity_id if key_holder.posted else "", again)
            action = Action.RECONCILE  # a run that stopped sent it: look it up
        elif not key_holder.posted and not key_holder.row:
            # Runs that stopped sent only other content under this key; whether that was
            # created cannot be looked up (its content is not known here). The key may hold
            # nothing yet: send this row.
            other_claim = key_holder.run_id
        elif options.on_changed == "post":
            changed = True
        elif options.on_changed == "update":
            why = _not_updatable(row, key_holder)
            if why:
                return _skipped(row, options, Action.SKIP_CHANGED, "changed",
                                f"{key} was {key_holder.describe()}, with other content, but "
                                f"{why}, which an update cannot change (--on-changed update); "
                                f"{POST_CREATES}", "", again,
                                changed=True)
            return Plan(Action.UPDATE, recorded_status=recorded.status if recorded else None,
                        update_of=key_holder.activity_id)
        elif options.on_changed == "skip":
            return _skipped(row, options, Action.SKIP_CHANGED, "changed",
                            f"{key} was {key_holder.describe()}, with other content; skipped "
                            "(--on-changed skip)", "", again, changed=True)
        else:  # --on-changed fail
            column = options.key_column or "key"
            reason = (f"{key} was {key_holder.describe()}, with other content "
                      "(--on-changed fail)")
            return Plan(Action.FAIL_CHANGED, Status.INVALID, RowOutcome(
                row.row, row.key, Status.INVALID, error_type=column, error=reason,
                content_hash=row.content_hash), problem=(column, reason), changed=True)
    if action is Action.SEND and recorded is None and not changed and not other_claim:
        return _SEND
    return Plan(action, recorded_status=recorded.status if recorded else None,
                window=_window(action, recorded, line, key_holder, options), changed=changed,
                other_claim=other_claim)


def _repeated(row: Activity, repeat: Repeat, options: PlanOptions,
              again: RowOutcome | None) -> Plan | None:
    """A row whose key other rows of the input have: invalid when their contents differ,
    skipped when an earlier row is the same (None: the key's first row, planned as any)."""
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
    if (status is Status.UNKNOWN or status is Status.FAILED) and not options.dry_run:
        return decide(row, recorded, None, key_holder, options).action is Action.RECONCILE
    return False


def _skipped(row: Activity, options: PlanOptions, action: Action, error_type: str,
             error: str, activity_id: str, again: RowOutcome | None, *,
             changed: bool = False) -> Plan:
    """A row skipped by the history: recorded, unless its skipped line (decided again) says
    so already or this is a dry run (which decides nothing)."""
    unchanged = again is not None and (again.status, again.error_type, again.activity_id) == (
        Status.SKIPPED, error_type, activity_id)
    record = None if unchanged or options.dry_run else RowOutcome(
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
    if action is not Action.RECONCILE or options.dry_run:
        return None
    window = None
    if (recorded is not None and recorded.status in (Status.UNKNOWN, Status.FAILED)
            and line is not None and line.updated_at):
        window = options.sent_until(parse_utc_text(line.updated_at), max(1, line.attempts))
    if key_holder is not None and not key_holder.posted and not key_holder.row:
        # The claim was marked at ``at`` by its last attempt, of at most --max-attempts.
        window = options.sent_until(datetime.fromtimestamp(key_holder.at, UTC),
                                    options.max_attempts).joined(window)
    return window
