"""What a person meets: the real CLI on a pseudo-terminal, against the sandbox.

Each run's output is read from the terminal's master side as it comes, with the time each
piece arrived. :func:`screen` replays it the way a terminal would (a carriage return goes
back to the line's start, later text overwrites earlier), so a test sees the lines left
on the screen, and :func:`frames` reads every drawing of the progress bar with its time.
"""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bulkpost.cli.summary_text import summary_lines
from bulkpost.core.summary import Summary
from tests.conftest import KEYED_MAPPING, ROOT, SECRET, cli_command, cli_env, run_cli, write_csv

pytestmark = pytest.mark.e2e

WIDTH = 120
MAPPING = KEYED_MAPPING
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[(debug|info|warning|error) *\] ")
_BAR = re.compile(r"\r( *\d+%\|[^|\r\n]*\| (\d+)/(\d+|\?) \[([0-9:]+)"
                  r"(?:, ([0-9.,?]+) ?rows?/s)?(?:, ETA ([0-9:?]+))?\])")


@dataclass(frozen=True)
class Frame:
    """One drawing of the bar: when it arrived (seconds after the start) and what it said."""

    at: float
    text: str
    finished: int
    total: int | None
    rate: float | None  # rows per second shown, None for "?"
    eta: float | None  # seconds shown, None when not shown or "?"


@dataclass(frozen=True)
class Terminal:
    code: int
    output: str  # as written, escape sequences and all
    arrivals: list[tuple[int, float]]  # (end offset in output, seconds after the start)

    def at(self, offset: int) -> float:
        """When the character at ``offset`` arrived."""
        return next(t for end, t in self.arrivals if offset < end)

    def screen(self) -> list[str]:
        """The lines a terminal shows at the end, trailing blanks and colours removed."""
        lines: list[list[str]] = [[]]
        column = 0
        for char in _ANSI.sub("", self.output):
            if char == "\r":
                column = 0
            elif char == "\n":
                lines.append([])
                column = 0  # the terminal's newline translation sends \r\n
            else:
                line = lines[-1]
                line.extend(" " * (column + 1 - len(line)))
                line[column] = char
                column += 1
        return ["".join(line).rstrip() for line in lines]

    def frames(self) -> list[Frame]:
        found = []
        for match in _BAR.finditer(self.output):
            finished, total, _elapsed, rate, eta = match.groups()[1:]
            found.append(Frame(
                self.at(match.end() - 1), match.group(1), int(finished),
                None if total == "?" else int(total),
                None if rate in (None, "?") else float(rate.replace(",", "")),
                None if eta in (None, "?") else _seconds(eta)))
        return found

    def summary(self) -> str:
        """The summary in words: the line of counts (a person sees no JSON line)."""
        assert not [line for line in self.screen() if line.startswith("{")], self.output
        return next(line for line in self.screen()
                    if re.match(r"[\d,]+ rows?: |nothing to send: ", line))


def _seconds(clock: str) -> float:
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def run_in_terminal(*args: str | Path, timeout: float = 60, **env: str) -> Terminal:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal WIDTH columns wide."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, WIDTH, 0, 0))
    decoder = codecs.getincrementaldecoder("utf-8")()
    output: list[str] = []
    arrivals: list[tuple[int, float]] = []
    size = 0
    started = time.monotonic()
    try:
        process = subprocess.Popen(cli_command(*args), stdin=slave, stdout=slave, stderr=slave,
                                   env=cli_env(TERM="xterm", **env),
                                   cwd=ROOT, start_new_session=True)
    finally:
        os.close(slave)
    try:
        while time.monotonic() - started < timeout:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            text = decoder.decode(data)
            size += len(text)
            output.append(text)
            arrivals.append((size, time.monotonic() - started))
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    terminal = Terminal(code, "".join(output), arrivals)
    assert SECRET not in terminal.output
    return terminal


def _lead(n: int) -> str:
    return str(uuid.UUID(int=(n + 1) * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128, version=4))


