"""The results log: append, reload, torn lines, compaction, the lock, write failures; its
line format and its in-memory row index."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkpost.core.results_line import (
    HEADER,
    RowOutcome,
    escape_value,
    format_line,
    parse_line,
    unescape_value,
)
from bulkpost.core.resume import Recorded, key_digest
from bulkpost.core.statuses import Status
from bulkpost.errors import ResultsLocked, ResultsWriteError, UsageError
from bulkpost.storage.results import ResultsLog
from bulkpost.storage.results_file import DamagedLine, read_outcomes
from bulkpost.storage.row_index import RowIndex


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
    first = again.recorded(1)
    assert first is not None and first.status is Status.POSTED
    assert first.content_hash == "00000000000000ab" and first.key_digest == key_digest("k1")
    second = again.recorded(2)
    assert second is not None and second.status is Status.REJECTED
    assert second.content_hash == "ff" * 8
    assert again.recorded(3) is None
    assert again.counts()[Status.POSTED] == 1
    again.close()


def test_every_line_is_one_physical_line(tmp_path: Path) -> None:
    line = format_line(RowOutcome(7, "a\nb", Status.FAILED, error='x\r\ny "z", w'))
    assert line.count(b"\n") == 1 and line.endswith(b"\n")


@settings(max_examples=300, deadline=None)
@given(key=st.text(), error=st.text(), error_type=st.text(max_size=5),
       activity_id=st.text(max_size=40), http=st.none() | st.integers(100, 599),
       status=st.sampled_from(list(Status)), attempts=st.integers(0, 99))
def test_a_line_reads_back_as_written(key: str, error: str, error_type: str,
                                      activity_id: str, http: int | None, status: Status,
                                      attempts: int) -> None:
    """Plain lines are formatted without the csv module; they must read back the same: the
    key and the activity Id exactly (line breaks escaped), the error text folded."""
    outcome = RowOutcome(5, key, status, activity_id=activity_id, http_status=http,
                         error_type=error_type, error=error, attempts=attempts,
                         content_hash="0123456789abcdef", updated_at="2026-11-26T10:00:00Z")
    line = format_line(outcome)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    fields = next(csv.reader([line.decode()]))
    folded = {"error": error, "error_type": error_type}
    for name, text in folded.items():
        folded[name] = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    expected = RowOutcome(
        5, key, status, activity_id=activity_id, http_status=http,
        error_type=folded["error_type"], error=folded["error"], attempts=attempts,
        content_hash="0123456789abcdef", updated_at="2026-11-26T10:00:00Z")
    assert parse_line(fields) == expected
    index = RowIndex()  # the resume's fast path reads it the same
    index.replay([line], 0)
    assert index.recorded(5) == Recorded(status, "0123456789abcdef",
                                         key_digest(key) if key else 0)


@pytest.mark.parametrize("written", [
    "plain", "a\\nb", "%%", "%%x", "%%a%0Ab", "%0A", "50%", "k,\"q\"", "%%\"q\"%0D"])
def test_a_value_written_before_escapes_reads_as_it_is(written: str) -> None:
    """Old files folded line breaks: their keys never hold one, and read as written, even
    one that begins with the mark, unless it has exactly an escape's form."""
    assert unescape_value(escape_value(written)) == written
    if written not in ("%%a%0Ab", '%%"q"%0D'):  # the forms an escape takes
        assert unescape_value(written) == written


def test_a_key_holding_a_line_break_round_trips_and_stays_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    for row, key in enumerate(["line 1\nline 2", "a\r\nb", "%%start", "50%\n"], start=1):
        log.record(RowOutcome(row, key, Status.POSTED, activity_id=f"id\n{row}",
                              content_hash="ab" * 8))
    log.compact()
    log.close()
    assert len(path.read_bytes().splitlines()) == 1 + 4  # the header, four rows
    again = _log(path)
    assert again.recorded(1) == Recorded(Status.POSTED, "ab" * 8, key_digest("line 1\nline 2"))
    assert again.recorded(2) == Recorded(Status.POSTED, "ab" * 8, key_digest("a\r\nb"))
    assert again.recorded(3) == Recorded(Status.POSTED, "ab" * 8, key_digest("%%start"))
    assert again.holds("id\n4")
    again.close()
    assert [o.key for o in read_outcomes(path)] == ["line 1\nline 2", "a\r\nb", "%%start",
                                                    "50%\n"]


