"""The summary takes the workers' counts whole: one counter for each thing counted."""

from __future__ import annotations

from bulkpost.core.statuses import Status
from bulkpost.core.summary import DeliveryCounts, Summary


def test_the_summary_reads_the_workers_counts_themselves() -> None:
    counts = DeliveryCounts(calls=7, retries=2, rate_limited=1, reconciled=3, found_posted=1,
                            lookup_calls=4, calibration_calls=2, verify_calls=1)
    for status in (Status.POSTED, Status.POSTED, Status.FAILED):
        counts.count(status)
    counts.count(Status.POSTED, carried=True)
    counts.count(Status.UNKNOWN, carried=True)
    counts.count(Status.REJECTED, carried=True)
    summary = Summary(rows=3, results="r.csv", run_id="r1")
    summary.take(counts)
    counts.calls += 1  # counted after: the summary holds the counts, not a copy
    data = summary.as_dict()
    assert {key: data[key] for key in ("calls", "retries", "rate_limited", "reconciled",
                                       "found_posted", "lookups", "calibration_calls",
                                       "verify_calls", "posted", "failed", "pending")} == {
        "calls": 8, "retries": 2, "rate_limited": 1, "reconciled": 3, "found_posted": 1,
        "lookups": 4, "calibration_calls": 2, "verify_calls": 1, "posted": 2, "failed": 1,
        "pending": 0}
    assert (summary.carried_done, summary.carried_left, summary.carried_rejected) == (1, 1, 1)
    assert summary.exit_code == 1


def test_a_summary_without_delivery_counts_no_calls() -> None:
    summary = Summary(rows=2, skipped=2, dry_run=True)
    assert (summary.calls, summary.lookups, summary.calls_per_s) == (0, 0, 0.0)
    assert summary.as_dict()["calls"] == 0 and summary.exit_code == 0