def _inputs(tmp_path: Path, count: int, *, bad_leads: int = 0) -> tuple[Path, Path]:
    rows = [[f"K{n:05d}", "nope" if n <= bad_leads else _lead(n % 17), f"note {n}",
             "2024-03-01 10:00:00", f"v{n}"] for n in range(1, count + 1)]
    data = write_csv(tmp_path / "in.csv", ["key", "lead", "note", "when", "value"], rows)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    return data, mapping


def _run(data: Path, mapping: Path, tmp_path: Path, url: str, *extra: str) -> Terminal:
    return run_in_terminal("run", data, "--mapping", mapping, "--results",
                           tmp_path / "results.csv", "--host", url, *extra)


def _eta_errors(frames: list[Frame]) -> list[float]:
    """For each drawing with an observed rate: when its ETA said the run would finish,
    less when the bar reached its total."""
    end = next(f.at for f in frames if f.total and f.finished == f.total)
    return [f.at + f.eta - end for f in frames
            if f.rate is not None and f.eta is not None and f.finished < (f.total or 0)]


def test_log_lines_and_the_bar_share_the_terminal_cleanly(
        tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 40)
    server = make_sandbox("100/1s", latency=(0.01, 0.01))
    terminal = _run(data, mapping, tmp_path, server.url, "--rate", "100/1s")
    assert terminal.code == 0, terminal.output
    assert terminal.summary() == "40 rows: 40 posted"
    screen = terminal.screen()
    while screen and not screen[-1]:
        screen.pop()
    assert "" not in screen, "\n".join(screen)  # no blank line after any log line
    bars = [n for n, line in enumerate(screen) if "%|" in line]
    said = screen.index(terminal.summary())
    # One bar, drawn again in place each time, left below every line logged while it ran,
    # and the summary in words below it, once: no JSON line, no "run finished" log line.
    assert bars == [said - 1], "\n".join(screen)
    assert screen[bars[0]].startswith("100%|") and "40/40" in screen[bars[0]]
    assert screen[said + 1].startswith("took 0:00:0") and " at 100/1s (given)" in screen[said + 1]
    logged = screen[:bars[0]]
    assert all(_LOG_LINE.match(line) for line in logged), "\n".join(logged)  # none torn
    assert sum("preflight" in line for line in logged) == 1
    assert all(len(frame.text) < WIDTH for frame in terminal.frames())
    # The type's 48 other fields: counted in words on its line, not listed.
    assert "50 custom fields, 48 of them not mapped (left empty;" in terminal.output
    assert "mx_Custom_3" not in terminal.output
    assert "=None" not in terminal.output
    # The look-ups' own vocabulary is for debugging.
    assert "run finished" not in terminal.output and "reading=" not in terminal.output
    assert "count=" not in terminal.output


def test_the_unmapped_fields_are_listed_at_debug_level(
        tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 5)
    server = make_sandbox("100/1s")
    terminal = _run(data, mapping, tmp_path, server.url, "--rate", "100/1s",
                    "--log-level", "debug")
    assert terminal.code == 0, terminal.output
    listed = [line for line in terminal.screen()
              if "fields not mapped" in line and line.find("[debug") > 0]
    assert len(listed) == 1
    assert "'mx_Custom_3 (Custom 3)'" in listed[0] and "'mx_Custom_50 (Custom 50)'" in listed[0]


def test_the_eta_follows_the_rate_this_run_observes(tmp_path: Path, make_sandbox: Any) -> None:
    # One worker and 60 ms a call: about 15 rows/s where the limit would allow 100.
    data, mapping = _inputs(tmp_path, 50)
    server = make_sandbox("100/1s", latency=(0.06, 0.06))
    terminal = _run(data, mapping, tmp_path, server.url, "--rate", "100/1s", "--workers", "1")
    assert terminal.code == 0, terminal.output
    frames = terminal.frames()
    errors = _eta_errors(frames)
    assert len(errors) >= 3, [f.text for f in frames]
    # An ETA is shown in whole seconds: rounding alone is half a second off.
    assert max(map(abs, errors)) <= 1.0, (errors, [f.text for f in frames])
    sending = [f for f in frames if f.finished >= 1]
    actual = ((sending[-1].finished - sending[0].finished)
              / (sending[-1].at - sending[0].at))
    shown = [f.rate for f in frames if f.rate is not None]
    assert all(abs(rate / actual - 1) < 0.25 for rate in shown), (actual, shown)


