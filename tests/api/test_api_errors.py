"""What the Python API says when it is called wrongly: in its own words, before any request.

The same check can refuse a CLI option and an API argument: the message names the setting
the way the caller gave it (``--batch-size 26`` on the command line, ``batch_size=26`` from
Python), which the CLI half of these tests pins down too.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path
from typing import Any

import pytest

import bulkpost
from bulkpost.errors import Given, Setting, UsageError
from tests.conftest import SECRET, run_cli, write_csv

MAPPING = {"activity": {"event": 201, "lead_id_column": "lead"}, "fields": {"mx_Custom_1": "n"}}
LEAD = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("LSQ_HOST", "LSQ_ACCESS_KEY", "LSQ_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    return write_csv(tmp_path / "in.csv", ["lead", "n"], [[LEAD, "1"]])


@pytest.mark.filterwarnings("error")
async def test_run_inside_a_running_loop_says_to_await_run_async(source: Path,
                                                                 tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UsageError, match=r"use `await bulkpost\.run_async\(\.\.\.\)`"):
            bulkpost.run(source, MAPPING, tmp_path / "r.csv", dry_run=True)
        # The running loop is said first, whatever else is wrong with the call.
        with pytest.raises(UsageError, match=r"use `await bulkpost\.run_async\(\.\.\.\)`"):
            bulkpost.run(source, MAPPING, tmp_path / "r.csv", dry_run=True,
                         worker=2)  # type: ignore[call-arg]
        gc.collect()  # a coroutine created and dropped would warn here
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert not (tmp_path / "r.csv").exists()  # refused before anything was opened


@pytest.mark.parametrize(("arguments", "message"), [
    ({"host": "ftp://x", "access_key": "a", "secret_key": "s"},
     "host='ftp://x': expected a host such as api-in21.leadsquared.com or "
     "https://api-in21.leadsquared.com"),
    ({"host": "http://api-in21.leadsquared.com", "access_key": "a", "secret_key": "s"},
     "host='http://api-in21.leadsquared.com': https:// is required (http:// only for "
     "loopback)"),
    ({"host": "https://x.example/?a=1", "access_key": "a", "secret_key": "s"},
     "host='https://x.example/?a=1': give the host only, no query string"),
    ({"dry_run": True, "batch_size": 26},
     "batch_size=26: a bulk call takes 1 to 25 activities"),
    ({"dry_run": True, "mode": "fast"}, "mode='fast': expected single, bulk or both"),
    ({"dry_run": True, "on_changed": "maybe"},
     "on_changed='maybe': expected skip, post, update or fail"),
    ({}, "a real run needs access_key= (or LSQ_ACCESS_KEY) and secret_key= (or "
         "LSQ_SECRET_KEY); dry_run=True sends nothing"),
    ({"host": "http://127.0.0.1:9", "access_key": "  ", "secret_key": "s"},
     "a real run needs access_key= (or LSQ_ACCESS_KEY); dry_run=True sends nothing"),
    ({"host": "http://127.0.0.1:9", "access_key": "a", "secret_key": "sec\x01ret"},
     "secret_key= contains a space or control character"),
])
def test_api_errors_name_the_arguments(source: Path, tmp_path: Path, arguments: dict[str, Any],
                                       message: str) -> None:
    with pytest.raises(UsageError) as refused:
        bulkpost.run(source, MAPPING, tmp_path / "r.csv", **arguments)
    assert str(refused.value).startswith(message)
    assert "--" not in str(refused.value)  # no CLI option names


@pytest.mark.e2e
@pytest.mark.parametrize(("arguments", "message"), [
    (("--host", "ftp://x"),
     "bulkpost: error: --host 'ftp://x': expected a host such as api-in21.leadsquared.com or "
     "https://api-in21.leadsquared.com"),
    (("--host", "https://x.example/?a=1"),
     "bulkpost: error: --host 'https://x.example/?a=1': give the host only, no query string"),
])
def test_the_cli_still_names_its_options(source: Path, tmp_path: Path,
                                         arguments: tuple[str, ...], message: str) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text('[activity]\nevent = 201\nlead_id_column = "lead"\n'
                       '[fields]\nmx_Custom_1 = "n"\n')
    result = run_cli("run", source, "--mapping", mapping, "--results", tmp_path / "r.csv",
                     *arguments)
    assert result.code == 2 and message in result.stderr


def test_an_error_renders_its_settings_for_the_cli_until_the_api_lets_it_through() -> None:
    batch = Setting("batch_size")
    keys = Setting("access_key", cli="LSQ_ACCESS_KEY")
    error = UsageError("{given}: too many; see {batch} and {keys}", given=Given(batch, 26),
                       batch=batch, keys=keys)
    assert str(error) == "--batch-size 26: too many; see --batch-size and LSQ_ACCESS_KEY"
    error.surface = "api"
    assert str(error) == "batch_size=26: too many; see batch_size= and access_key="
    assert str(UsageError("no {fields} to render")) == "no {fields} to render"


@pytest.mark.parametrize(("keyword", "closest"), [
    ("worker", "workers"), ("max_attempt", "max_attempts"), ("timout", "timeout"),
    ("dryrun", "dry_run"), ("acess_key", "access_key"),
])
def test_a_misspelled_keyword_names_the_closest_valid_one(source: Path, tmp_path: Path,
                                                          keyword: str, closest: str) -> None:
    misspelled: dict[str, Any] = {keyword: 3}
    with pytest.raises(UsageError) as refused:
        bulkpost.run(source, MAPPING, tmp_path / "r.csv", dry_run=True, **misspelled)
    message = str(refused.value)
    assert message.startswith(f"bulkpost.run(): unknown keyword argument {keyword}= "
                              f"(did you mean {closest}=?); valid: ")
    valid = message.split("valid: ", 1)[1].split(", ")
    assert {"access_key", "workers", "batch_size", "history", "verify_first"} <= set(valid)
    assert not {"input", "mapping", "results", "credentials"} & set(valid)
    assert not (tmp_path / "r.csv").exists()


def test_a_keyword_the_api_sets_itself_is_not_an_option(source: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown keyword argument credentials=; valid: "):
        # The type checker refuses it too: every keyword is named in run()'s signature.
        bulkpost.run(source, MAPPING, tmp_path / "r.csv", dry_run=True,
                     credentials=None)  # type: ignore[call-arg]


async def test_run_async_checks_its_keywords_too(source: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^bulkpost\.run_async\(\): unknown keyword argument "
                                         r"wokers= \(did you mean workers=\?\)"):
        await bulkpost.run_async(source, MAPPING, tmp_path / "r.csv", dry_run=True,
                                 wokers=2,  # type: ignore[call-arg]
                                 secret_key=SECRET)
