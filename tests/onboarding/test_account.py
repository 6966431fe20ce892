"""The account a command works on: the keys as given, checked and named as the caller gave
them, and the host, with the cached host that now refuses the keys found again, once.

Sandboxes on loopback stand in for the regions, as in test_region.py: no test reaches the
real API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.credentials import Credentials
from bulkpost.errors import AbortRun, UsageError
from bulkpost.onboarding.account import Account, GivenKeys, account_for, python_host_and_keys
from bulkpost.onboarding.region import URLS_ENV, HostCache
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from tests.onboarding.test_region import MUMBAI, SINGAPORE, _regions

GIVEN = GivenKeys(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)


def test_the_environment_s_keys_are_named_by_their_variables() -> None:
    keys = GivenKeys.from_environment({"LSQ_ACCESS_KEY": " a ", "LSQ_SECRET_KEY": "s\rs"})
    assert keys.complete and keys.names == ("LSQ_ACCESS_KEY", "LSQ_SECRET_KEY")
    assert "s\rs" not in repr(keys)  # the secret is never shown
    with pytest.raises(UsageError, match=r"^LSQ_SECRET_KEY contains a space or control"):
        keys.checked()
    with pytest.raises(UsageError, match=r"^set LSQ_ACCESS_KEY in the environment"):
        GivenKeys.from_environment({"LSQ_SECRET_KEY": "s"}).checked()


def test_the_python_api_s_keys_default_to_the_environment_and_are_named_as_keywords() -> None:
    environ = {"LSQ_ACCESS_KEY": "env-a", "LSQ_SECRET_KEY": "env-s", "LSQ_HOST": "h.example"}
    keys = GivenKeys.from_arguments(" a ", None, environ)
    assert (keys.access, keys.secret, keys.names) == ("a", "env-s",
                                                       ("access_key=", "secret_key="))
    assert keys.checked() == Credentials("a", "env-s")
    # A host given, or the environment's, is checked; left out, a real run finds it later.
    assert python_host_and_keys(None, keys, dry_run=False, environ=environ) == (
        "https://h.example", Credentials("a", "env-s"))
    assert python_host_and_keys("", keys, dry_run=False, environ=environ) == (
        "", Credentials("a", "env-s"))
    # A dry run takes the keys only with a host: without one it asks no region.
    assert python_host_and_keys("", keys, dry_run=True, environ=environ) == ("", None)
    assert python_host_and_keys(None, GivenKeys("", ""), dry_run=True,
                                environ=environ) == ("", None)


@pytest.mark.parametrize(("access", "secret", "message"), [
    ("", "", "a real run needs access_key= (or LSQ_ACCESS_KEY) and secret_key= (or "
             "LSQ_SECRET_KEY); dry_run=True sends nothing"),
    ("a", "  ", "a real run needs secret_key= (or LSQ_SECRET_KEY); dry_run=True sends nothing"),
])
def test_a_real_python_run_without_both_keys_is_refused_naming_what_is_missing(
        access: str, secret: str, message: str) -> None:
    keys = GivenKeys.from_arguments(access, secret, {})
    with pytest.raises(UsageError) as refused:
        python_host_and_keys("http://127.0.0.1:9", keys, dry_run=False, environ={})
    assert str(refused.value) == message


def test_a_command_s_host_is_checked_before_its_keys() -> None:
    with pytest.raises(UsageError, match=r"https:// is required"):
        account_for("http://api.leadsquared.com", GivenKeys("", ""))
    with pytest.raises(UsageError, match=r"^set LSQ_ACCESS_KEY in the environment"):
        account_for("http://127.0.0.1:9", GivenKeys("", "s"))
    given = account_for("127.0.0.1:9", GIVEN)  # a bare name means https://, asked of no one
    assert (given.url, given.host.cached) == ("https://127.0.0.1:9", False)
    assert given.credentials == Credentials(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)


def _cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_sandbox: Any,
            host: str) -> dict[str, Any]:
    """Singapore refusing the keys (naming Mumbai), Mumbai their home, ``host`` cached."""
    singapore = make_sandbox(region=SINGAPORE, home_region=MUMBAI)
    mumbai = make_sandbox(region=MUMBAI)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(URLS_ENV, json.dumps(_regions({SINGAPORE: singapore,
                                                      MUMBAI: mumbai})))
    cache = HostCache.default()
    assert cache is not None
    cache.put(DEFAULT_ACCESS_KEY, host)
    return {"singapore": singapore, "mumbai": mumbai, "cache": cache}


def test_a_failure_on_a_cached_host_that_refuses_the_keys_is_made_again_on_the_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_sandbox: Any) -> None:
    hosts = _cached(tmp_path, monkeypatch, make_sandbox, SINGAPORE)
    account = account_for("", GIVEN)
    assert (account.url, account.host.cached) == (hosts["singapore"].url, True)
    tried: list[str] = []

    def attempt(on: Account) -> str:
        tried.append(on.url)
        if on.url == hosts["singapore"].url:
            raise AbortRun("the API refused the keys (401)")
        return "read"

    assert account.retried(attempt) == "read"
    assert tried == [hosts["singapore"].url, hosts["mumbai"].url]
    assert hosts["cache"].get(DEFAULT_ACCESS_KEY) == MUMBAI
    # A result that says it failed is made again the same way.
    hosts["cache"].put(DEFAULT_ACCESS_KEY, SINGAPORE)
    results = account_for("", GIVEN).retried(
        lambda on: on.url, failed=lambda url: url == hosts["singapore"].url)
    assert results == hosts["mumbai"].url


def test_a_failure_for_another_reason_stands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             make_sandbox: Any) -> None:
    hosts = _cached(tmp_path, monkeypatch, make_sandbox, MUMBAI)  # the right host, cached
    account = account_for("", GIVEN)
    tried: list[str] = []

    def attempt(on: Account) -> str:
        tried.append(on.url)
        raise AbortRun("the network is down")

    with pytest.raises(AbortRun, match="the network is down"):
        account.retried(attempt)
    assert tried == [hosts["mumbai"].url]  # asked once whether it refuses: it does not
    assert hosts["cache"].get(DEFAULT_ACCESS_KEY) == MUMBAI
    # A host given is never questioned: its failure stands without a question.
    given = account_for(hosts["singapore"].url, GIVEN)
    calls = hosts["singapore"].stats()["calls"]
    assert given.retried(lambda on: on.url, failed=lambda _url: True) == hosts["singapore"].url
    assert hosts["singapore"].stats()["calls"] == calls
