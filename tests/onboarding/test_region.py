"""The keys' regional host, found without --host: sandboxes on loopback stand in for regions.

Every documented host of a test is mapped to a loopback URL (a sandbox, or a port nothing
listens on), so no test ever reaches the real API: a sandbox plays a region
(``Sandbox(region=..., home_region=...)``) and answers 401 everywhere but at the keys' home.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bulkpost.core.credentials import Credentials
from bulkpost.core.hosts import REGIONS, named_host
from bulkpost.errors import UsageError
from bulkpost.onboarding.region import (
    URLS_ENV,
    HostCache,
    api_host,
    choose_host,
    find_host,
    host_again,
    region_urls,
)
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from tests.conftest import KEYED_MAPPING, SandboxServer, read_results, run_cli, write_csv

SINGAPORE, US, MUMBAI = "api.leadsquared.com", "api-us11.leadsquared.com", \
    "api-in21.leadsquared.com"
KEYS = Credentials(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)


def _nothing_listens() -> str:
    """A loopback URL whose port nothing listens on (a region that is not reached)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _regions(served: dict[str, SandboxServer] | None = None) -> dict[str, str]:
    """Every documented host mapped to loopback: the sandboxes standing in for some, a port
    nothing listens on for the rest."""
    urls = {name: _nothing_listens() for name in REGIONS}
    urls.update({name: server.url for name, server in (served or {}).items()})
    return urls


# -- reading answers ---------------------------------------------------------------------------
@pytest.mark.parametrize(("document", "host"), [
    ({"TimeZone": "Asia/Kolkata", "LSQCommonServiceURLs": {"api": MUMBAI, "app": "x"}}, MUMBAI),
    ({"LSQCommonServiceURLs": {"api": "https://API-IN21.leadsquared.com/"}}, MUMBAI),
    ({"d": {"LSQCommonServiceURLs": {"api": US}}}, US),
    ([{"lsqcommonserviceurls": {"API": SINGAPORE}}], SINGAPORE),
    ({"LSQCommonServiceURLs": {"api": "api-xx99.leadsquared.com"}}, "api-xx99.leadsquared.com"),
    ({"LSQCommonServiceURLs": {"app": "app.leadsquared.com"}}, None),
    ({"LSQCommonServiceURLs": {"api": "  "}}, None),
    ({"LSQCommonServiceURLs": "api-in21.leadsquared.com"}, None),
    ({"FirstName": "A"}, None),
    ("api-in21.leadsquared.com", None),
    (None, None),
])
def test_the_answer_s_api_host_is_read_tolerantly(document: Any, host: str | None) -> None:
    assert api_host(document) == host


@pytest.mark.parametrize(("text", "host"), [
    ('{"ExceptionMessage": "use https://api-in21.leadsquared.com instead"}', MUMBAI),
    ("wrong region; your account is on API-CA12.LEADSQUARED.COM.", "api-ca12.leadsquared.com"),
    ("see app.leadsquared.com, then api-ir31.leadsquared.com", "api-ir31.leadsquared.com"),
    ("the account is on api-xx99.leadsquared.com", None),  # not a documented host
    ("Invalid access key or secret key", None),
])
def test_a_refusal_names_a_documented_host_or_none(text: str, host: str | None) -> None:
    assert named_host(text) == host


def test_stand_ins_are_documented_names_on_loopback_only() -> None:
    assert region_urls({URLS_ENV: json.dumps({MUMBAI: "http://127.0.0.1:9000/"})}) == {
        MUMBAI: "http://127.0.0.1:9000"}
    assert region_urls({}) == {}
    for given, message in ((json.dumps({"api.example.com": "http://127.0.0.1:1"}),
                            "not a documented regional host"),
                           (json.dumps({MUMBAI: "https://example.com"}), "loopback URL only"),
                           ("[1]", "expected a JSON object"), ("{", "expected a JSON object")):
        with pytest.raises(UsageError, match=message):
            region_urls({URLS_ENV: given})


