"""What must hold when things go badly: a spent quota, a full disk, and never a leaked key."""

from __future__ import annotations

import json
import resource
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import structlog

from bulkpost import logs
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
