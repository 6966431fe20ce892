"""Planning a row: every earlier outcome, row kind, history holding and option.

The tables are the product's rules as they stand: what a run does with a row, given its line
in the results file, what the history (or an earlier row of the input) holds of its key,
``--on-changed``, ``--resend-unknown`` and the dry run. A cell reads ``action [recorded
error_type]`` (``[-]``: the line on file says so already, nothing recorded; ``of ID``: the
activity an update updates), then the send
window's sources (``@line``: the results file's attempts, ``@claim``: a stopped run's claim)
and flags: ``+changed`` (counted changed), ``+other claim`` (logged), ``+repair`` (the
history is given the key), ``+sample`` (offered to calibrate look-ups).
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.activity import Activity, InvalidRow, content_hash, identity_hash
from bulkpost.core.key_holder import KeyHolder, key_holder_of
from bulkpost.core.mapping import parse_mapping
from bulkpost.core.options import RunOptions
from bulkpost.core.planner import Plan, PlanOptions, decide, needs_line
from bulkpost.core.reconcile import SendWindow
from bulkpost.core.repeats import Repeat
from bulkpost.core.results_line import RowOutcome
from bulkpost.core.resume import Action, Recorded, key_digest
from bulkpost.core.statuses import Status
from bulkpost.errors import UsageError

KEY, HASH, OTHER_HASH = "S-7", "00000000000000aa", "00000000000000bb"
ROW = Activity(row=7, key=KEY, lead="3f2504e0-4f89-11d3-9a0c-0305e82c3301",
               body=b'{"ActivityEvent":201}', content_hash=HASH, event=201)
INVALID = InvalidRow(row=7, key=KEY, column="lead", reason="lead id 'x' is not a GUID",
                     content_hash=HASH)
WHEN = "2025-06-01T10:00:00Z"  # the recorded line's updated_at
LAST = datetime(2025, 6, 1, 10, tzinfo=UTC)
CLAIMED_AT = int(datetime(2025, 5, 31, 22, tzinfo=UTC).timestamp())
S = Status


def recorded_as(status: Status, content_hash: str = HASH, key: str = KEY) -> Recorded:
    return Recorded(status, content_hash, key_digest(key))


def line(status: Status, error_type: str = "", activity_id: str = "",
         content_hash: str = HASH) -> RowOutcome:
    return RowOutcome(7, KEY, status, activity_id=activity_id, error_type=error_type,
                      error="as recorded", attempts=2, content_hash=content_hash,
                      updated_at=WHEN)


# What the results file holds of row 7: its status, and its last line.
RECORDED: dict[str, tuple[Recorded | None, RowOutcome | None]] = {
    "new": (None, None),
    "posted": (recorded_as(S.POSTED), line(S.POSTED, activity_id="act-7")),
    "skipped: history": (recorded_as(S.SKIPPED), line(S.SKIPPED, "history", "act-1")),
    "skipped: changed": (recorded_as(S.SKIPPED), line(S.SKIPPED, "changed")),
    "skipped: duplicate key": (recorded_as(S.SKIPPED), line(S.SKIPPED, "duplicate key")),
    "failed": (recorded_as(S.FAILED), line(S.FAILED, "timeout")),
    "rejected": (recorded_as(S.REJECTED), line(S.REJECTED, "MXInvalid")),
    "rejected, other content": (recorded_as(S.REJECTED, OTHER_HASH),
                                line(S.REJECTED, "MXInvalid", content_hash=OTHER_HASH)),
    "invalid": (recorded_as(S.INVALID), line(S.INVALID, "lead")),
    "unknown": (recorded_as(S.UNKNOWN), line(S.UNKNOWN)),
    "updated": (recorded_as(S.UPDATED), line(S.UPDATED, activity_id="act-2")),
    # Posted from a failures file (run --fixes): its content here is the one that failed.
    "fixed": (recorded_as(S.FIXED, OTHER_HASH), line(S.FIXED, "to-fix.csv", "act-9",
                                                     content_hash=OTHER_HASH)),
}
# What the history, or an earlier row of this input, holds of the row's key.
HELD: dict[str, KeyHolder | None] = {
    "nothing": None,
    "posted as is": KeyHolder(True, True, "act-1", "night-1", CLAIMED_AT),
    # Posted by an older bulkpost (or imported): its lead and date-time are not known.
    "posted other": KeyHolder(True, False, "act-2", "night-1", CLAIMED_AT),
    # Posted with this row's lead, event and date-time: an update can bring it up to date.
    "posted other, updatable": KeyHolder(True, False, "act-2", "night-1", CLAIMED_AT,
                                         event_code=201, identity=identity_hash(ROW)),
    # Posted at another date-time (or on another lead): an update cannot move it.
    "posted other, moved": KeyHolder(True, False, "act-2", "night-1", CLAIMED_AT,
                                     event_code=201, identity=content_hash(b"elsewhere")),
    "claimed as is": KeyHolder(False, True, run_id="night-2", at=CLAIMED_AT),
    "claimed other": KeyHolder(False, False, run_id="night-3", at=CLAIMED_AT),
    "row as is": KeyHolder(False, True, row=3),
    "row other": KeyHolder(False, False, row=3),
}


def plan_options(history: bool = False, key_column: str = "", **run: Any) -> PlanOptions:
    """The planner's view of a run's options (``run``: given as a run is; the others, its
    defaults), with a history or not, the input's key in ``key_column``."""
    activity = {"event": 201, "lead_id_column": "lead"} | (
        {"key_column": key_column} if key_column else {})
    return PlanOptions(RunOptions(input="in.csv", mapping=parse_mapping({"activity": activity}),
                                  results=Path("results.csv"), **run), history=history)


