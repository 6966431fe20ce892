"""Shared fixtures: the sandbox on 127.0.0.1 in a thread, and the CLI in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow
import pytest
import structlog
from aiohttp import web

from bulkpost.core.allowance import RateSpec
from bulkpost.runner import logs
from bulkpost.sandbox.app import Sandbox
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from bulkpost.storage.history.accounts import DATA_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent
SECRET = DEFAULT_SECRET_KEY


class SandboxServer:
    """A :class:`Sandbox` served from its own event loop in a background thread."""

    def __init__(self, **options: Any) -> None:
        self.sandbox = Sandbox(**options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.url: str = self.call(self.sandbox.start())

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def stats(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.sandbox.stats_dict()
        result: dict[str, Any] = self.call(read())
        return result

    def create_calls(self) -> int:
        """Calls to the Create endpoint: every call but the look-ups (preflight included)."""
        stats = self.stats()
        return int(stats["calls"]) - int(stats["lookups"])

    def ledger(self) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            return list(self.sandbox.ledger)
        result: list[dict[str, Any]] = self.call(read())
        return result

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            # Handlers still sleeping out a latency belong to clients long gone: cancel
            # them first, or the server's shutdown would wait for them.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(cancel_the_rest())
        self.call(self.sandbox.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def run_killed(server: SandboxServer, args: Sequence[Any],
               arm: Callable[[Callable[[dict[str, Any]], None]], None],
               until: str) -> tuple[dict[str, Any], int]:
    """Run the CLI with ``args``; ``arm(kill)`` sets a sandbox watch that calls ``kill`` with
    the entry concerned (on the sandbox's loop, before its call is answered), which SIGKILLs
    the run. Returns that entry and the ledger's size at that moment. ``until`` says what
    the watch waits for, for the message when the run ends first."""
    started: list[subprocess.Popen[str]] = []
    fired: list[tuple[dict[str, Any], int]] = []

    def kill(entry: dict[str, Any]) -> None:
        if started and started[0].returncode is None:
            started[0].send_signal(signal.SIGKILL)
            fired.append((entry, len(server.sandbox.ledger)))

    async def watch() -> None:
        arm(kill)

    server.call(watch())
    process = subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)
    started.append(process)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert fired and process.returncode == -signal.SIGKILL, (
        f"the run ended (exit {process.returncode}) before {until}: {stderr[-3000:]}")
    [found] = fired
    return found


class SandboxProcess:
    """``bulkpost sandbox`` in a subprocess, kept running for the duration of a with block;
    entering gives its stdout line and its announcement."""

    def __init__(self, *options: str) -> None:
        self.options = options

    def __enter__(self) -> tuple[str, str]:
        self.process = subprocess.Popen(
            cli_command("sandbox", "--port", "0", *self.options), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.watchdog = threading.Timer(60, self.process.kill)  # one that never announces
        self.watchdog.start()
        ready = self.process.stdout.readline()
        lines: list[str] = []
        while line := self.process.stderr.readline():
            lines.append(line)
            if line.strip().startswith("export LSQ_HOST="):
                break
        self.watchdog.cancel()
        return ready, "".join(lines)

    def __exit__(self, *_: object) -> None:
        self.watchdog.cancel()
        self.process.terminate()
        self.process.wait(timeout=30)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdout.close()
        self.process.stderr.close()


# The mapping of the CLI tests' inputs: key, lead, note, when (Kolkata time), value.
KEYED_MAPPING = """
[activity]
event = 201
lead_id_column = "lead"
note_column = "note"
datetime_column = "when"
timezone = "Asia/Kolkata"
key_column = "key"

[fields]
mx_Custom_1 = "key"
mx_Custom_2 = "value"
"""


@pytest.fixture(autouse=True)
def account_data(tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own data directory, as a user's machine has one: the account's history
    that runs keep by default lives there (shared by the runs of one test, never by two
    tests, which run at once on the same sandbox keys)."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv(DATA_DIR_ENV, str(path))
    return path


@pytest.fixture
def serve_handler() -> Iterator[Callable[..., str]]:
    """Serve one aiohttp handler for every path on 127.0.0.1; the fixture gives its URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    def serve(handler: Any, ssl_context: Any = None) -> str:
        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
            return runner

        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        runners.append(runner)
        scheme = "https" if ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"

    yield serve
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@pytest.fixture
def make_sandbox() -> Iterator[Any]:
    servers: list[SandboxServer] = []

    def start(rate: str = "100/1s", **options: Any) -> SandboxServer:
        from bulkpost.core.allowance import parse_rate

        spec: RateSpec = parse_rate(rate)
        server = SandboxServer(rate=spec, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        lines = self.stdout.strip().splitlines()
        assert lines, f"no stdout; stderr:\n{self.stderr}"
        data: dict[str, Any] = json.loads(lines[-1])
        return data


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSQ_")}
    env.update(LSQ_ACCESS_KEY=DEFAULT_ACCESS_KEY, LSQ_SECRET_KEY=DEFAULT_SECRET_KEY,
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def cli_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "bulkpost", *map(str, args)]


def run_cli(*args: str | Path, **env: str) -> CliResult:
    """Run the CLI to completion; the secret key must appear in none of its output.

    In this test process, through the console entry point (``bulkpost.cli.main.main``) with its
    arguments, environment, working directory and standard streams as a process would have
    them: starting a Python process costs more CPU (importing aiohttp, pyarrow, numpy) than
    most runs of a test, and the suite must stay fast. What only a process shows (a signal,
    kill -9, a crash at exit, a terminal) is tested with :func:`run_cli_process`, and so is a
    run started from another thread (two at once: environment, working directory and
    streams are the process's, and signals are handled on the main thread only)."""
    from bulkpost.cli.main import main

    if threading.current_thread() is not threading.main_thread():
        return run_cli_process(*args, **env)

    out, err = io.StringIO(), io.StringIO()
    environment = cli_env(**env)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_hook = sys.unraisablehook
    # The command configures logging for itself (to the streams it was given): what this
    # process had before comes back after it.
    saved_logging = structlog.get_config() if structlog.is_configured() else None
    saved_for_people = logs._for_people
    # A run tunes the collector and Arrow's allocator for itself (cli_run): put back after.
    saved_gc, saved_pool = gc.get_threshold(), pyarrow.default_memory_pool()
    saved_argv = sys.argv
    sys.argv = [str(ROOT / "bulkpost" / "__main__.py"), *map(str, args)]
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(ROOT)
    code: int = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(arg) for arg in args], prog_name="python -m bulkpost")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None
                                                                   else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.unraisablehook = saved_hook
        if saved_logging is None:
            structlog.reset_defaults()
        else:
            structlog.configure(**saved_logging)
        logs._for_people = saved_for_people
        gc.unfreeze()
        gc.set_threshold(*saved_gc)
        pyarrow.set_memory_pool(saved_pool)
        sys.argv = saved_argv
    result = CliResult(code, out.getvalue(), err.getvalue())
    assert SECRET not in result.stdout and SECRET not in result.stderr
    return result