def test_torn_last_line_is_cut_off_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    log.record(RowOutcome(1, "", Status.POSTED, activity_id="a"))
    log.close()
    with open(path, "ab") as handle:
        handle.write(b"2,,posted,half-written-i")  # kill -9 in the middle of a write
    again = _log(path)
    assert again.torn_lines == 1
    assert again.recorded(2) == Recorded(Status.UNKNOWN, "", 0)  # looked up, not sent blind
    again.record(RowOutcome(2, "", Status.POSTED, activity_id="b"))
    again.close()
    rows = [o.row for o in read_outcomes(path)]
    assert rows == [1, 2, 2]
    assert b"half-written" not in path.read_bytes()


def test_reload_reads_plain_and_quoted_lines_alike(tmp_path: Path) -> None:
    """Plain lines take a fast path on reload; it must agree with the csv module."""
    path = tmp_path / "results.csv"
    log = _log(path)
    log.record(RowOutcome(1, "k1", Status.POSTED, activity_id="id-1", http_status=200,
                          attempts=1, content_hash="0123456789abcdef"))
    log.record(RowOutcome(2, "k,2", Status.REJECTED, error='bad "x"', content_hash="ff" * 8))
    log.close()
    with open(path, "ab") as handle:
        handle.write(b"8,,unknown,,,,,,2026-01-01T00:00:00Z,\n")  # empty attempts: fine
    again = _log(path)
    first, second = again.recorded(1), again.recorded(2)
    assert first == Recorded(Status.POSTED, "0123456789abcdef", key_digest("k1"))
    assert second == Recorded(Status.REJECTED, "ff" * 8, key_digest("k,2"))
    assert again.recorded(8) == Recorded(Status.UNKNOWN, "", 0)
    fast = again.last_outcome(1)
    assert fast is not None and fast.activity_id == "id-1"
    again.close()


_DAMAGED = [
    (b"3,k3,posted,id-3,2oo,,,1,2026-01-01T00:00:00Z,\n", "http_status '2oo'"),
    (b"3,k3,POSTED,id-3,200,,,1,2026-01-01T00:00:00Z,\n", "status 'POSTED'"),
    (b"3,k3,done,id-3,200,,,1,2026-01-01T00:00:00Z,\n", "status 'done'"),
    (b"3,k3,posted,id-3,200,,,1\n", "8 fields, not 10"),
    (b"3,k3,posted,id-3,200,,,1,2026-01-01T00:00:00Z,zz\n", "content_hash 'zz'"),
    (b'3,"k,3",posted,id-3,200,,,1,2026-01-01T00:00:00Z,0x12\n', "content_hash '0x12'"),
    (b"3,,unknown,,,,,x,2026-01-01T00:00:00Z,\n", "attempts 'x'"),
    (b"three,k3,posted,id-3,200,,,1,2026-01-01T00:00:00Z,\n", "row 'three'"),
    (b"0,k3,posted,id-3,200,,,1,2026-01-01T00:00:00Z,\n", "row '0'"),
]


@pytest.mark.parametrize(("damaged", "reason"), _DAMAGED)
def test_a_damaged_line_refuses_the_file_naming_it(tmp_path: Path, damaged: bytes,
                                                   reason: str) -> None:
    """A line that does not read back may describe a row posted: never skipped silently
    (the row would be sent again), the file is refused, naming the line and the way out;
    the file is left as it is."""
    path = tmp_path / "results.csv"
    log = _log(path)
    log.record(RowOutcome(1, "k1", Status.POSTED, activity_id="id-1", content_hash="ab" * 8))
    log.close()
    with open(path, "ab") as handle:
        handle.write(damaged)
        handle.write(b"2,k2,posted,id-2,200,,,1,2026-01-01T00:00:00Z,\n")
    before = path.read_bytes()
    with pytest.raises(DamagedLine, match=f"line 3: .*{re.escape(reason)}.*Nothing was sent.*"
                                          "bulkpost report"):
        _log(path)
    assert path.read_bytes() == before
    _log(path.with_name("other.csv")).close()  # the lock was released
    with pytest.raises(DamagedLine, match="line 3"):
        list(read_outcomes(path))
    seen: list[int] = []
    assert [o.row for o in read_outcomes(path, lambda d: seen.append(d.line))] == [1, 2]
    assert seen == [3]