def varied(options: PlanOptions, **changes: Any) -> PlanOptions:
    """``options`` with some changed: ``history``, ``key_column`` or any of the run's."""
    history = changes.pop("history", options.history)
    mapping = options.run.mapping
    if "key_column" in changes:
        mapping = dataclasses.replace(mapping, key_column=changes.pop("key_column") or None)
    return PlanOptions(dataclasses.replace(options.run, mapping=mapping, **changes),
                       history=history)


OPTIONS = plan_options(history=True, key_column="order", timeout=7.0, backoff=0.5,
                       max_attempts=4)
LINE_WINDOW = OPTIONS.sent_until(LAST, 2)
CLAIM_WINDOW = OPTIONS.sent_until(datetime.fromtimestamp(CLAIMED_AT, UTC), 4)
WINDOWS = {LINE_WINDOW: "@line", CLAIM_WINDOW: "@claim",
           CLAIM_WINDOW.joined(LINE_WINDOW): "@line+claim"}


def cell(plan: Plan) -> str:
    """A plan as the tables write it."""
    parts = [plan.action.value]
    if plan.record is not None:
        parts.append(f"[{plan.record.error_type}]")
    elif plan.action in (Action.SKIP_KEY, Action.SKIP_CHANGED, Action.SKIP_REPEAT):
        parts.append("[-]")
    if plan.action is Action.KEEP:
        assert plan.counted is not None
        parts.append(plan.counted.value)
    if plan.update_of:
        parts.append(f"of {plan.update_of}")
    if plan.window is not None:
        parts.append(WINDOWS[plan.window])
    parts += [flag for flag, on in (("+changed", plan.changed),
                                    ("+other claim", plan.other_claim),
                                    ("+repair", plan.repair), ("+sample", plan.sample))
              if on]
    return " ".join(parts)


# --on-changed skip, post, update, fail: a key posted (or in an earlier row) with other
# content. An update is made only where it can bring the activity to the row: the history
# knows the activity's lead, event and date-time, and they are the row's (the _U tuples).
# It is idempotent, so a row that may have been sent is updated again, never looked up.
CHANGED_SEND = ("skip_changed [changed] +changed", "send +changed",
                "skip_changed [changed] +changed", "fail_changed [order] +changed")
CHANGED_LOOKUP = ("skip_changed [changed] +changed", "reconcile @line +changed",
                  "skip_changed [changed] +changed", "fail_changed [order] +changed")
CHANGED_AGAIN = ("skip_changed [-] +changed", "send +changed",
                 "skip_changed [-] +changed", "fail_changed [order] +changed")
CHANGED_SEND_U = ("skip_changed [changed] +changed", "send +changed", "update of act-2",
                  "fail_changed [order] +changed")
CHANGED_LOOKUP_U = ("skip_changed [changed] +changed", "reconcile @line +changed",
                    "update of act-2", "fail_changed [order] +changed")
CHANGED_AGAIN_U = ("skip_changed [-] +changed", "send +changed", "update of act-2",
                   "fail_changed [order] +changed")
ON_CHANGED = ("skip", "post", "update", "fail")