def run_cli_process(*args: str | Path, **env: str) -> CliResult:
    """Run the CLI to completion in a process of its own (``python -m bulkpost``)."""
    done = subprocess.run(cli_command(*args), capture_output=True, text=True,
                          timeout=180, env=cli_env(**env), cwd=ROOT, check=False)
    result = CliResult(done.returncode, done.stdout, done.stderr)
    assert SECRET not in result.stdout and SECRET not in result.stderr
    return result


def replaced_on_purpose(results: Path) -> None:
    """A test that writes a results file by hand (playing a lost answer) replaces it on
    purpose: forget the size the last run left it at (its guard against a file cut short),
    as the refusal tells a person to."""
    kept = results.with_name(f"{results.name}.learnt.json")
    if kept.exists():
        lessons = json.loads(kept.read_text(encoding="utf-8"))
        lessons.pop("results", None)
        kept.write_text(json.dumps(lessons), encoding="utf-8")


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_results(path: Path) -> dict[int, dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return {int(r["row"]): r for r in csv.DictReader(handle)}


def read_results_log(path: Path) -> dict[int, str]:
    """Last status per row of a results log that may not be compacted yet."""
    import csv

    status: dict[int, str] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            if record.get("row", "").isdigit() and record.get("status"):
                status[int(record["row"])] = record["status"]
    return status


# The longest tests first: xdist hands tests out in collection order, so the long ones then
# start early and the workers finish together, instead of one running the fault matrix
# alone at the end (the suite took 2:55 or 4:00 by that luck alone).
_LONGEST_FIRST = ("tests/runner/test_limits.py::test_a_limit_learnt_is_kept",
                  "tests/e2e/test_tutorial.py::test_the_call_log",
                  "tests/e2e/test_fault_matrix.py",
                  "tests/storage/test_history.py::test_three_nights",
                  "tests/cli/test_cli.py::test_a_fault_mix",
                  "tests/e2e/test_honest_stops.py::test_after",
                  "tests/e2e/test_migration_sample.py",
                  "tests/e2e/test_safety.py::test_the_secret")


# Then the files by name, whatever their folder: the slow end-to-end files are spread
# through the suite between quick unit tests, as they were when the tests lay in one folder.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> tuple[int, str]:
        longest = next((n for n, prefix in enumerate(_LONGEST_FIRST)
                        if item.nodeid.startswith(prefix)), len(_LONGEST_FIRST))
        return longest, item.nodeid.split("::")[0].rsplit("/", 1)[-1]

    items.sort(key=rank)  # stable: the order within each rank is kept