def test_a_torn_last_line_naming_a_row_makes_it_unknown(tmp_path: Path) -> None:
    """A torn last line is cut off; the row it names, had its line been whole, might be
    recorded sent: it is looked up (unknown), never sent blind; a done row stays done, and a
    failed row failed (looked up anyway, in the window its own line gives)."""
    path = tmp_path / "results.csv"
    log = _log(path)
    log.record(RowOutcome(1, "k1", Status.POSTED, activity_id="id-1", content_hash="ab" * 8))
    log.record(RowOutcome(2, "k2", Status.FAILED, attempts=3, content_hash="cd" * 8))
    log.close()
    for torn, row in ((b"3,k3,unknown,,,,in fli", 3), (b"2,k2,pos", 2), (b"1,k1,unkn", 1)):
        with open(path, "ab") as handle:
            handle.write(torn)
        again = _log(path)
        assert again.torn_lines == 1
        assert again.torn_row == (0 if row in (1, 2) else row)
        again.close()
        assert not path.read_bytes().endswith(torn)
    again = _log(path)
    assert again.recorded(3) == Recorded(Status.UNKNOWN, "", 0)
    assert again.recorded(2) == Recorded(Status.FAILED, "cd" * 8, key_digest("k2"))
    assert again.recorded(1) == Recorded(Status.POSTED, "ab" * 8, key_digest("k1"))
    line = again.last_outcome(3)
    assert line is not None and "torn" in line.error and line.updated_at
    again.close()


def test_the_row_index_replays_whole_lines_and_stops_at_a_torn_one() -> None:
    at = "2026-01-01T00:00:00Z"
    lines = [
        format_line(RowOutcome(2, "k2", Status.POSTED, activity_id="id-2",
                               content_hash="ab" * 8, updated_at=at)),
        format_line(RowOutcome(1, "k,1", Status.FAILED, error='x "y"', updated_at=at)),
        b"3,k3,pos",  # torn: no line break
    ]
    index = RowIndex()
    end, whole = index.replay(lines, 100)
    assert (end, whole) == (100 + sum(len(line) for line in lines[:2]), 2)
    assert index.recorded(2) == Recorded(Status.POSTED, "ab" * 8, key_digest("k2"))
    assert index.recorded(1) == Recorded(Status.FAILED, "", key_digest("k,1"))
    assert index.recorded(3) is None and index.line_offset(3) is None
    assert list(index.line_offsets()) == [100 + len(lines[0]), 100]
    assert index.holds("id-2") and index.last_posted_row() == 2
    assert index.counts()[Status.FAILED] == 1


def test_an_activity_is_held_by_the_row_posted_with_it_whatever_its_content(
        tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    same = "00000000000000aa"
    log.record(RowOutcome(1, "a", Status.POSTED, activity_id="id-1", content_hash=same))
    log.record(RowOutcome(2, "b", Status.FAILED, content_hash=same))
    log.record(RowOutcome(3, "c", Status.POSTED, activity_id="id-3", content_hash="bb" * 8))
    log.record(RowOutcome(4, "d", Status.POSTED, activity_id="id-4", content_hash=same))
    log.record(RowOutcome(5, "e", Status.SKIPPED, activity_id="id-9", content_hash=same))
    log.record(RowOutcome(6, "f", Status.POSTED, activity_id="id-6", content_hash=same))
    log.record(RowOutcome(6, "f", Status.UNKNOWN, content_hash=same))  # re-sent: no longer
    log.close()
    again = _log(path)
    assert [again.holds(i) for i in ("id-1", "id-3", "id-4")] == [True] * 3
    # A skipped line names another row's activity; a row's later line replaces its Id.
    assert [again.holds(i) for i in ("id-9", "id-6", "id-2", "")] == [False] * 4
    again.record(RowOutcome(2, "b", Status.POSTED, activity_id="id-2", content_hash=same))
    assert again.holds("id-2")
    again.close()


def test_a_resume_in_another_process_matches_keys(tmp_path: Path) -> None:
    """Key digests are salted per process; the file holds the keys, so a resume works."""
    path = tmp_path / "results.csv"
    log = _log(path)
    log.record(RowOutcome(1, "K-1", Status.POSTED, activity_id="id-1"))
    log.close()
    script = (
        "import sys; from bulkpost.storage.results import ResultsLog; "
        "from bulkpost.core.resume import key_digest; "
        "log = ResultsLog(sys.argv[1]).open(); p = log.recorded(1); "
        "print(p.key_digest == key_digest('K-1'), p.key_digest == key_digest('K-2'))")
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", script, str(path)], check=True,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.stdout.split() == ["True", "False"]


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
        assert log._commit.synced == log._commit.size  # one group commit covered every mark
        log.close()

    asyncio.run(scenario())
    assert [o.status for o in read_outcomes(path)] == [Status.UNKNOWN] * 50


def test_unwritable_results_file_stops_sending(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    log = _log(path)
    os.close(log._commit.fd)
    log._commit.fd = os.open("/dev/full", os.O_WRONLY)  # the disk is now full: ENOSPC
    with pytest.raises(ResultsWriteError, match="cannot write"):
        log.record(RowOutcome(1, "", Status.POSTED))
    log.close()