# -- the cache ---------------------------------------------------------------------------------
def test_the_cache_is_keyed_by_a_hash_and_holds_no_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = HostCache.default()
    assert cache is not None and cache.path == tmp_path / "bulkpost" / "hosts.json"
    cache.put(DEFAULT_ACCESS_KEY, MUMBAI)
    cache.put("another-access-key", US)
    text = cache.path.read_text()
    assert DEFAULT_ACCESS_KEY not in text and DEFAULT_SECRET_KEY not in text
    assert json.loads(text)["hosts"][HostCache.key_of(DEFAULT_ACCESS_KEY)]["host"] == MUMBAI
    assert (cache.get(DEFAULT_ACCESS_KEY), cache.get("another-access-key")) == (MUMBAI, US)
    assert cache.path.stat().st_mode & 0o077 == 0  # the owner's only
    cache.drop(DEFAULT_ACCESS_KEY)
    assert (cache.get(DEFAULT_ACCESS_KEY), cache.get("another-access-key")) == (None, US)


def test_a_relative_xdg_cache_home_is_ignored_and_a_bad_file_is_an_empty_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    cache = HostCache.default()
    assert cache is not None and cache.path == tmp_path / ".cache" / "bulkpost" / "hosts.json"
    cache.path.parent.mkdir(parents=True)
    for text in ("not json", "[]", '{"version": 99, "hosts": {}}',
                 json.dumps({"version": 1, "hosts": {
                     HostCache.key_of(DEFAULT_ACCESS_KEY): {"host": "evil.example.com"}}})):
        cache.path.write_text(text)
        assert cache.get(DEFAULT_ACCESS_KEY) is None  # only a documented host is taken


# -- finding the host --------------------------------------------------------------------------
async def test_found_on_the_first_host(make_sandbox: Any) -> None:
    singapore = make_sandbox()  # plays api.leadsquared.com, the keys' home, by default
    assert await find_host(KEYS, urls=_regions({SINGAPORE: singapore})) == SINGAPORE
    assert singapore.stats()["calls"] == 1


async def test_found_after_a_401_that_names_the_home(make_sandbox: Any) -> None:
    singapore = make_sandbox(region=SINGAPORE, home_region=MUMBAI)
    mumbai = make_sandbox(region=MUMBAI)
    us = make_sandbox(region=US, home_region=MUMBAI)
    urls = _regions({SINGAPORE: singapore, MUMBAI: mumbai, US: us})
    assert await find_host(KEYS, urls=urls) == MUMBAI
    # Singapore's refusal named Mumbai: asked next, before the US.
    assert (singapore.stats()["unauthorized"], mumbai.stats()["calls"], us.stats()["calls"]) \
        == (1, 1, 0)


async def test_found_by_trying_the_hosts_in_turn_when_the_401_names_nothing(
        make_sandbox: Any) -> None:
    singapore = make_sandbox(region=SINGAPORE, home_region=MUMBAI, region_hint=False)
    us = make_sandbox(region=US, home_region=MUMBAI, region_hint=False)
    mumbai = make_sandbox(region=MUMBAI)
    urls = _regions({SINGAPORE: singapore, US: us, MUMBAI: mumbai})
    assert await find_host(KEYS, urls=urls) == MUMBAI
    assert [s.stats()["calls"] for s in (singapore, us, mumbai)] == [1, 1, 1]


async def test_the_host_the_answer_names_is_taken_from_whichever_host_answers(
        make_sandbox: Any) -> None:
    # Singapore answers for an account it says is on api-us11: no call goes to the US.
    singapore = make_sandbox(region=US)
    us = make_sandbox(region=US)
    urls = _regions({SINGAPORE: singapore, US: us})
    assert await find_host(KEYS, urls=urls) == US
    assert us.stats()["calls"] == 0


async def test_an_undocumented_host_named_by_the_answer_is_not_used(make_sandbox: Any) -> None:
    odd = make_sandbox(region="api-xx99.leadsquared.com")
    with pytest.raises(UsageError, match=re.escape(
            "api-xx99.leadsquared.com, which is not one of LeadSquared's documented API "
            "hosts")) as raised:
        await find_host(KEYS, urls=_regions({SINGAPORE: odd}))
    assert "--host" in str(raised.value)


async def test_an_answer_that_names_no_host_fails_closed(serve_handler: Any) -> None:
    async def user(_request: web.Request) -> web.Response:
        return web.json_response({"FirstName": "A", "TimeZone": "UTC"})

    urls = {**_regions(), SINGAPORE: serve_handler(user)}
    with pytest.raises(UsageError, match=re.escape(
            "api.leadsquared.com accepted the keys, but its answer names no API host")):
        await find_host(KEYS, urls=urls)


