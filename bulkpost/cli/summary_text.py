"""A run's summary in words, for a person at a terminal (a program reads the JSON line).

Owns the wording: what happened to the input's rows, in one line of counts, with the rows
an earlier run finished said apart from those this run skipped (``skipped`` in the JSON
counts both; ``bulkpost report`` counts an earlier run's rows under their own status) and
an input's exact repeats apart from both, and how long it took at what rate. A rerun with
nothing left to do says so in those words.
"""

from __future__ import annotations

from bulkpost.core.summary import Summary


def _clock(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")


def summary_lines(summary: Summary) -> list[str]:
    """The summary of a real run in words (a dry run has its own report)."""
    data = summary.as_dict()
    skipped_now = summary.skipped - summary.done_before
    if summary.rows and summary.done_before == summary.rows and not summary.carried:
        counts = f"nothing to send: all {_rows(summary.rows)} were posted earlier"
    else:
        parts = [f"{summary.posted:,} posted"]
        parts += [f"{count:,} {word}" for count, word in (
            (summary.updated, "updated"),
            (summary.done_before, "posted earlier (not sent again)"),
            (summary.repeats, "repeat" + ("" if summary.repeats == 1 else "s")
             + " of an earlier row of the input (created once, by it)"),
            (summary.created_before, "created before by another load (the history holds "
             "them: not created again)"),
            (skipped_now - summary.repeats - summary.created_before,
             "skipped (their key was posted before)"),
            (summary.failed, "failed"), (summary.rejected, "rejected"),
            (summary.invalid, "invalid"), (summary.unknown, "unknown"),
            (data.get("pending", 0), "not yet sent")) if count]
        counts = f"{_rows(summary.rows)}: " + ", ".join(parts)
        if summary.carried:
            counts += (f"; {summary.carried:,} carried over from earlier runs, "
                       f"{summary.carried_done:,} of them done")
    rate = ", ".join(f"{value} {kind}" if len(summary.rate) > 1 else value
                     for kind, value in summary.rate.items())
    calls = f"{summary.calls:,} API call" + ("" if summary.calls == 1 else "s")
    took = f"took {_clock(summary.elapsed_s)}, {calls}"
    if summary.calls:
        took += f" at {rate}" if rate else ""
    lines = [counts, took]
    if summary.results:
        lines.append(f"every row's outcome: {summary.results}")
    return lines