# (recorded, held) -> the plan under every --on-changed (one cell), or (skip, post, fail).
# "unknown" is planned without --resend-unknown, "unknown, resend" with it; every other
# row is planned the same either way.
WITH_HISTORY: list[tuple[str, str, str | tuple[str, str, str, str]]] = [
    ("new", "nothing", "send"),
    ("new", "posted as is", "skip_key [history]"),
    ("new", "posted other", CHANGED_SEND),
    ("new", "posted other, updatable", CHANGED_SEND_U),
    ("new", "posted other, moved", CHANGED_SEND),
    ("new", "claimed as is", "reconcile @claim"),
    ("new", "claimed other", "send +other claim"),
    ("new", "row as is", "skip_key [duplicate key]"),
    ("new", "row other", CHANGED_SEND),
    # Posted: never sent again. The history is given the key unless it holds it posted
    # (with any content) or an earlier row of this input has it.
    ("posted", "nothing", "skip_posted +repair"),
    ("posted", "posted as is", "skip_posted"),
    ("posted", "posted other", "skip_posted"),
    ("posted", "posted other, updatable", "skip_posted"),
    ("posted", "posted other, moved", "skip_posted"),
    ("posted", "claimed as is", "skip_posted +repair"),
    ("posted", "claimed other", "skip_posted +repair"),
    ("posted", "row as is", "skip_posted"),
    ("posted", "row other", "skip_posted"),
    # Skipped because the key was posted: as final as posted (repaired with its activity).
    ("skipped: history", "nothing", "skip_posted +repair"),
    ("skipped: history", "posted as is", "skip_posted"),
    ("skipped: history", "posted other", "skip_posted"),
    ("skipped: history", "posted other, updatable", "skip_posted"),
    ("skipped: history", "posted other, moved", "skip_posted"),
    ("skipped: history", "claimed as is", "skip_posted +repair"),
    ("skipped: history", "claimed other", "skip_posted +repair"),
    ("skipped: history", "row as is", "skip_posted"),
    ("skipped: history", "row other", "skip_posted"),
    # Skipped as changed or as a duplicate key: decided again, as a new row is; a line that
    # says so already is not written again.
    ("skipped: changed", "nothing", "send"),
    ("skipped: changed", "posted as is", "skip_key [history]"),
    ("skipped: changed", "posted other", CHANGED_AGAIN),
    ("skipped: changed", "posted other, updatable", CHANGED_AGAIN_U),
    ("skipped: changed", "posted other, moved", CHANGED_AGAIN),
    ("skipped: changed", "claimed as is", "reconcile @claim"),
    ("skipped: changed", "claimed other", "send +other claim"),
    ("skipped: changed", "row as is", "skip_key [duplicate key]"),
    ("skipped: changed", "row other", CHANGED_AGAIN),
    ("skipped: duplicate key", "nothing", "send"),
    ("skipped: duplicate key", "posted as is", "skip_key [history]"),
    ("skipped: duplicate key", "posted other", CHANGED_SEND),
    ("skipped: duplicate key", "posted other, updatable", CHANGED_SEND_U),
    ("skipped: duplicate key", "posted other, moved", CHANGED_SEND),
    ("skipped: duplicate key", "claimed as is", "reconcile @claim"),
    ("skipped: duplicate key", "claimed other", "send +other claim"),
    ("skipped: duplicate key", "row as is", "skip_key [-]"),
    ("skipped: duplicate key", "row other", CHANGED_SEND),
    # Failed or unknown: looked up first, within the window of the attempts on file (and
    # of any claim a stopped run left, even of other content).
    ("failed", "nothing", "reconcile @line"),
    ("failed", "posted as is", "skip_key [history]"),
    ("failed", "posted other", CHANGED_LOOKUP),
    ("failed", "posted other, updatable", CHANGED_LOOKUP_U),
    ("failed", "posted other, moved", CHANGED_LOOKUP),
    ("failed", "claimed as is", "reconcile @line+claim"),
    ("failed", "claimed other", "reconcile @line+claim +other claim"),
    ("failed", "row as is", "skip_key [duplicate key]"),
    ("failed", "row other", CHANGED_LOOKUP),
    # Rejected, unchanged: kept; the history is not asked.
    ("rejected", "nothing", "keep rejected"),
    ("rejected", "posted as is", "keep rejected"),
    ("rejected", "posted other", "keep rejected"),
    ("rejected", "posted other, updatable", "keep rejected"),
    ("rejected", "posted other, moved", "keep rejected"),
    ("rejected", "claimed as is", "keep rejected"),
    ("rejected", "claimed other", "keep rejected"),
    ("rejected", "row as is", "keep rejected"),
    ("rejected", "row other", "keep rejected"),
    ("rejected, other content", "nothing", "send"),
    ("rejected, other content", "posted as is", "skip_key [history]"),
    ("rejected, other content", "posted other", CHANGED_SEND),
    ("rejected, other content", "posted other, updatable", CHANGED_SEND_U),
    ("rejected, other content", "posted other, moved", CHANGED_SEND),
    ("rejected, other content", "claimed as is", "reconcile @claim"),
    ("rejected, other content", "claimed other", "send +other claim"),
    ("rejected, other content", "row as is", "skip_key [duplicate key]"),
    ("rejected, other content", "row other", CHANGED_SEND),
    ("invalid", "nothing", "send"),
    ("invalid", "posted as is", "skip_key [history]"),
    ("invalid", "posted other", CHANGED_SEND),
    ("invalid", "posted other, updatable", CHANGED_SEND_U),
    ("invalid", "posted other, moved", CHANGED_SEND),
    ("invalid", "claimed as is", "reconcile @claim"),
    ("invalid", "claimed other", "send +other claim"),
    ("invalid", "row as is", "skip_key [duplicate key]"),
    ("invalid", "row other", CHANGED_SEND),
    ("unknown", "nothing", "reconcile @line"),
    ("unknown", "posted as is", "skip_key [history]"),
    ("unknown", "posted other", CHANGED_LOOKUP),
    ("unknown", "posted other, updatable", CHANGED_LOOKUP_U),
    ("unknown", "posted other, moved", CHANGED_LOOKUP),
    ("unknown", "claimed as is", "reconcile @line+claim"),
    ("unknown", "claimed other", "reconcile @line+claim +other claim"),
    ("unknown", "row as is", "skip_key [duplicate key]"),
    ("unknown", "row other", CHANGED_LOOKUP),
    ("unknown, resend", "nothing", "send"),
    ("unknown, resend", "posted as is", "skip_key [history]"),
    ("unknown, resend", "posted other", CHANGED_SEND),
    ("unknown, resend", "posted other, updatable", CHANGED_SEND_U),
    ("unknown, resend", "posted other, moved", CHANGED_SEND),
    ("unknown, resend", "claimed as is", "reconcile @line+claim"),  # its own claim: look
    ("unknown, resend", "claimed other", "send +other claim"),
    ("unknown, resend", "row as is", "skip_key [duplicate key]"),
    ("unknown, resend", "row other", CHANGED_SEND),
    # Fixed from a failures file: passed over whatever the row or the history holds (the
    # history's key is the fixed row's, posted by the run that loaded the fix).
    *[("fixed", held, "skip_posted") for held in HELD],
    # Updated: as final as posted. The history is given the new content when it holds the
    # key with other content (the run stopped before it took it), or not at all.
    ("updated", "nothing", "skip_posted +repair"),
    ("updated", "posted as is", "skip_posted"),
    ("updated", "posted other", "skip_posted +repair"),
    ("updated", "posted other, updatable", "skip_posted +repair"),
    ("updated", "posted other, moved", "skip_posted +repair"),
    ("updated", "claimed as is", "skip_posted +repair"),
    ("updated", "claimed other", "skip_posted +repair"),
    ("updated", "row as is", "skip_posted"),
    ("updated", "row other", "skip_posted"),
]