async def test_no_host_accepts_the_keys_a_clear_error_without_the_keys(
        make_sandbox: Any) -> None:
    elsewhere = make_sandbox(region=SINGAPORE, home_region=MUMBAI, region_hint=False)
    urls = dict.fromkeys(REGIONS, elsewhere.url)
    urls[MUMBAI] = _nothing_listens()
    with pytest.raises(UsageError) as raised:
        await find_host(KEYS, urls=urls)
    message = str(raised.value)
    assert message.startswith(f"no LeadSquared region accepted the keys (tried "
                              f"{', '.join(REGIONS)}")
    assert f"not answered: {MUMBAI}: cannot connect" in message
    assert "the keys may be wrong" in message and "--host" in message
    assert DEFAULT_ACCESS_KEY not in message and DEFAULT_SECRET_KEY not in message
    assert raised.value.exit_code == 2
    assert elsewhere.stats()["calls"] == len(REGIONS) - 1


async def test_a_cached_host_is_used_without_a_request(tmp_path: Path,
                                                       make_sandbox: Any) -> None:
    singapore = make_sandbox(region=SINGAPORE, home_region=MUMBAI)
    mumbai = make_sandbox(region=MUMBAI)
    urls = _regions({SINGAPORE: singapore, MUMBAI: mumbai})
    cache = HostCache(tmp_path / "hosts.json")
    assert await find_host(KEYS, urls=urls, cache=cache) == MUMBAI
    calls = singapore.stats()["calls"] + mumbai.stats()["calls"]
    assert await find_host(KEYS, urls=urls, cache=cache) == MUMBAI
    assert singapore.stats()["calls"] + mumbai.stats()["calls"] == calls == 2
    assert cache.get(DEFAULT_ACCESS_KEY) == MUMBAI


