"""What must hold when things go badly: a spent quota, a full disk, and never a leaked key."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import resource
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import structlog

from bulkpost.core.results_line import RowOutcome
from bulkpost.core.statuses import Status
from bulkpost.errors import HistoryLocked, ResultsLocked
from bulkpost.runner import logs
from bulkpost.storage.history.database import History
from bulkpost.storage.results import ResultsLog
from bulkpost.storage.results_file import read_outcomes
from tests.conftest import (
    ROOT,
    cli_command,
    cli_env,
    read_results,
    read_results_log,
    run_cli,
    write_csv,
)

MAPPING = """
[activity]
event = 201
lead_id_column = "lead"
note_column = "note"
key_column = "key"
[fields]
mx_Custom_1 = "key"
"""


def _inputs(tmp_path: Path, count: int) -> tuple[Path, Path]:
    rows = [[f"K{n:04d}", str(uuid.UUID(int=(n + 7) * 0x9E3779B97F4A7C15F39CC0605CEDC834
                                         % 2**128, version=4)), f"note {n}"]
            for n in range(1, count + 1)]
    data = write_csv(tmp_path / "in.csv", ["key", "lead", "note"], rows)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    return data, mapping


def _keys(server: Any) -> list[str]:
    return [e["Fields"]["mx_Custom_1"] for e in server.ledger()]


@pytest.mark.e2e
def test_a_spent_quota_stops_cleanly_and_a_later_run_resumes(tmp_path: Path,
                                                             make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 40)
    server = make_sandbox(rate="100/1s")
    results = tmp_path / "r.csv"
    args = ("run", data, "--mapping", mapping, "--results", results, "--host", server.url,
            "--rate", "100/1s", "--log-format", "json")
    first = run_cli(*args, "--max-rate-limited", "10")
    assert first.code == 0
    server.sandbox.faults = {"429-other": 1.0}  # another client takes the whole allowance
    _inputs(tmp_path, 80)  # 40 more rows to load, same file
    stopped = run_cli(*args, "--max-rate-limited", "2")
    assert stopped.code == 3
    assert "quota" in stopped.summary["aborted"] and "quota" in stopped.stderr
    assert stopped.summary["rate_limited"] > 0
    server.sandbox.faults = {}
    later = run_cli(*args)
    assert later.code == 0
    assert sorted(_keys(server)) == [f"K{n:04d}" for n in range(1, 81)]


@pytest.mark.e2e
def test_a_full_disk_stops_sending_and_no_sent_row_goes_unrecorded(tmp_path: Path,
                                                                   make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 200)
    server = make_sandbox(rate="200/1s")
    results = tmp_path / "r.csv"

    def small_disk() -> None:  # the results file may not grow past 6 kB
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    # No history: a 6 kB limit would refuse the history's first pages before any send.
    done = subprocess.run(
        cli_command("run", data, "--mapping", mapping, "--results", results, "--host",
                    server.url, "--rate", "200/1s", "--log-format", "json", "--create-again"),
        capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=120,
        preexec_fn=small_disk, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "cannot write the results file" in done.stderr
    recorded = {row["key"] for row in _all_lines(results)}
    sent = set(_keys(server))
    assert sent and len(sent) < 200
    assert sent <= recorded  # every row that reached the API has a line (unknown or posted)
    # With room again, the same command finishes the job, each row once.
    finished = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                       server.url, "--rate", "200/1s")
    assert finished.code == 0
    assert sorted(_keys(server)) == [f"K{n:04d}" for n in range(1, 201)]


def _all_lines(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return [r for r in csv.DictReader(handle) if r.get("key")]


SECRET = "s3cr3t-VALUE-that-must-never-show-9f2c"


@pytest.mark.e2e
def test_the_secret_key_appears_nowhere_on_any_fault_or_error_path(tmp_path: Path,
                                                                   make_sandbox: Any) -> None:
    data, mapping = _inputs(tmp_path, 120)
    faults = {"500-before": 0.08, "500-after": 0.08, "html": 0.06, "reset-before": 0.06,
              "reset-after": 0.06, "hang-after": 0.04, "429-other": 0.04,
              "ratelimit-200": 0.04}
    server = make_sandbox(rate="60/0.2s", faults=faults, seed=5, slow_seconds=1.2,
                          keys={"access-1": SECRET})
    results = tmp_path / "r.csv"
    seen: list[str] = []
    for extra in ((), ("--log-format", "console"), ("--max-attempts", "1")):
        result = run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                         server.url, "--rate", "60/0.2s", "--timeout", "0.8", "--backoff", "0.01",
                         "--log-level", "debug", *extra,
                         LSQ_ACCESS_KEY="access-1", LSQ_SECRET_KEY=SECRET)
        seen += [result.stdout, result.stderr]
    # Wrong keys (401), a wrong path (404), an unreachable host, a dry run.
    for host, key in ((server.url, "wrong-" + SECRET), (server.url + "/x", SECRET),
                      ("http://127.0.0.1:9", SECRET)):
        result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "o.csv",
                         "--host", host, "--max-attempts", "2", "--backoff", "0.01",
                         "--rate", "60/0.2s",
                         "--log-level", "debug", LSQ_ACCESS_KEY="access-1", LSQ_SECRET_KEY=key)
        seen += [result.stdout, result.stderr]
    assert not (tmp_path / "o.csv").exists()  # stopped before their first row: no file
    failures = tmp_path / "failures.csv"
    report = run_cli("report", results, "--input", data, "--failures", failures)
    seen += [report.stdout, report.stderr, results.read_text(), failures.read_text()]
    everything = "\n".join(seen)
    assert SECRET not in everything
    assert "debug" in everything and "retrying" in everything  # the debug paths did run
    assert any(json.loads(line).get("level") == "debug" for line in seen[1].splitlines()
               if line.startswith("{"))
    assert {r["status"] for r in read_results(results).values()} <= {"posted", "failed",
                                                                       "unknown"}
    assert read_results_log(results)


def test_tracebacks_in_json_logs_carry_no_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    logs.register_secret(SECRET)
    before = structlog.get_config()
    logs.configure("json", "debug", stream=sys.stdout)
    try:
        log = structlog.get_logger("test")
        headers = {"x-LSQ-SecretKey": SECRET}  # a local that a traceback with locals shows
        try:
            raise RuntimeError(f"request failed with headers {headers}")
        except RuntimeError:
            log.exception("boom", secret=SECRET)
        out = capsys.readouterr().out
    finally:
        structlog.configure(**before)  # not capsys's stream: it closes after this test
    event = json.loads(out.strip().splitlines()[-1])
    assert "RuntimeError" in event["exception"] and "***" in event["exception"]
    assert SECRET not in out


@pytest.mark.e2e
def test_tls_certificates_are_verified(tmp_path: Path, serve_handler: Any) -> None:
    """A server with a self-signed certificate gets no activity: verification stays on."""
    import shutil
    import ssl

    from aiohttp import web

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    received: list[str] = []

    async def create(request: web.Request) -> web.Response:
        received.append(request.path)
        return web.json_response({"Status": "Success", "Message": {"Id": "x"}})

    url = serve_handler(create, ssl_context=context)
    data, mapping = _inputs(tmp_path, 2)
    result = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     "--host", url, "--max-attempts", "1", "--rate", "100/1s")
    assert result.code == 3 and result.summary["posted"] == 0
    assert received == []
    assert "certificate" in result.summary["aborted"].lower()


# -- the results file and the history as files ---------------------------------------------
def _load(data: Path, mapping: Path, results: Path, server: Any, *extra: str) -> Any:
    return run_cli("run", data, "--mapping", mapping, "--results", results, "--host",
                   server.url, "--rate", "100/1s", "--log-format", "json", *extra)


@pytest.mark.e2e
def test_keys_holding_line_breaks_resume_the_same_input(tmp_path: Path,
                                                        make_sandbox: Any) -> None:
    """A key in a quoted cell may hold a line break: the results file keeps it exactly (on
    one line), so the same command run again is the same input, and sends nothing."""
    server = make_sandbox()
    data, mapping = _inputs(tmp_path, 8)
    with open(data, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    for n, row in enumerate(rows, start=1):
        row[0] = f"K{n}\nline 2" if n % 2 else f"K{n}\r\nx"
    write_csv(data, ["key", "lead", "note"], rows)
    results = tmp_path / "r.csv"
    # Without a history: the results file alone must tell this input from another.
    first = _load(data, mapping, results, server, "--create-again")
    assert first.code == 0, first.stderr
    lines = results.read_bytes().splitlines()
    assert len(lines) == 1 + 8  # one physical line a row
    again = _load(data, mapping, results, server, "--create-again")
    assert again.code == 0, again.stderr
    assert again.summary["posted"] == 0 and again.summary["skipped"] == 8
    assert server.stats()["created"] == 8
    assert sorted(r["key"] for r in read_results(results).values()) == \
        sorted(f"%%{row[0]}".replace("\r", "%0D").replace("\n", "%0A") for row in rows)


@pytest.mark.e2e
def test_a_results_file_through_a_symbolic_link_stays_one_file(tmp_path: Path,
                                                               make_sandbox: Any) -> None:
    """Compaction rewrites the file the link points to; the link stays a link, so runs
    through the link and through its target read the same file."""
    server = make_sandbox()
    data, mapping = _inputs(tmp_path, 40)
    target = tmp_path / "kept" / "results.csv"
    target.parent.mkdir()
    link = tmp_path / "r.csv"
    link.symlink_to(target)
    first = _load(data, mapping, link, server, "--create-again")
    assert first.code == 0, first.stderr
    assert link.is_symlink() and link.resolve() == target
    assert len(read_results(target)) == 40
    again = _load(data, mapping, target, server, "--create-again")
    assert again.code == 0 and again.summary["posted"] == 0, again.stderr
    assert server.stats()["created"] == 40


@pytest.mark.e2e
def test_a_damaged_line_is_refused_and_a_torn_last_line_is_looked_up(
        tmp_path: Path, make_sandbox: Any) -> None:
    """A line that does not read back may describe a posted row: the run refuses the file,
    naming the line, and sends nothing. A torn last line (a kill while appending) is cut
    off and its row looked up, never sent blind."""
    server = make_sandbox()
    data, mapping = _inputs(tmp_path, 11)
    results = tmp_path / "r.csv"
    assert _load(data, mapping, results, server, "--create-again").code == 0
    guard = results.with_name("r.csv.learnt.json")
    first_guard = guard.read_bytes()  # the size the first run left the file at
    data, mapping = _inputs(tmp_path, 12)
    assert _load(data, mapping, results, server, "--create-again").code == 0
    whole = results.read_bytes()
    lines = whole.splitlines(keepends=True)
    for damaged in (lines[3].replace(b",posted,", b",POSTED,"),
                    lines[3].replace(b",posted,", b",done,"),
                    b"three" + lines[3][1:]):
        results.write_bytes(b"".join([*lines[:3], damaged, *lines[4:]]))
        refused = _load(data, mapping, results, server, "--create-again")
        assert refused.code == 2, refused.stderr
        assert f"{results}, line 4: " in refused.stderr and "Nothing was sent" in refused.stderr
        report = run_cli("report", results)
        assert "damaged line 4:" in report.stdout, report.stderr
    assert server.stats()["created"] == 12
    # Row 12's line torn: the second run killed as it appended it, before it compacted the
    # file (so the size guard is still the first run's). The row is looked up, found, and
    # not created again.
    results.write_bytes(b"".join(lines[:-1]) + lines[-1][:12])
    guard.write_bytes(first_guard)
    resumed = _load(data, mapping, results, server, "--create-again")
    assert resumed.code == 0, resumed.stderr
    assert resumed.summary["reconciled"] == 1 and resumed.summary["found_posted"] == 1
    assert '"event": "results.torn_line"' in resumed.stderr and '"row": 12' in resumed.stderr
    assert server.stats()["created"] == 12
    assert sorted(_keys(server)) == [f"K{n:04d}" for n in range(1, 13)]


@pytest.mark.e2e
def test_a_results_file_cut_short_at_a_line_break_is_refused(tmp_path: Path,
                                                             make_sandbox: Any) -> None:
    """A compacted file cut at a line break has no damaged line: its lost rows would be sent
    again (with --create-again nothing else knows them). The size the run left it at, kept
    beside it, tells: the file is refused, nothing sent."""
    server = make_sandbox()
    data, mapping = _inputs(tmp_path, 40)
    results = tmp_path / "r.csv"
    assert _load(data, mapping, results, server, "--create-again").code == 0
    whole = results.read_bytes()
    lines = whole.splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:11]))  # a copy that stopped after row 10
    refused = _load(data, mapping, results, server, "--create-again")
    assert refused.code == 2, refused.stderr
    assert f"{results}: the results file is shorter ({len(b''.join(lines[:11])):,} bytes) " \
        f"than the last run left it ({len(whole):,} bytes" in refused.stderr
    assert server.stats()["created"] == 40
    results.write_bytes(b"")  # emptied, not removed: refused the same
    emptied = _load(data, mapping, results, server, "--create-again")
    assert emptied.code == 2 and "the results file is shorter (0 bytes)" in emptied.stderr
    results.write_bytes(whole)  # restored: the run goes on, sending nothing
    again = _load(data, mapping, results, server, "--create-again")
    assert again.code == 0 and server.stats()["created"] == 40
    # A new results file of that name starts afresh; the guard does not follow it.
    results.unlink()
    fresh = _load(data, mapping, results, server, "--dry-run")
    assert fresh.code == 0, fresh.stderr


@pytest.mark.e2e
def test_a_rewritten_results_file_keeps_its_mode_and_new_files_are_private(
        tmp_path: Path, make_sandbox: Any, account_data: Path) -> None:
    server = make_sandbox()
    data, mapping = _inputs(tmp_path, 4)
    results = tmp_path / "r.csv"
    old = os.umask(0o022)
    try:
        assert _load(data, mapping, results, server).code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(results.stat().st_mode) == 0o600
    histories = list((account_data / "accounts").glob("*.sqlite"))
    assert histories and stat.S_IMODE(histories[0].stat().st_mode) == 0o600
    results.chmod(0o640)
    assert _load(data, mapping, results, server).code == 0
    assert stat.S_IMODE(results.stat().st_mode) == 0o640


_HOLDER = """
import sys, time
from bulkpost.storage.history.database import History
from bulkpost.storage.results import ResultsLog
opened = (ResultsLog if sys.argv[1] == "results" else History)(sys.argv[2]).open()
print("open", flush=True)
sys.stdin.readline()
opened.close()
"""


@pytest.mark.parametrize("kind", ["results", "history"])
def test_a_hard_link_does_not_get_around_the_lock(tmp_path: Path, kind: str) -> None:
    """The lock is the file's, not its name's: a second run through a hard link to a
    results file (or history) in use is refused, naming the process that holds it."""
    name = "r.csv" if kind == "results" else "h.sqlite"
    first, second = tmp_path / "a" / name, tmp_path / "b" / name
    first.parent.mkdir()
    second.parent.mkdir()
    opened = (ResultsLog if kind == "results" else History)(first).open()
    opened.close()
    os.link(first, second)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, kind, str(first)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        error = ResultsLocked if kind == "results" else HistoryLocked
        with pytest.raises(error, match=f"another bulkpost run is using this .* under another "
                                        f"name \\(a hard link to the same file; pid {holder.pid}"):
            (ResultsLog if kind == "results" else History)(second).open()
    finally:
        holder.communicate("\n", timeout=60)
    (ResultsLog if kind == "results" else History)(second).open().close()  # released


def test_the_lock_does_not_lapse_when_compaction_replaces_the_file(tmp_path: Path) -> None:
    """Compaction puts a new file under the name: it is locked before it gets there."""
    path = tmp_path / "r.csv"
    log = ResultsLog(path).open()
    log.record(RowOutcome(1, "k", Status.POSTED, activity_id="a"))
    log.compact()
    with open(path, "rb") as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    log.close()
    with open(path, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_results_file_with_other_hard_links_is_not_replaced(tmp_path: Path) -> None:
    """A replacement would cut the other names off, each to go on alone: it stays a log."""
    path, other = tmp_path / "r.csv", tmp_path / "also.csv"
    log = ResultsLog(path).open()
    log.record(RowOutcome(1, "k", Status.UNKNOWN))
    log.record(RowOutcome(1, "k", Status.POSTED, activity_id="a"))
    os.link(path, other)
    log.compact()
    log.close()
    assert os.path.samefile(path, other)
    assert [o.status for o in read_outcomes(other)] == [Status.UNKNOWN, Status.POSTED]


def test_files_are_created_private_and_keep_their_mode_when_rewritten(tmp_path: Path) -> None:
    """Results files and the history hold keys, lead ids and notes: created readable by
    their owner only, whatever the umask; a mode the owner chose survives compaction."""
    old = os.umask(0o022)
    try:
        log = ResultsLog(tmp_path / "r.csv").open()
        log.close()
        History(tmp_path / "h.sqlite").open().close()
        History(tmp_path / "unlocked.sqlite").open(lock=False).close()
    finally:
        os.umask(old)
    for name in ("r.csv", "h.sqlite", "unlocked.sqlite"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    (tmp_path / "r.csv").chmod(0o640)
    log = ResultsLog(tmp_path / "r.csv").open()
    log.record(RowOutcome(1, "k", Status.POSTED, activity_id="a"))
    log.compact()
    log.close()
    assert stat.S_IMODE((tmp_path / "r.csv").stat().st_mode) == 0o640