def _history_cases() -> list[Any]:
    cases = []
    for recorded, held, expected in WITH_HISTORY:
        cells = (expected,) * 4 if isinstance(expected, str) else expected
        label = recorded.removesuffix(", resend")
        resends = ([True] if recorded.endswith(", resend") else [False] if label == "unknown"
                   else [False, True])
        for (on_changed, want), resend in itertools.product(
                zip(ON_CHANGED, cells, strict=True), resends):
            cases.append(pytest.param(label, held, on_changed, resend, want,
                                      id=f"{recorded}-{held}-{on_changed}-{resend}"))
    return cases


@pytest.mark.parametrize(("recorded", "held", "on_changed", "resend", "expected"),
                         _history_cases())
def test_with_history(recorded: str, held: str, on_changed: str, resend: bool,
                      expected: str) -> None:
    before, last = RECORDED[recorded]
    options = varied(OPTIONS, on_changed=on_changed, resend_unknown=resend)
    plan = decide(ROW, before, last, HELD[held], options)
    assert cell(plan) == expected
    # What the feeder counts and passes over follows from the action.
    if plan.sends:
        assert plan.counted is None and plan.record is None
        assert plan.recorded_status is (None if recorded.startswith("skipped")
                                        or before is None else before.status)
    else:
        assert plan.counted is not None and plan.window is None


def test_the_history_table_covers_every_status_and_holding() -> None:
    pairs = {(recorded, held) for recorded, held, _ in WITH_HISTORY}
    assert pairs >= set(itertools.product(RECORDED, HELD))
    statuses = {before.status for before, _ in RECORDED.values() if before is not None}
    assert statuses == set(Status)


# (recorded, row) -> the plan without a history, by default and with --resend-unknown; a
# posted row offers itself to calibrate look-ups (when they want it).
WITHOUT_HISTORY: list[tuple[str, Activity | InvalidRow, str, str]] = [
    ("new", ROW, "send", "send"),
    ("new", INVALID, "record_invalid [lead]", "record_invalid [lead]"),
    ("posted", ROW, "skip_posted +sample", "skip_posted +sample"),
    ("posted", INVALID, "skip_posted", "skip_posted"),
    ("skipped: history", ROW, "skip_posted", "skip_posted"),
    ("skipped: history", INVALID, "skip_posted", "skip_posted"),
    ("skipped: changed", ROW, "skip_posted", "skip_posted"),  # decided again only with a history
    ("skipped: changed", INVALID, "skip_posted", "skip_posted"),
    ("skipped: duplicate key", ROW, "skip_posted", "skip_posted"),
    ("skipped: duplicate key", INVALID, "skip_posted", "skip_posted"),
    ("failed", ROW, "reconcile @line", "reconcile @line"),
    ("failed", INVALID, "keep failed", "keep failed"),
    ("rejected", ROW, "keep rejected", "keep rejected"),
    ("rejected", INVALID, "record_invalid [lead]", "record_invalid [lead]"),
    ("rejected, other content", ROW, "send", "send"),
    ("rejected, other content", INVALID, "record_invalid [lead]", "record_invalid [lead]"),
    ("invalid", ROW, "send", "send"),
    ("invalid", INVALID, "record_invalid [lead]", "record_invalid [lead]"),
    ("unknown", ROW, "reconcile @line", "send"),
    # An unknown row that no longer validates cannot be looked up: keep what we know.
    ("unknown", INVALID, "keep unknown", "record_invalid [lead]"),
]


