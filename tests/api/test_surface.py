"""The public Python surface: every option a named, typed keyword; the types callers pass
exported; the version from the package's metadata; ``py.typed``; logging the caller's.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import io
import json
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import bulkpost
from bulkpost.core import options
from bulkpost.core.options import RunOptions
from tests.conftest import SECRET, write_csv

ROOT = Path(bulkpost.__file__).resolve().parents[1]
MAPPING = {"activity": {"event": 201, "lead_id_column": "lead"}, "fields": {"mx_Custom_1": "n"}}
LEAD = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
# RunOptions fields run() fills from its own arguments (source, the keys, rate=, bulk_rate=).
FILLED = {"input", "mapping", "results", "credentials", "learn_rate", "learn_bulk_rate",
          "forget_learnt"}


def test_every_run_option_is_a_keyword_of_run_and_run_async_alike() -> None:
    signature = inspect.signature(bulkpost.run)
    assert signature == inspect.signature(bulkpost.run_async)
    assert inspect.iscoroutinefunction(bulkpost.run_async)
    keywords = {name for name, parameter in signature.parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY}
    fields = {field.name for field in dataclasses.fields(RunOptions)} - FILLED
    assert keywords == fields | {"access_key", "secret_key"}
    assert not [p for p in signature.parameters.values()
                if p.kind is inspect.Parameter.VAR_KEYWORD]  # no catch-all
    # Each default is the run's own default.
    defaults = {field.name: field.default for field in dataclasses.fields(RunOptions)
                if field.default is not dataclasses.MISSING}
    for name in keywords & defaults.keys() - {"host"}:
        assert signature.parameters[name].default == defaults[name], name


def test_the_cli_s_choices_are_literal_types() -> None:
    parameters = inspect.signature(bulkpost.run).parameters
    # The annotations are text (``from __future__ import annotations``): their names.
    assert (parameters["mode"].annotation, parameters["on_changed"].annotation) == (
        "Mode", "OnChanged")
    assert (bulkpost.Mode, bulkpost.OnChanged) == (options.Mode, options.OnChanged)
    assert typing.get_args(bulkpost.Mode) == ("single", "bulk", "both")
    assert typing.get_args(bulkpost.OnChanged) == ("skip", "post", "update", "fail")
    for section in ("Args:", "Returns:", "Raises:"):
        assert section in (bulkpost.run.__doc__ or "")
    assert "batch_size:" in (bulkpost.run.__doc__ or "")


def test_the_types_callers_pass_are_exported_from_where_they_live() -> None:
    from bulkpost.core.allowance import RateSpec
    from bulkpost.core.mapping import Mapping
    from bulkpost.core.share import ShareSchedule
    from bulkpost.core.summary import Summary

    assert (bulkpost.Mapping, bulkpost.RateSpec, bulkpost.Summary, bulkpost.ShareSchedule) == (
        Mapping, RateSpec, Summary, ShareSchedule)
    assert set(bulkpost.__all__) <= set(vars(bulkpost))


def test_the_version_is_the_installed_package_s_and_the_hints_ship() -> None:
    assert bulkpost.__version__ == importlib.metadata.version("bulkpost")
    assert (ROOT / "bulkpost" / "py.typed").is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["bulkpost"]


@pytest.fixture
def unconfigured_logging() -> Iterator[None]:
    """structlog as a fresh process has it; what the test found is put back after."""
    was_configured = structlog.is_configured()
    saved = {**structlog.get_config()}
    structlog.reset_defaults()
    yield
    if was_configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def test_a_run_configures_no_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     unconfigured_logging: None) -> None:
    for name in ("LSQ_HOST", "LSQ_ACCESS_KEY", "LSQ_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    source = write_csv(tmp_path / "in.csv", ["lead", "n"], [[LEAD, "1"]])
    summary = bulkpost.run(source, MAPPING, tmp_path / "r.csv", dry_run=True)
    assert summary.to_send == 1
    assert not structlog.is_configured()


def test_configure_logging_writes_bulkpost_s_lines_without_the_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unconfigured_logging: None) -> None:
    for name in ("LSQ_HOST", "LSQ_ACCESS_KEY", "LSQ_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    stream = io.StringIO()
    bulkpost.configure_logging("json", "info", stream)
    source = write_csv(tmp_path / "in.csv", ["lead", "n"], [[LEAD, "1"]])
    # Keys without a host: a dry run reads no schemas, but the keys are blanked out all
    # the same, wherever they would appear.
    bulkpost.run(source, MAPPING, tmp_path / "r.csv", dry_run=True,
                 access_key="key-of-the-test", secret_key=SECRET)
    structlog.get_logger("bulkpost").info("run.started", echoed=f"{SECRET} key-of-the-test")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert "run.started" in events and "run.finished" in events
    assert SECRET not in stream.getvalue() and "key-of-the-test" not in stream.getvalue()
    assert lines[-1]["echoed"] == "*** ***"


def test_an_unconfigured_run_through_faults_writes_no_key(
        tmp_path: Path, make_sandbox: Any, capfd: pytest.CaptureFixture[str],
        unconfigured_logging: None) -> None:
    """Without configure_logging, structlog's defaults print bulkpost's lines (on stdout)
    and bulkpost's redaction is not in them: what they carry must hold no key already,
    on retries, uncertain answers and the 401 of a wrong secret alike."""
    faults = {"500-before": 0.1, "500-after": 0.1, "html": 0.05, "reset-after": 0.05,
              "429-other": 0.05}
    server = make_sandbox(rate="60/0.2s", faults=faults, seed=11, keys={"access-1": SECRET})
    rows = [[LEAD, str(n)] for n in range(40)]
    source = write_csv(tmp_path / "in.csv", ["lead", "n"], rows)
    summary = bulkpost.run(source, MAPPING, tmp_path / "r.csv", host=server.url,
                           access_key="access-1", secret_key=SECRET, rate="60/0.2s",
                           timeout=0.8, backoff=0.01)
    assert summary.posted + summary.unknown + summary.failed == 40
    refused = bulkpost.run(source, MAPPING, tmp_path / "o.csv", host=server.url,
                           access_key="access-1", secret_key="wrong-" + SECRET,
                           rate="60/0.2s")
    assert refused.exit_code == 3 and "refused the keys" in str(refused.aborted)
    out, err = capfd.readouterr()
    assert "row.retrying" in out and "run.stopping" in out  # the lines were printed
    assert SECRET not in out + err and "access-1" not in out + err