def test_a_resumed_run_counts_only_its_own_rows_in_rate_and_eta(
        tmp_path: Path, make_sandbox: Any) -> None:
    server = make_sandbox("1000/1s", latency=(0.06, 0.06))
    data, mapping = _inputs(tmp_path, 150)
    first = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "results.csv",
                    "--host", server.url, "--rate", "1000/1s", "--workers", "30")
    assert first.code == 0 and first.summary["posted"] == 150, first.stderr
    data, mapping = _inputs(tmp_path, 200)  # 50 rows more
    terminal = _run(data, mapping, tmp_path, server.url, "--rate", "1000/1s", "--workers", "1")
    assert terminal.code == 0, terminal.output
    assert terminal.summary() == "200 rows: 50 posted, 150 posted earlier (not sent again)"
    frames = terminal.frames()
    assert frames[-1].finished == frames[-1].total == 200  # the bar counts every row
    # The 150 rows passed over in an instant are not this run's work: a rate counting them
    # would show hundreds of rows a second. One worker and 60 ms a call make at most 17.
    shown = [f.rate for f in frames if f.rate is not None]
    assert shown and max(shown) < 20, [f.text for f in frames]
    errors = _eta_errors(frames)
    assert len(errors) >= 3 and max(map(abs, errors)) <= 1.0, (errors, [f.text for f in frames])


def test_json_log_lines_carry_lists_as_json_values(tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 6, bad_leads=2)
    server = make_sandbox("100/1s")
    result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--host", server.url, "--dry-run", "--log-format", "json",
                     "--log-level", "debug")
    assert result.code == 1, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    finished = next(e for e in events if e["event"] == "run.finished")
    assert finished["problems"] == result.summary["problems"]
    assert len(finished["problems"]) == 1 and "2 rows" in finished["problems"][0]
    listed = next(e for e in events if e["event"] == "preflight.fields_unmapped")
    assert listed["fields"][:2] == ["mx_Custom_3 (Custom 3)", "mx_Custom_4 (Custom 4)"]
    assert listed["count"] == 48 and listed["level"] == "debug"
    assert finished["level"] == "info"  # a program reads the summary in the log too
    # JSON keeps an absent optional field as null: a scheduler reads a stable set of keys.
    started = next(e for e in events if e["event"] == "run.started")
    assert "bulk_rate" in started and started["bulk_rate"] is None


def test_a_rerun_with_nothing_to_send_says_so_once_in_words(
        tmp_path: Path, make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 8)
    server = make_sandbox("100/1s")
    first = _run(data, mapping, tmp_path, server.url, "--rate", "100/1s")
    assert first.code == 0 and first.summary() == "8 rows: 8 posted", first.output
    again = _run(data, mapping, tmp_path, server.url, "--rate", "100/1s")
    assert again.code == 0, again.output
    assert again.summary() == "nothing to send: all 8 rows were posted earlier"
    screen = again.screen()
    assert sum("rows were posted earlier" in line for line in screen) == 1
    assert not any("[info" in line and "calibrated" in line for line in screen)
    # Piped, stdout keeps its JSON line for scripts: skipped counts the rows done before.
    piped = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "results.csv",
                    "--host", server.url, "--rate", "100/1s")
    assert (piped.summary["skipped"], piped.summary["done_before"]) == (8, 8)
    assert "nothing to send" not in piped.stderr  # no person at that terminal


def test_an_input_s_exact_repeats_are_not_said_to_be_posted_before() -> None:
    # Row 951 of a call log repeats row 950: created once, by row 950, in this very run.
    first = Summary(rows=1500, posted=1491, skipped=1, repeats=1, invalid=8)
    assert summary_lines(first)[0] == ("1,500 rows: 1,491 posted, 1 repeat of an earlier row "
                                       "of the input (created once, by it), 8 invalid")
    night = Summary(rows=186, posted=24, updated=30, skipped=132, repeats=2)
    assert summary_lines(night)[0] == (
        "186 rows: 24 posted, 30 updated, 2 repeats of an earlier row of the input (created "
        "once, by it), 130 skipped (their key was posted before)")