@pytest.mark.parametrize(("recorded", "row", "by_default", "resending_unknown"),
                         WITHOUT_HISTORY)
def test_without_history(recorded: str, row: Activity | InvalidRow, by_default: str,
                         resending_unknown: str) -> None:
    before, last = RECORDED[recorded]
    options = varied(OPTIONS, history=False)
    for resend, expected in ((False, by_default), (True, resending_unknown)):
        plan = decide(row, before, last, None, varied(
            options, resend_unknown=resend), sample_wanted=True)
        assert cell(plan) == expected


@pytest.mark.parametrize("recorded", list(RECORDED))
@pytest.mark.parametrize("resend", [False, True])
def test_an_invalid_row_is_planned_without_the_history(recorded: str, resend: bool) -> None:
    """Only valid rows are screened: an invalid row's plan is the results file's alone."""
    before, last = RECORDED[recorded]
    alone = decide(INVALID, before, last, None, plan_options(resend_unknown=resend))
    for on_changed, dry_run in itertools.product(ON_CHANGED, (False, True)):
        options = varied(OPTIONS, resend_unknown=resend, on_changed=on_changed,
                                      dry_run=dry_run)
        assert decide(INVALID, before, last, None, options) == alone


@pytest.mark.parametrize(("recorded", "held"), list(itertools.product(RECORDED, HELD)))
@pytest.mark.parametrize("on_changed", ON_CHANGED)
def test_a_dry_run_decides_nothing(recorded: str, held: str, on_changed: str) -> None:
    """The same plans, but no ``skipped`` line recorded, no history repaired and no window
    (nothing is sent); ``--on-changed fail`` still records the row invalid."""
    before, last = RECORDED[recorded]
    options = varied(OPTIONS, on_changed=on_changed)
    real = decide(ROW, before, last, HELD[held], options)
    dry = decide(ROW, before, last, HELD[held], varied(options, dry_run=True))
    skipped_line = real.record is not None and real.record.status is Status.SKIPPED
    assert dry == dataclasses.replace(real, record=None if skipped_line else real.record,
                                      repair="", window=None)


# -- what is recorded ------------------------------------------------------------------------
@pytest.mark.parametrize(("held", "on_changed", "status", "error_type", "activity_id",
                          "error"), [
    ("posted as is", "skip", S.SKIPPED, "history", "act-1",
     "key 'S-7' was posted as activity act-1 by run night-1 at 2025-05-31T22:00:00Z"),
    ("row as is", "skip", S.SKIPPED, "duplicate key", "", "key 'S-7' was in row 3 of this input"),
    ("posted other", "skip", S.SKIPPED, "changed", "",
     "key 'S-7' was posted as activity act-2 by run night-1 at 2025-05-31T22:00:00Z, with "
     "other content; skipped (--on-changed skip)"),
    ("row other", "fail", S.INVALID, "order", "",
     "key 'S-7' was in row 3 of this input, with other content (--on-changed fail)"),
])
def test_the_recorded_lines(held: str, on_changed: str, status: Status, error_type: str,
                            activity_id: str, error: str) -> None:
    plan = decide(ROW, None, None, HELD[held], varied(OPTIONS,
                                                                   on_changed=on_changed))
    assert plan.record == RowOutcome(7, KEY, status, activity_id=activity_id,
                                     error_type=error_type, error=error, content_hash=HASH)
    assert plan.counted is status
    assert plan.problem == ((error_type, error) if status is S.INVALID else None)


def test_a_row_without_a_key_is_named_by_its_content() -> None:
    keyless = dataclasses.replace(ROW, key="")
    options = varied(OPTIONS, on_changed="fail", key_column="")
    plan = decide(keyless, None, None, HELD["posted other"], options)
    assert plan.record is not None and plan.record.error_type == "key"
    assert plan.record.error.startswith("its content was posted as activity act-2")
    claimed = decide(keyless, None, None, HELD["claimed other"], options)
    assert claimed.action is Action.SEND and claimed.other_claim == "night-3"


def test_an_invalid_row_is_recorded_with_its_column_and_reason() -> None:
    plan = decide(INVALID, None, None, None, OPTIONS)
    assert plan.record == RowOutcome(7, KEY, S.INVALID, error_type="lead",
                                     error="lead id 'x' is not a GUID", content_hash=HASH)
    assert plan.problem == ("lead", "lead id 'x' is not a GUID")
    assert plan.counted is S.INVALID and not plan.passed_over


