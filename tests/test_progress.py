"""The progress bar's ETA comes from the rate limit and leaves out rows already finished."""

from __future__ import annotations

import io

from bulkpost.progress import BarAwareStream, Progress


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
    assert bar.postfix == "ETA 0:00:09"
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
