"""A host that cannot be reached: one plain line naming it, at once, not after 16 s of retries.

Real sockets only: a loopback port bound with nothing listening (refused), a name that never
resolves (``.invalid``, RFC 6761), and ``https://`` spoken to the sandbox's plain HTTP. Once
the host has answered, the same failure is a passing one: retried, never fatal.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import bulkpost
from bulkpost.core.credentials import Credentials
from bulkpost.core.response import Verdict, unreachable
from bulkpost.delivery.client import MAX_ANSWER_BYTES, LeadSquaredClient, cannot_connect
from tests.conftest import SECRET, CliResult, read_results, run_cli, write_csv

MAPPING = """
[activity]
event = 201
lead_id_column = "lead"
key_column = "key"

[fields]
mx_Custom_1 = "key"
"""
LEADS = ["3f2504e0-4f89-41d3-9a0c-0305e82c3301", "3f2504e0-4f89-41d3-9a0c-0305e82c3302",
         "3f2504e0-4f89-41d3-9a0c-0305e82c3303"]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections are refused, and no other
    process can take the port while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _input(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "in.csv", ["key", "lead"],
                     [[f"K{n}", lead] for n, lead in enumerate(LEADS)])


def _run(tmp_path: Path, host: str, *extra: str) -> CliResult:
    data = _input(tmp_path)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    return run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                   "--host", host, "--log-format", "json", *extra)


def _aborted(result: CliResult) -> str:
    """The one line that says why the run stopped."""
    lines = [line for line in result.stderr.splitlines()
             if line.startswith("bulkpost: aborted: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.e2e
@pytest.mark.parametrize("first_call", ["preflight", "first post"])
def test_a_port_with_nothing_listening_stops_the_run_at_once(
        tmp_path: Path, closed_port: int, first_call: str) -> None:
    host = f"http://127.0.0.1:{closed_port}"
    extra = ("--no-preflight",) if first_call == "first post" else ()
    result = _run(tmp_path, host, *extra)
    assert result.code == 3
    assert _aborted(result) == (f"bulkpost: aborted: cannot connect to {host}: connection "
                                "refused — is the host right?")
    # One call, not five attempts backed off over 16 s (34 s without the preflight).
    assert result.summary["calls"] == 1 and result.summary["elapsed_s"] < 5
    if first_call == "first post":
        # It was never sent, and is recorded so: not unknown (nothing to look up).
        rows = read_results(tmp_path / "r.csv")
        assert [r["status"] for r in rows.values()] == ["failed"]
        assert result.summary["pending"] == 2


@pytest.mark.e2e
def test_a_name_that_does_not_resolve_stops_the_run_at_once(tmp_path: Path) -> None:
    result = _run(tmp_path, "https://nonexistent.invalid")
    assert result.code == 3
    line = _aborted(result)
    assert line.startswith("bulkpost: aborted: cannot connect to https://nonexistent.invalid: "
                           "the name nonexistent.invalid ")
    assert "resolve" in line and "is the host right?" in line
    assert result.summary["calls"] == 1  # timing left to the resolver: not asserted


@pytest.mark.e2e
def test_https_to_a_plain_http_server_says_to_use_http(tmp_path: Path,
                                                       make_sandbox: Any) -> None:
    server = make_sandbox()
    plain = server.url  # http://127.0.0.1:PORT
    tls = plain.replace("http://", "https://")
    result = _run(tmp_path, tls)
    assert result.code == 3
    assert _aborted(result) == (f"bulkpost: aborted: the server at {tls} does not speak HTTPS "
                                f"(plain HTTP?) — use {plain}")
    assert result.summary["calls"] == 1 and result.summary["elapsed_s"] < 5
    assert server.stats()["calls"] == 0  # no HTTP request reached it


def test_the_python_api_stops_the_same_way(tmp_path: Path, closed_port: int) -> None:
    host = f"http://127.0.0.1:{closed_port}"
    mapping = {"activity": {"event": 201, "lead_id_column": "lead", "key_column": "key"},
               "fields": {"mx_Custom_1": "key"}}
    summary = bulkpost.run(_input(tmp_path), mapping, tmp_path / "r.csv", host=host,
                           access_key="demo-access-key", secret_key=SECRET)
    assert summary.exit_code == 3 and summary.calls == 1
    assert summary.aborted == f"cannot connect to {host}: connection refused — is the host right?"


async def _serving(handler: Any) -> tuple[str, web.AppRunner]:
    """``handler`` served for every path on loopback: its URL and runner (to clean up)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}", runner


