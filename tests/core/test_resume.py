"""Planning a resume: each earlier status against each current row, and the key check."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bulkpost.core.activity import Activity, InvalidRow
from bulkpost.core.resume import (
    Action,
    Recorded,
    key_digest,
    new_results_advice,
    new_results_file,
    plan_row,
)
from bulkpost.core.statuses import Status
from bulkpost.errors import UsageError

KEY = "S-7"
HASH = "00000000000000aa"
OTHER_HASH = "00000000000000bb"

ACTIVITY = Activity(row=7, key=KEY, lead="3f2504e0-4f89-11d3-9a0c-0305e82c3301",
                    body=b'{"ActivityEvent":201}', content_hash=HASH)
INVALID = InvalidRow(row=7, key=KEY, column="lead", reason="lead id 'x' is not a GUID",
                     content_hash=HASH)


def recorded_as(status: Status, content_hash: str = HASH, key: str | None = KEY) -> Recorded:
    return Recorded(status, content_hash, key_digest(key) if key is not None else 0)


# (recorded outcome, current row) -> action, without and with --resend-unknown.
PLAN = [
    (None, ACTIVITY, Action.SEND, Action.SEND),
    (None, INVALID, Action.RECORD_INVALID, Action.RECORD_INVALID),
    (recorded_as(Status.POSTED), ACTIVITY, Action.SKIP_POSTED, Action.SKIP_POSTED),
    # Posted with other content: refused (test_a_posted_row_with_other_content_stops_the_run).
    (recorded_as(Status.POSTED), INVALID, Action.SKIP_POSTED, Action.SKIP_POSTED),
    # An attempt of a failed row may have created it: look before sending again.
    (recorded_as(Status.FAILED), ACTIVITY, Action.RECONCILE, Action.RECONCILE),
    (recorded_as(Status.FAILED, OTHER_HASH), ACTIVITY, Action.RECONCILE, Action.RECONCILE),
    # Failed (an attempt may have created it) and no longer valid: kept failed, so that once
    # valid again it is looked up first, never sent blind.
    (recorded_as(Status.FAILED), INVALID, Action.KEEP, Action.KEEP),
    (recorded_as(Status.REJECTED), ACTIVITY, Action.KEEP, Action.KEEP),
    (recorded_as(Status.REJECTED, OTHER_HASH), ACTIVITY, Action.SEND, Action.SEND),
    (recorded_as(Status.REJECTED, ""), ACTIVITY, Action.SEND, Action.SEND),
    (recorded_as(Status.REJECTED), INVALID, Action.RECORD_INVALID, Action.RECORD_INVALID),
    (recorded_as(Status.REJECTED, OTHER_HASH), INVALID, Action.RECORD_INVALID,
     Action.RECORD_INVALID),
    (recorded_as(Status.INVALID), ACTIVITY, Action.SEND, Action.SEND),
    (recorded_as(Status.INVALID), INVALID, Action.RECORD_INVALID, Action.RECORD_INVALID),
    (recorded_as(Status.UNKNOWN), ACTIVITY, Action.RECONCILE, Action.SEND),
    (recorded_as(Status.UNKNOWN, OTHER_HASH), ACTIVITY, Action.RECONCILE, Action.SEND),
    (recorded_as(Status.UNKNOWN), INVALID, Action.KEEP, Action.RECORD_INVALID),
    # Skipped because the history held its key: as final as posted.
    (recorded_as(Status.SKIPPED), ACTIVITY, Action.SKIP_POSTED, Action.SKIP_POSTED),
    (recorded_as(Status.SKIPPED, OTHER_HASH), ACTIVITY, Action.SKIP_POSTED, Action.SKIP_POSTED),
    (recorded_as(Status.SKIPPED), INVALID, Action.SKIP_POSTED, Action.SKIP_POSTED),
    # Updated in place (--on-changed update): as final as posted.
    (recorded_as(Status.UPDATED), ACTIVITY, Action.SKIP_POSTED, Action.SKIP_POSTED),
    (recorded_as(Status.UPDATED), INVALID, Action.SKIP_POSTED, Action.SKIP_POSTED),
    # Fixed from a failures file (run --fixes): passed over, although the input still holds
    # the content that failed (another content hash than the fix posted): never sent again,
    # never taken for another input.
    (recorded_as(Status.FIXED), ACTIVITY, Action.SKIP_POSTED, Action.SKIP_POSTED),
    (recorded_as(Status.FIXED, OTHER_HASH), ACTIVITY, Action.SKIP_POSTED, Action.SKIP_POSTED),
    (recorded_as(Status.FIXED), INVALID, Action.SKIP_POSTED, Action.SKIP_POSTED),
]


@pytest.mark.parametrize(("recorded", "current", "by_default", "resending_unknown"), PLAN)
def test_plan_row(
    recorded: Recorded | None,
    current: Activity | InvalidRow,
    by_default: Action,
    resending_unknown: Action,
) -> None:
    assert plan_row(current, recorded) is by_default
    assert plan_row(current, recorded, resend_unknown=False) is by_default
    assert plan_row(current, recorded, resend_unknown=True) is resending_unknown


@pytest.mark.parametrize("resend_unknown", [False, True])
def test_a_posted_row_with_other_content_stops_the_run(resend_unknown: bool) -> None:
    """Skipped as posted, the row's new content would never be sent: refused instead."""
    with pytest.raises(UsageError) as caught:
        plan_row(ACTIVITY, recorded_as(Status.POSTED, OTHER_HASH), resend_unknown)
    assert "row 7 (line 8 in a spreadsheet) is recorded as posted" in str(caught.value)
    # Never the bare advice of a new results file: it says what that would send again.
    assert "A new --results file sends again every row that no history holds" in str(
        caught.value)
    # An updated row holds its activity with the content it records: the same refusal.
    with pytest.raises(UsageError,
                       match=r"row 7 \(line 8 in a spreadsheet\) is recorded as posted"):
        plan_row(ACTIVITY, recorded_as(Status.UPDATED, OTHER_HASH), resend_unknown)
    # Without a recorded fingerprint (an old results file) there is nothing to compare.
    assert plan_row(ACTIVITY, recorded_as(Status.POSTED, "")) is Action.SKIP_POSTED
    # Other statuses may change content freely: those rows are sent (again).
    assert plan_row(ACTIVITY, recorded_as(Status.INVALID, OTHER_HASH)) is Action.SEND