@pytest.mark.parametrize(("action", "sends", "passed_over"), [
    (Action.SEND, True, False), (Action.RECONCILE, True, False),
    (Action.RECORD_INVALID, False, False), (Action.FAIL_CHANGED, False, False),
    (Action.SKIP_POSTED, False, True), (Action.KEEP, False, True),
    (Action.SKIP_KEY, False, True), (Action.SKIP_CHANGED, False, True),
])
def test_what_an_action_means_to_the_feeder(action: Action, sends: bool,
                                            passed_over: bool) -> None:
    assert (Plan(action).sends, Plan(action).passed_over) == (sends, passed_over)


# -- send windows and samples --------------------------------------------------------------
def test_the_send_window_spans_every_attempt_of_a_timeout_and_the_longest_backoff() -> None:
    options = plan_options(timeout=7.0, backoff=0.5, max_attempts=4)
    # Two attempts of at most 7 s + 30 × 0.5 s each, ending at LAST; 120 s of clock slack.
    assert options.sent_until(LAST, 2) == SendWindow(
        LAST - timedelta(seconds=44 + 120), LAST + timedelta(seconds=7 + 120))
    plan = decide(ROW, recorded_as(S.UNKNOWN),
                  dataclasses.replace(line(S.UNKNOWN), attempts=0),
                  HELD["claimed as is"], varied(OPTIONS, timeout=7.0))
    claimed = datetime.fromtimestamp(CLAIMED_AT, UTC)
    # A line of 0 attempts counts as one; the claim as --max-attempts (4) of them.
    assert plan.window == SendWindow(claimed - timedelta(seconds=4 * 22 + 120),
                                     LAST + timedelta(seconds=7 + 120))
    no_time = decide(ROW, recorded_as(S.FAILED),
                     dataclasses.replace(line(S.FAILED), updated_at=""), None, OPTIONS)
    assert no_time.action is Action.RECONCILE and no_time.window is None


@pytest.mark.parametrize(("before", "last", "wanted", "sample"), [
    (recorded_as(S.POSTED), line(S.POSTED, activity_id="act-7"), True, ("act-7", LINE_WINDOW)),
    (recorded_as(S.POSTED), line(S.POSTED, activity_id="act-7"), False, None),
    (recorded_as(S.POSTED), line(S.POSTED), True, None),  # no activity on file
    (recorded_as(S.POSTED), dataclasses.replace(line(S.POSTED, activity_id="act-7"),
                                                updated_at=""), True, None),
    (recorded_as(S.POSTED, ""), line(S.POSTED, activity_id="act-7"), True, None),  # old file
    (recorded_as(S.SKIPPED), line(S.SKIPPED, "history", "act-1"), True, None),
])
def test_a_posted_row_calibrates_look_ups(before: Recorded, last: RowOutcome, wanted: bool,
                                          sample: tuple[str, SendWindow] | None) -> None:
    for history in (False, True):
        plan = decide(ROW, before, last, None, varied(OPTIONS, history=history),
                      sample_wanted=wanted)
        assert plan.action is Action.SKIP_POSTED and plan.sample == sample


# -- reading lines only when they are used -------------------------------------------------
@pytest.mark.parametrize("recorded", list(RECORDED))
def test_a_line_not_needed_changes_no_plan(recorded: str) -> None:
    """Whenever :func:`needs_line` says no, the plan is the same without the line."""
    before, last = RECORDED[recorded]
    rows: tuple[Activity | InvalidRow, ...] = (ROW, INVALID)
    for row, held, on_changed, resend, dry_run, history, wanted in itertools.product(
            rows, HELD, ON_CHANGED, (False, True), (False, True),
            (False, True), (False, True)):
        holder = HELD[held] if history and isinstance(row, Activity) else None
        options = varied(OPTIONS, on_changed=on_changed, resend_unknown=resend,
                                      dry_run=dry_run, history=history)
        if not needs_line(row, before, holder, options, sample_wanted=wanted):
            assert decide(row, before, None, holder, options, sample_wanted=wanted) == decide(
                row, before, last, holder, options, sample_wanted=wanted)


@pytest.mark.parametrize(("recorded", "options", "wanted", "needed"), [
    ("new", OPTIONS, True, False),
    ("posted", OPTIONS, False, True),  # the history may need repairing
    ("posted", plan_options(), False, False),
    ("posted", plan_options(), True, True),
    ("skipped: history", plan_options(), True, True),  # a repeat? decided again if so
    ("skipped: changed", OPTIONS, False, True),  # decided again
    ("failed", plan_options(), False, True),
    ("failed", plan_options(dry_run=True), False, False),
    ("unknown", plan_options(), False, True),
    ("unknown", plan_options(resend_unknown=True), False, False),
    ("rejected", OPTIONS, True, False),
    ("invalid", OPTIONS, True, False),
])
def test_which_lines_are_read(recorded: str, options: PlanOptions, wanted: bool,
                              needed: bool) -> None:
    before, _ = RECORDED[recorded]
    assert needs_line(ROW, before, None, options, sample_wanted=wanted) is needed
    assert not needs_line(INVALID, before, None, options, sample_wanted=wanted)