@pytest.fixture
async def answering() -> AsyncIterator[tuple[str, web.AppRunner]]:
    """A server on loopback that answers every call with an empty JSON document and closes
    the connection (so that no kept-alive connection outlives it)."""
    async def handler(_request: web.Request) -> web.Response:
        return web.json_response({}, headers={"Connection": "close"})

    url, runner = await _serving(handler)
    yield url, runner
    await runner.cleanup()


async def test_a_host_that_answered_and_goes_away_is_retried_not_fatal(
        answering: tuple[str, web.AppRunner]) -> None:
    url, runner = answering
    async with LeadSquaredClient(url, Credentials("a-key", "s-key")) as client:
        answered, _ = await client.activity_setting(201)
        assert answered.verdict is Verdict.OK
        await runner.cleanup()  # the port now refuses connections
        for answer in ((await client.activity_setting(201))[0],
                       await client.post_activity(b"[]")):
            assert answer.verdict is Verdict.RETRY
            assert not answer.uncertain  # never connected: certainly not carried out
            assert answer.error == f"cannot connect to {url}: connection refused"


async def test_a_host_never_reached_is_fatal_for_a_post_too(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    async with LeadSquaredClient(url, Credentials("a-key", "s-key")) as client:
        answer = await client.post_activity(b"[]")
        assert answer.verdict is Verdict.FATAL and not answer.uncertain
        assert answer.error == f"cannot connect to {url}: connection refused — is the host right?"
        assert "a-key" not in answer.error and "s-key" not in answer.error


def _ssl_error(reason: str, cls: type[ssl.SSLError] = ssl.SSLError) -> ssl.SSLError:
    error = cls(1, f"[SSL: {reason}] as OpenSSL says it")
    error.reason = reason
    return error


def _expired() -> ssl.SSLError:
    error = _ssl_error("CERTIFICATE_VERIFY_FAILED", ssl.SSLCertVerificationError)
    assert isinstance(error, ssl.SSLCertVerificationError)
    error.verify_message = "certificate has expired"
    return error


@pytest.mark.parametrize(("base", "error", "said"), [
    ("https://localhost", _ssl_error("WRONG_VERSION_NUMBER"),
     "the server at https://localhost does not speak HTTPS (plain HTTP?) — use "
     "http://localhost:443"),
    ("https://api.example:8080", _ssl_error("WRONG_VERSION_NUMBER"),
     "the server at https://api.example:8080 does not speak HTTPS (plain HTTP?) — are the "
     "host and its port right?"),
    ("https://api.example", _expired(),
     "cannot connect to https://api.example: its TLS certificate is not valid (certificate "
     "has expired) — is the host right?"),
    ("https://api.example", _ssl_error("TLSV1_ALERT_PROTOCOL_VERSION"),
     "cannot connect to https://api.example: the TLS handshake failed "
     "(TLSV1_ALERT_PROTOCOL_VERSION) — is the host right?"),
    ("https://api.example", socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name "
                                                              "resolution"),
     "cannot connect to https://api.example: the name api.example cannot be resolved now "
     "(temporary failure in name resolution) — is the network up, and is the host right?"),
    ("https://api.example", OSError(errno.ENETUNREACH, "Network is unreachable"),
     "cannot connect to https://api.example: network is unreachable — is the network up, "
     "and is the host right?"),
])
def test_what_went_wrong_is_said_in_plain_words(base: str, error: OSError, said: str) -> None:
    what, check = cannot_connect(base, error)
    assert unreachable(what, check, answered_before=False).error == said
    passing = unreachable(what, check, answered_before=True)
    assert passing.verdict is Verdict.RETRY and passing.error == what


@pytest.mark.parametrize("streamed", [True, False])
async def test_an_answer_larger_than_any_real_one_is_not_read(streamed: bool) -> None:
    """A broken proxy answering 20 MiB: not read past 16 MiB; a create so answered may have
    been carried out (looked up before any re-send), a look-up is simply retried."""
    megabyte = b"x" * 2**20

    async def handler(request: web.Request) -> web.StreamResponse:
        if not streamed:  # with a Content-Length that says it all
            return web.Response(body=megabyte * 20, content_type="application/json")
        answer = web.StreamResponse()
        answer.content_type = "application/json"
        await answer.prepare(request)
        for _ in range(20):
            await answer.write(megabyte)
        return answer

    url, runner = await _serving(handler)
    try:
        async with LeadSquaredClient(url, Credentials("a-key", "s-key")) as client:
            posted = await client.post_activity(b"{}")
            assert posted.verdict is Verdict.RETRY and posted.uncertain
            assert posted.error == f"an answer of over {MAX_ANSWER_BYTES // 2**20} MiB was not read"
            read, document = await client.activity_setting(201)
            assert read.verdict is Verdict.RETRY and not read.uncertain and document is None
    finally:
        await runner.cleanup()