def test_a_cached_host_that_refuses_the_keys_is_dropped_and_found_again(
        tmp_path: Path, make_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The account moved (or the cache is stale): Singapore now refuses, naming Mumbai.
    singapore = make_sandbox(region=SINGAPORE, home_region=MUMBAI)
    mumbai = make_sandbox(region=MUMBAI)
    urls = _regions({SINGAPORE: singapore, MUMBAI: mumbai})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(URLS_ENV, json.dumps(urls))
    cache = HostCache.default()
    assert cache is not None
    cache.put(DEFAULT_ACCESS_KEY, SINGAPORE)
    choice = choose_host("", KEYS)
    assert (choice.url, choice.name, choice.cached) == (singapore.url, SINGAPORE, True)
    assert singapore.stats()["calls"] == 0  # the cache answered
    assert host_again(choice, KEYS) == mumbai.url  # the command's call was refused
    assert cache.get(DEFAULT_ACCESS_KEY) == MUMBAI
    # A host that still takes the keys (the failure was something else) is kept; so is a
    # host given with --host, which is never questioned.
    again = choose_host("", KEYS)
    assert (again.url, again.cached) == (mumbai.url, True)
    calls = mumbai.stats()["calls"]
    assert host_again(again, KEYS) is None
    assert mumbai.stats()["calls"] == calls + 1 and cache.get(DEFAULT_ACCESS_KEY) == MUMBAI
    assert host_again(choose_host(singapore.url, KEYS), KEYS) is None
    assert choose_host(singapore.url, KEYS).url == singapore.url


# -- the command line --------------------------------------------------------------------------
def _inputs(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    leads = ["3c6ef372-fe94-4f3a-a54f-f53a5f1d36f1", "9e3779b9-7f4a-4c15-b39c-c0605cedc834"]
    data = write_csv(tmp_path / "in.csv", ["key", "lead", "note", "when", "value"],
                     [[f"K{n:03d}", leads[n % 2], f"note {n}", "2024-02-01 10:00", str(n)]
                      for n in range(1, rows + 1)])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(KEYED_MAPPING)
    return data, mapping


def _events(stderr: str, key: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == key]


@pytest.mark.e2e
def test_a_run_without_host_finds_the_region_and_posts(tmp_path: Path,
                                                        make_sandbox: Any) -> None:
    singapore = make_sandbox(region=SINGAPORE, home_region=MUMBAI)
    mumbai = make_sandbox(region=MUMBAI)
    urls = _regions({SINGAPORE: singapore, MUMBAI: mumbai})
    data, mapping = _inputs(tmp_path, 5)
    env = {URLS_ENV: json.dumps(urls), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                   "--rate", "100/1s", "--log-format", "json", **env)
    assert done.code == 0, done.stderr
    assert done.summary["posted"] == 5 and len(mumbai.ledger()) == 5
    assert singapore.stats()["created"] == 0
    redirected, = _events(done.stderr, "region.redirected")
    assert (redirected["refused_by"], redirected["home"]) == (SINGAPORE, MUMBAI)
    found, = _events(done.stderr, "region.host")
    assert (found["host"], found["from_cache"]) == (MUMBAI, False)
    cached = (tmp_path / "cache" / "bulkpost" / "hosts.json").read_text()
    assert MUMBAI in cached and DEFAULT_ACCESS_KEY not in cached
    # Again: the host comes from the cache, and Singapore is not asked.
    calls = singapore.stats()["calls"]
    again = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                    "--rate", "100/1s", "--log-format", "json", **env)
    assert again.code == 0 and again.summary["skipped"] == 5
    found, = _events(again.stderr, "region.host")
    assert (found["host"], found["from_cache"]) == (MUMBAI, True)
    assert singapore.stats()["calls"] == calls
    # A dry run asks no host, but uses the one cached: it reads the schemas from Mumbai.
    reads = mumbai.stats()["calls"]
    dry = run_cli("validate", data, "--mapping", mapping, "--results", tmp_path / "d.csv",
                  "--log-format", "json", **env)
    assert dry.code == 0, dry.stderr
    found, = _events(dry.stderr, "region.host")
    assert (found["host"], found["from_cache"]) == (MUMBAI, True)
    assert mumbai.stats()["calls"] > reads and singapore.stats()["calls"] == calls


@pytest.mark.e2e
def test_a_run_whose_cached_host_refuses_finds_the_host_again_and_posts(
        tmp_path: Path, make_sandbox: Any) -> None:
    singapore = make_sandbox(region=SINGAPORE, home_region=MUMBAI, region_hint=False)
    us = make_sandbox(region=US, home_region=MUMBAI, region_hint=False)
    mumbai = make_sandbox(region=MUMBAI)
    urls = _regions({SINGAPORE: singapore, US: us, MUMBAI: mumbai})
    HostCache(tmp_path / "cache" / "bulkpost" / "hosts.json").put(DEFAULT_ACCESS_KEY, US)
    data, mapping = _inputs(tmp_path, 3)
    results = tmp_path / "r.csv"
    done = run_cli("run", data, "--mapping", mapping, "--results", results, "--rate", "100/1s",
                   "--log-format", "json", **{URLS_ENV: json.dumps(urls),
                                              "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert done.code == 0, done.stderr
    assert done.summary["posted"] == 3 and len(mumbai.ledger()) == 3
    dropped, = _events(done.stderr, "region.cache_dropped")
    assert dropped["host"] == US
    hosts = [(e["host"], e["from_cache"]) for e in _events(done.stderr, "region.host")]
    assert hosts == [(US, True), (MUMBAI, False)]
    assert [r["status"] for r in read_results(results).values()] == ["posted"] * 3


@pytest.mark.e2e
def test_the_sandbox_command_plays_regions(tmp_path: Path) -> None:
    from tests.conftest import SandboxProcess

    with SandboxProcess("--region", MUMBAI) as (home, _), \
            SandboxProcess("--home-region", MUMBAI, "--no-region-hint") as (elsewhere, _):
        urls = {**dict.fromkeys(REGIONS, json.loads(elsewhere)["sandbox"]),
                MUMBAI: json.loads(home)["sandbox"]}
        done = run_cli("types", "--json", **{URLS_ENV: json.dumps(urls),
                                             "XDG_CACHE_HOME": str(tmp_path)})
        assert done.code == 0, done.stderr
        assert json.loads(done.stdout)["host"] == urls[MUMBAI]
        # Singapore and the US said nothing of the home: both were asked before Mumbai.
        assert not _events(done.stderr, "region.redirected")
        found, = _events(done.stderr, "region.host")
        assert (found["host"], found["from_cache"]) == (MUMBAI, False)


async def test_no_host_reached_says_so_rather_than_blame_the_keys() -> None:
    with pytest.raises(UsageError) as raised:
        await find_host(KEYS, urls=_regions())
    message = str(raised.value)
    assert message.startswith("no LeadSquared region could be asked for the keys' host; "
                              "not answered: api.leadsquared.com: cannot connect")
    assert "is the network up?" in message and "keys may be wrong" not in message