# -- refusals ------------------------------------------------------------------------------
# A row recorded invalid was never sent: its key may be fixed (tests/core/test_resume.py).
@pytest.mark.parametrize("status", [s for s in Status if s is not Status.INVALID])
@pytest.mark.parametrize("row", [ROW, INVALID])
@pytest.mark.parametrize("history", [False, True])
def test_another_key_under_the_row_number_is_refused(status: Status,
                                                     row: Activity | InvalidRow,
                                                     history: bool) -> None:
    options = varied(OPTIONS, history=history)
    for held in HELD.values():
        holder = held if isinstance(row, Activity) else None
        with pytest.raises(UsageError, match=r"row 7 \(line 8 in a spreadsheet\) has key "
                                             r"'S-7' here but another key"):
            decide(row, recorded_as(status, key="S-8"), line(status), holder, options)


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("resend", [False, True])
def test_a_posted_row_with_other_content_is_refused(history: bool, resend: bool) -> None:
    options = varied(OPTIONS, history=history, resend_unknown=resend)
    for held in HELD.values():
        with pytest.raises(UsageError, match=r"row 7 \(line 8 in a spreadsheet\) is "
                                             r"recorded as posted"):
            decide(ROW, recorded_as(S.POSTED, OTHER_HASH),
                   line(S.POSTED, activity_id="act-7", content_hash=OTHER_HASH), held, options)


# -- what the history holds of a key --------------------------------------------------------
POSTED_AS_IS = ("act-1", 11, "night-1", 100, 201, "")
POSTED_OTHER = ("act-2", 12, "night-1", 100, 201, "00000000000000cc")


@pytest.mark.parametrize(("first", "posted", "claims", "expected"), [
    (None, None, {}, None),
    # The input's first row of the key decides for the later ones, whatever is held.
    ((3, 11), POSTED_OTHER, {11: ("night-2", 50, "")}, KeyHolder(False, True, row=3)),
    ((3, 12), None, {}, KeyHolder(False, False, row=3)),
    (None, POSTED_AS_IS, {}, KeyHolder(True, True, "act-1", "night-1", 100, event_code=201)),
    (None, POSTED_AS_IS, {12: ("night-2", 200, "")},
     KeyHolder(True, True, "act-1", "night-1", 100, event_code=201)),
    (None, POSTED_OTHER, {}, KeyHolder(True, False, "act-2", "night-1", 100, event_code=201,
                                       identity="00000000000000cc")),
    # Posted with other content, but this content may be on the API too: look it up.
    (None, POSTED_OTHER, {11: ("night-2", 50, "")},
     KeyHolder(False, True, run_id="night-2", at=50)),
    # ... unless it was sent as an update of the posted activity: update it again.
    (None, POSTED_OTHER, {11: ("night-2", 50, "act-2")},
     KeyHolder(True, False, "act-2", "night-1", 100, event_code=201,
               identity="00000000000000cc")),
    (None, None, {11: ("night-2", 50, "")}, KeyHolder(False, True, run_id="night-2", at=50)),
    # Other contents only: the latest claim is named.
    (None, None, {12: ("night-2", 50, ""), 13: ("night-3", 70, "")},
     KeyHolder(False, False, run_id="night-3", at=70)),
])
def test_what_the_history_holds(first: tuple[int, int] | None,
                                posted: tuple[str, int, str, int, int | None, str] | None,
                                claims: dict[int, tuple[str, int, str]],
                                expected: KeyHolder | None) -> None:
    assert key_holder_of(11, first, posted, claims) == expected


# -- the input's repeated keys ----------------------------------------------------------------
# What the input's other rows with row 7's key say: it is the first of an exact repeat, a
# later one (of row 3), or one of a key whose rows differ.
REPEATS: dict[str, Repeat | None] = {
    "alone": None,
    "first of a repeat": Repeat(KEY, 7, 2, (7, 9), False),
    "repeat of row 3": Repeat(KEY, 3, 3, (3, 5, 7), False),
    "conflict": Repeat(KEY, 3, 3, (3, 7, 9), True),
}
RECORDED_REPEAT = (recorded_as(S.SKIPPED), RowOutcome(
    7, KEY, S.SKIPPED, error_type="repeat", error="repeat of row 3", content_hash=HASH))