def test_the_plan_covers_every_status() -> None:
    covered = {recorded.status for recorded, *_ in PLAN if recorded is not None}
    assert covered == set(Status)


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.INVALID])
@pytest.mark.parametrize("current", [ACTIVITY, INVALID])
@pytest.mark.parametrize("resend_unknown", [False, True])
def test_a_different_key_under_the_same_row_stops_the_run(
    status: Status, current: Activity | InvalidRow, resend_unknown: bool
) -> None:
    with pytest.raises(UsageError) as caught:
        plan_row(current, recorded_as(status, key="S-8"), resend_unknown)
    message = str(caught.value)
    assert ("row 7 (line 8 in a spreadsheet) has key 'S-7' here but another key in the "
            "results file") in message
    assert "A new --results file sends again every row that no history holds" in message


def test_the_refusal_of_another_input_says_what_a_new_results_file_sends_again() -> None:
    """The run sets what a new results file would do: with a history, the rows it holds are
    skipped; without one, every row is sent again, and the message says so."""
    cases = [(new_results_advice(Path("/h.sqlite"), False),
              "rows the history (/h.sqlite) holds as created (by key; by content without a "
              "key column) are skipped, not sent again"),
             (new_results_advice(None, True),
              "A new --results file sends every row again, those posted here too: "
              "--create-again keeps no history"),
             (new_results_advice(None, False), "sends every row again, those posted here too")]
    for advice, said in cases:
        token = new_results_file.set(advice)
        try:
            with pytest.raises(UsageError) as caught:
                plan_row(ACTIVITY, recorded_as(Status.POSTED, OTHER_HASH))
            assert said in str(caught.value)
            with pytest.raises(UsageError) as caught:
                plan_row(ACTIVITY, recorded_as(Status.FAILED, key="S-8"))
            assert said in str(caught.value)
        finally:
            new_results_file.reset(token)


@pytest.mark.parametrize("current", [ACTIVITY, INVALID])
def test_a_row_recorded_invalid_may_have_its_key_fixed(current: Activity | InvalidRow) -> None:
    """It was never sent: a fixed key (two calls under one key given each their own) is
    validated again, as any fixed cell is."""
    fixed = plan_row(current, recorded_as(Status.INVALID, key="S-8"))
    assert fixed is (Action.SEND if isinstance(current, Activity) else Action.RECORD_INVALID)


@pytest.mark.parametrize(("recorded", "current"), [("S-7", ""), ("", "S-7"), ("s-7", "S-7")])
def test_an_empty_or_differently_cased_key_is_a_different_key(recorded: str, current: str) -> None:
    row = Activity(row=3, key=current, lead="l", body=b"{}", content_hash=HASH)
    with pytest.raises(UsageError):
        plan_row(row, recorded_as(Status.FAILED, key=recorded))


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("current", [ACTIVITY, INVALID])
def test_a_row_recorded_without_a_key_is_not_checked(
    status: Status, current: Activity | InvalidRow
) -> None:
    rekeyed = replace(current, key="S-999")
    unchecked = plan_row(rekeyed, recorded_as(status, key=None))
    assert unchecked is plan_row(current, recorded_as(status))


@pytest.mark.parametrize(
    "key", ["", "S-7", "s-7", "S-7 ", "ключ-7", "a" * 10_000, "\x00", "1,2\n3"]
)
def test_key_digest_is_a_stable_non_zero_64_bit_number(key: str) -> None:
    digest = key_digest(key)
    assert 0 < digest < 2**64
    assert key_digest(key) == digest


def test_key_digests_of_similar_keys_differ() -> None:
    keys = ["S-7", "S-7 ", "s-7", "S-70", "S-07", "", " "]
    assert len({key_digest(k) for k in keys}) == len(keys)
