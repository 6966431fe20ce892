"""The progress bar: its rate counts this run's own rows, its ETA leaves out rows an
earlier run finished, and log lines print whole above it. Times are passed by hand."""

from __future__ import annotations

import io

import pytest

from bulkpost.runner.progress import BarAwareStream, Progress, Throughput


def _every(throughput: Throughput, start: float, step: float, count: int) -> float:
    """Add one row every ``step`` seconds after ``start``; the time of the last."""
    now = start
    for n in range(1, count + 1):
        now = start + n * step
        throughput.add(1, now)
    return now


def test_the_rate_counts_the_rows_after_the_first_call() -> None:
    throughput = Throughput()
    throughput.add(25, 1000.0)  # a bulk call's batch: it ends an interval of unknown length
    throughput.add(25, 1005.0)
    assert throughput.per_second(1005.0) == pytest.approx(5.0)
    assert throughput.per_second(1010.0) == pytest.approx(2.5)  # nothing more came


def test_no_rate_before_a_second_and_ten_rows_or_ten_seconds() -> None:
    fast = Throughput()
    assert fast.per_second(1000.0) is None
    fast.add(1, 1000.0)
    _every(fast, 1000.0, 0.05, 9)
    assert fast.per_second(1000.5) is None and fast.per_second(1001.0) is None  # 9 rows
    fast.add(1, 1001.0)
    assert fast.per_second(1001.0) == pytest.approx(10.0)
    slow = Throughput()
    slow.add(1, 1000.0)
    slow.add(1, 1004.0)
    assert slow.per_second(1009.9) is None
    assert slow.per_second(1010.0) == pytest.approx(0.1)


def test_the_rate_follows_the_last_thirty_seconds() -> None:
    throughput = Throughput()
    throughput.add(1, 1000.0)
    now = _every(throughput, 1000.0, 0.125, 240)  # 8 rows/s for 30 s
    assert throughput.per_second(now) == pytest.approx(8.0)
    now = _every(throughput, now, 0.5, 60)  # then 2 rows/s for 30 s
    assert throughput.per_second(now) == pytest.approx(2.0)
    assert len(throughput._starts) <= 30 / 0.1 + 2  # bounded, however many rows came
    assert throughput.per_second(now + 31) == 0.0  # a window with no row: not unknown


def test_the_eta_divides_by_the_limit_then_by_the_rate_observed() -> None:
    now = [1000.0]
    progress = Progress(enabled=True, calls_per_second=100.0, stream=io.StringIO(),
                        clock=lambda: now[0])
    progress.set_total(300)
    progress.resuming(100)
    progress.done(100, passed_over=True)  # in an instant: not this run's work
    bar = progress._bar
    assert bar is not None
    assert bar.postfix == "? rows/s, ETA 0:00:02"  # 200 rows at the limit's 100/s
    progress.done()  # this run's first row
    for _ in range(5):
        now[0] += 0.1
        progress.done()
    assert bar.postfix == "? rows/s, ETA 0:00:02"  # 194 rows, still at the limit's rate
    for _ in range(15):
        now[0] += 0.1
        progress.done()
    # 20 rows in 2 s: 10 rows/s; 300 - 121 = 179 rows to go.
    assert bar.n == 121 and bar.postfix == "10.0 rows/s, ETA 0:00:18"
    progress.close()


def test_log_lines_print_whole_above_the_bar() -> None:
    stream = io.StringIO()
    progress = Progress(enabled=True, calls_per_second=5.0, stream=stream)
    progress.set_total(10)
    logs = BarAwareStream(stream)
    print("first line", file=logs, flush=True)  # print writes the text, then "\n"
    print("second line", file=logs, flush=True)
    logs.write("a line not ended")
    progress.close()  # the bar is left in place, its line ended
    text = stream.getvalue()
    assert text.count("\n") == 3, repr(text)  # no blank line after a log line
    assert "first line\n\r" in text and "second line\n\r" in text  # the bar drawn below
    logs.flush()  # the bar is gone: what was held is written
    assert stream.getvalue() == text + "a line not ended"


def test_the_eta_counts_only_rows_that_will_take_a_call() -> None:
    stream = io.StringIO()
    progress = Progress(enabled=True, calls_per_second=5.0, stream=stream)
    progress.set_total(100)
    progress.resuming(50)  # an earlier run finished 50 rows
    progress.done(10, passed_over=True)  # 10 of them passed over so far
    progress.done(5)  # and 5 rows sent
    bar = progress._bar
    assert bar is not None
    # 100 - 15 done - 40 still to pass over = 45 rows at 5 calls/s.
    assert bar.postfix == "? rows/s, ETA 0:00:09"
    progress.close()


def test_no_bar_when_disabled_and_logs_pass_through() -> None:
    stream = io.StringIO()
    progress = Progress(enabled=False, calls_per_second=5.0, stream=stream)
    progress.set_total(10)
    progress.done(3)
    progress.close()
    assert stream.getvalue() == ""
    out = io.StringIO()
    assert BarAwareStream(out).write("line\n") == 5 and out.getvalue() == "line\n"


def test_the_eta_follows_the_share_s_schedule_ahead() -> None:
    from datetime import datetime, timedelta

    from bulkpost.core.share import ShareSchedule

    wall = [datetime(2026, 3, 2, 18, 59, 0)]
    now = [1000.0]
    share = ShareSchedule.parse("09:00-19:00=40%,100%")
    progress = Progress(enabled=True, calls_per_second=10.0, stream=io.StringIO(),
                        clock=lambda: now[0], share=share, wall=lambda: wall[0])
    progress.set_total(2_000)
    bar = progress._bar
    assert bar is not None
    progress.done()  # the first row: no rate observed yet
    # 1,999 rows: 60 s at 4/s (240 rows) until 19:00, then 1,759 at 10/s (175.9 s).
    assert bar.postfix == "? rows/s, ETA 0:03:56"
    for _ in range(20):  # 4 rows a second observed at 40%: 10/s at the whole limit
        now[0] += 0.25
        wall[0] += timedelta(seconds=0.25)
        progress.done()
    # 1,979 rows from 18:59:05: 55 s at 4/s (220 rows), then 1,759 at 10/s.
    assert bar.postfix == "4.0 rows/s, ETA 0:03:51"
    assert progress.eta_seconds(100, 4.0) == pytest.approx(25)  # all before 19:00
    progress.close()