# (recorded, repeat, held by the history) -> the plan, with and without --history (the
# history's holding only matters with it). The repeat rules come before the history's; a row
# that may have been sent is looked up first, as before; a repeat is decided again.
WITH_REPEATS: list[tuple[str, str, str, str, str]] = [
    ("new", "alone", "nothing", "send", "send"),
    ("new", "first of a repeat", "nothing", "send", "send"),
    ("new", "first of a repeat", "posted as is", "send", "skip_key [history]"),
    ("new", "repeat of row 3", "nothing", "skip_repeat [repeat]", "skip_repeat [repeat]"),
    ("new", "repeat of row 3", "posted as is", "skip_repeat [repeat]", "skip_repeat [repeat]"),
    ("new", "repeat of row 3", "row as is", "skip_repeat [repeat]", "skip_repeat [repeat]"),
    ("new", "conflict", "nothing", "key_conflict [order]", "key_conflict [order]"),
    ("new", "conflict", "posted as is", "key_conflict [order]", "key_conflict [order]"),
    ("new", "conflict", "row other", "key_conflict [order]", "key_conflict [order]"),
    ("invalid", "repeat of row 3", "nothing", "skip_repeat [repeat]", "skip_repeat [repeat]"),
    ("invalid", "conflict", "nothing", "key_conflict [order]", "key_conflict [order]"),
    ("rejected, other content", "conflict", "nothing", "key_conflict [order]",
     "key_conflict [order]"),
    ("rejected", "conflict", "nothing", "keep rejected", "keep rejected"),
    ("posted", "repeat of row 3", "posted as is", "skip_posted", "skip_posted"),
    ("posted", "conflict", "posted as is", "skip_posted", "skip_posted"),
    ("unknown", "conflict", "nothing", "reconcile @line", "reconcile @line"),
    ("unknown", "repeat of row 3", "nothing", "reconcile @line", "reconcile @line"),
    ("failed", "conflict", "nothing", "reconcile @line", "reconcile @line"),
    ("skipped: repeat", "repeat of row 3", "posted as is", "skip_repeat [-]", "skip_repeat [-]"),
    ("skipped: repeat", "alone", "nothing", "send", "send"),  # the export was fixed
    ("skipped: repeat", "alone", "posted as is", "send", "skip_key [history]"),
    ("skipped: repeat", "conflict", "nothing", "key_conflict [order]", "key_conflict [order]"),
    ("skipped: history", "repeat of row 3", "nothing", "skip_posted", "skip_posted +repair"),
]


@pytest.mark.parametrize(("recorded", "repeat", "held", "alone", "with_history"),
                         WITH_REPEATS)
def test_repeated_keys(recorded: str, repeat: str, held: str, alone: str,
                       with_history: str) -> None:
    before, last = RECORDED_REPEAT if recorded == "skipped: repeat" else RECORDED[recorded]
    for history, expected in ((False, alone), (True, with_history)):
        options = varied(OPTIONS, history=history)
        plan = decide(ROW, before, last, HELD[held], options, repeat=REPEATS[repeat])
        assert cell(plan) == expected, history


def test_a_skipped_line_is_read_without_a_history_to_decide_a_repeat_again() -> None:
    assert needs_line(ROW, RECORDED_REPEAT[0], None, plan_options()) is True


def test_an_invalid_row_of_a_repeated_key_keeps_its_own_problem() -> None:
    for repeat in REPEATS.values():
        assert cell(decide(INVALID, None, None, None, OPTIONS, repeat=repeat)) == (
            "record_invalid [lead]")


@pytest.mark.parametrize(("repeat", "status", "error_type", "error"), [
    ("repeat of row 3", S.SKIPPED, "repeat", "repeat of row 3"),
    ("conflict", S.INVALID, "order", "key 'S-7' is also in rows 3, 9 with other content: fix "
                                     "the export or give each call its own key"),
])
def test_the_lines_recorded_for_repeated_keys(repeat: str, status: Status, error_type: str,
                                              error: str) -> None:
    plan = decide(ROW, None, None, None, OPTIONS, repeat=REPEATS[repeat])
    assert plan.record == RowOutcome(7, KEY, status, error_type=error_type, error=error,
                                     content_hash=HASH)
    assert plan.counted is status
    assert plan.problem == ((error_type, error) if status is S.INVALID else None)
    assert plan.passed_over is (status is S.SKIPPED)
    # A dry run records no skipped line, but records the invalid one (as validate does).
    dry = decide(ROW, None, None, None, varied(OPTIONS, dry_run=True),
                 repeat=REPEATS[repeat])
    assert dry.record == (plan.record if status is S.INVALID else None)


def test_a_repeat_without_a_key_names_its_content() -> None:
    keyless = dataclasses.replace(ROW, key="")
    plan = decide(keyless, None, None, None, plan_options(),
                  repeat=Repeat("", 3, 2, (3, 7), False))
    assert plan.record is not None and plan.record.error == (
        "repeat of row 3 (the same content; the input has no key for it)")


def test_a_key_conflict_without_a_key_column_names_the_key() -> None:
    plan = decide(ROW, None, None, None, plan_options(), repeat=REPEATS["conflict"])
    assert cell(plan) == "key_conflict [key]" and plan.problem is not None
    assert plan.problem[0] == "key"
