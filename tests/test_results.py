"""The results log: append, reload, torn lines, compaction, the lock, write failures."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bulkpost.errors import ResultsLocked, ResultsWriteError, UsageError
from bulkpost.results import HEADER, ResultsLog, RowOutcome, format_line, read_outcomes
from bulkpost.resume import Status, key_digest


def _log(path: Path) -> ResultsLog:
    return ResultsLog(path).open()


def test_new_file_gets_the_header(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    log.close()
    assert path.read_text().splitlines() == [",".join(HEADER)]


def test_outcomes_survive_reopen_and_last_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    log.record(RowOutcome(1, "k1", Status.UNKNOWN, content_hash="00000000000000ab"))
    log.record(RowOutcome(1, "k1", Status.POSTED, activity_id="id-1", http_status=200,
                          attempts=1, content_hash="00000000000000ab"))
    log.record(RowOutcome(2, "k2", Status.REJECTED, error="bad,\nvalue", content_hash="ff" * 8))
    log.close()
    again = _log(path)
    first = again.previous(1)
    assert first is not None and first.status is Status.POSTED
    assert first.content_hash == "00000000000000ab" and first.key_digest == key_digest("k1")
    second = again.previous(2)
    assert second is not None and second.status is Status.REJECTED
    assert second.content_hash == "ff" * 8
    assert again.previous(3) is None
    assert again.counts()[Status.POSTED] == 1
    again.close()


def test_every_line_is_one_physical_line(tmp_path: Path) -> None:
    line = format_line(RowOutcome(7, "a\nb", Status.FAILED, error='x\r\ny "z", w'))
    assert line.count(b"\n") == 1 and line.endswith(b"\n")


def test_torn_last_line_is_cut_off_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    log.record(RowOutcome(1, "", Status.POSTED, activity_id="a"))
    log.close()
    with open(path, "ab") as handle:
        handle.write(b"2,,posted,half-written-i")  # kill -9 in the middle of a write
    again = _log(path)
    assert again.torn_lines == 1
    assert again.previous(2) is None
    again.record(RowOutcome(2, "", Status.POSTED, activity_id="b"))
    again.close()
    rows = [o.row for o in read_outcomes(path)]
    assert rows == [1, 2]
    assert b"half-written" not in path.read_bytes()


def test_torn_header_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(b"row,key,sta")
    log = _log(path)
    log.close()
    assert path.read_text().splitlines() == [",".join(HEADER)]


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("name,email\nx,y\n")
    with pytest.raises(UsageError, match="not a bulkpost results file"):
        _log(path)


def test_compaction_keeps_one_line_per_row_in_row_order(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    for row in (3, 1, 2, 1, 3):
        log.record(RowOutcome(row, f"k{row}", Status.UNKNOWN))
    log.record(RowOutcome(1, "k1", Status.POSTED, activity_id="one"))
    log.record(RowOutcome(3, "k3", Status.FAILED, error="boom"))
    log.compact()
    log.close()
    outcomes = list(read_outcomes(path))
    assert [(o.row, o.status) for o in outcomes] == [
        (1, Status.POSTED), (2, Status.UNKNOWN), (3, Status.FAILED)]
    assert outcomes[0].activity_id == "one"


def test_results_file_that_cannot_be_created_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.symlink_to("/dev/full")  # a full disk: the header cannot be written
    with pytest.raises(UsageError, match="cannot write"):
        _log(path)


def test_second_run_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    with pytest.raises(ResultsLocked, match="another bulkpost run"):
        _log(path)
    log.close()
    _log(path).close()  # released


def test_in_flight_mark_is_on_disk_before_returning(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"

    async def scenario() -> None:
        log = _log(path)
        await asyncio.gather(*(log.mark_in_flight(row, "", "") for row in range(1, 51)))
        assert log._synced == log._size  # one group commit covered every mark
        log.close()

    asyncio.run(scenario())
    assert [o.status for o in read_outcomes(path)] == [Status.UNKNOWN] * 50


def test_unwritable_results_file_stops_sending(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    os.close(log._fd)
    log._fd = os.open("/dev/full", os.O_WRONLY)  # the disk is now full: ENOSPC
    with pytest.raises(ResultsWriteError, match="cannot write"):
        log.record(RowOutcome(1, "", Status.POSTED))
    log.close()
