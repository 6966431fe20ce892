"""What a person meets first: every command's help, its examples, the host forms, and the
sandbox's start-up lines.

The help tests walk every command of the real click tree, so a command or option added
later is held to the same rules: -h works, every option is described, paths are FILE, the
Example section is there and each of its command lines parses as a real invocation.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bulkpost.cli.main import cli
from bulkpost.core.allowance import parse_rate
from bulkpost.core.options import Mode, RunOptions
from bulkpost.delivery.client import check_host
from bulkpost.errors import UsageError
from bulkpost.reading.mapping_file import load_mapping
from bulkpost.sandbox.gate import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from tests.conftest import ROOT, SandboxProcess, run_cli, write_csv


def _walk(command: click.Command, path: tuple[str, ...] = ()
          ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk(cli))
PATHS = list(COMMANDS)
LEAVES = [path for path, command in COMMANDS.items() if not isinstance(command, click.Group)]


def _id(path: tuple[str, ...]) -> str:
    return " ".join(path) or "bulkpost"


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="bulkpost")
    assert result.exit_code == 0, result.output
    return result.output


def _options() -> Iterator[tuple[str, click.Option, click.Context]]:
    for path, command in COMMANDS.items():
        ctx = click.Context(command, info_name=_id(path))
        for param in command.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden:
                yield _id(path), param, ctx


def test_the_walk_finds_every_command() -> None:
    assert {"run", "validate", "check", "report", "verify", "sandbox"} <= {
        path[0] for path in LEAVES}
    assert ("history", "import") in LEAVES and ("history", "stats") in LEAVES


@pytest.mark.parametrize("path", PATHS, ids=_id)
def test_every_command_takes_dash_h_as_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "-h"], prog_name="bulkpost")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: {' '.join(('bulkpost', *path))} ")
    assert result.output == _help(*path)


def test_validate_has_its_own_help_without_the_sending_options() -> None:
    description, options = _help("validate").split("\nOptions:\n")
    assert "Post every row" not in description and "sending nothing" in description
    for absent in ("--dry-run", "--workers", "--verify-first"):
        assert absent not in options
    for present in ("--mapping FILE", "--results FILE", "--host HOST", "--decimal-comma",
                    "--history", "--summary-json FILE"):
        assert present in options
    assert "--dry-run" in _help("run").split("\nOptions:\n")[1]  # run keeps it


def test_validate_refuses_dry_run_as_an_unknown_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "in.csv"), "--mapping", "m",
                                      "--results", "r", "--dry-run"], prog_name="bulkpost")
    assert result.exit_code == 2 and "No such option '--dry-run'" in result.output


def test_validate_is_a_dry_run_with_run_s_options(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", ["lead", "amount"],
                     [["00000000-0000-0000-0000-000000000001", "12.5"], ["", "3"]])
    mapping = tmp_path / "m.toml"
    mapping.write_text('[activity]\nevent = 201\nlead_id_column = "lead"\n'
                       '[fields]\nmx_Custom_2 = "amount"\n')
    results = tmp_path / "r.csv"
    summary_json = tmp_path / "summary.json"
    done = run_cli("validate", data, "--mapping", mapping, "--results", results,
                   "--rate", "10/1s", "--summary-json", summary_json)
    assert done.code == 1, done.stderr  # one row has no lead id
    assert done.summary["dry_run"] is True
    assert (done.summary["to_send"], done.summary["invalid"]) == (1, 1)
    assert json.loads(summary_json.read_text())["dry_run"] is True
    assert "dry run: 1 rows to send, 1 invalid" in done.stderr


@pytest.mark.parametrize("path", PATHS, ids=_id)
def test_every_command_s_help_has_an_example_that_parses(
        path: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _help(*path).splitlines()
    heading = [i for i, line in enumerate(lines) if line.strip().startswith("Example")]
    assert heading, f"no Example section in `{_id(path)} --help`"
    examples, pending = [], ""
    for line in lines[heading[0] + 1:]:
        if not line.strip():
            break
        text = pending + line.strip()
        pending = text[:-1] if text.endswith("\\") else ""
        if not pending and text.startswith("bulkpost "):
            examples.append(text)
    # \b keeps the lines: without it click rewraps the block into the heading's paragraph.
    assert examples, f"no command line under `{_id(path)} --help`'s Example heading"
    assert any(example.startswith(" ".join(("bulkpost", *path)) + " ")
               for example in examples)
    monkeypatch.chdir(tmp_path)
    for example in examples:
        words = shlex.split(example)[1:]
        for word in words:  # the files the example names, for options that must exist
            if re.fullmatch(r"[\w*-]+\.(csv|toml|db|parquet)", word):
                Path(word.replace("*", "01")).touch()
        words = [found for word in words
                 for found in (sorted(glob.glob(word)) if "*" in word else [word])]
        command: click.Command = cli
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            command = command.commands[words.pop(0)]
        assert not isinstance(command, click.Group), example
        # Parses and checks every option and argument (required, types, paths that must
        # exist) without running the command.
        with command.make_context("bulkpost", words):
            pass


def test_every_option_of_every_command_is_described() -> None:
    undescribed = [(name, param.opts[0]) for name, param, _ in _options()
                   if not (param.help or "").strip()]
    assert undescribed == []


def test_paths_are_shown_as_file_everywhere() -> None:
    shown = {}
    for name, param, ctx in _options():
        record = param.get_help_record(ctx)
        assert record is not None
        shown[(name, param.opts[0])] = record[0]
        assert " PATH" not in record[0]
        if isinstance(param.type, click.Path):
            metavar = "FILE" if param.type.file_okay else "DIR"
            assert record[0].endswith(f" {metavar}"), record[0]
    # The walk saw the path options of each kind of command.
    assert shown[("run", "--mapping")] == "--mapping FILE"
    assert shown[("sandbox", "--ledger")] == "--ledger FILE"
    assert shown[("history stats", "--history")] == "--history FILE"


def test_workers_help_says_what_0_does_as_the_run_does_it(tmp_path: Path) -> None:
    workers = next(param for name, param, _ in _options()
                   if name == "run" and param.opts[0] == "--workers")
    assert workers.default == 0
    text = workers.help or ""
    mapping = load_mapping(ROOT / "samples" / "mapping.toml")

    def count(mode: Mode, rate: str) -> int:
        return RunOptions(input=tmp_path / "in.csv", mapping=mapping, results=tmp_path / "r",
                          rate=parse_rate(rate), mode=mode).worker_count()

    assert "0 (the default)" in text
    assert f"{count('single', '25/5s')} at 25/5s" in text
    assert count("single", "25/5s") == 25 / 5 * 4
    assert "the calls per second times 4, from 2 to 64" in text
    assert (count("single", "1/5s"), count("single", "1000/1s")) == (2, 64)
    assert "times 2.5 with --mode both" in text and count("both", "25/5s") == 13
    assert "--mode bulk uses none" in text and count("bulk", "25/5s") == 0


@pytest.mark.parametrize("path", [("run",), ("validate",), ("check",), ("verify",)], ids=_id)
def test_host_help_shows_the_bare_name_and_the_url(path: tuple[str, ...]) -> None:
    text = " ".join(_help(*path).split())  # help wraps lines; compare the words
    assert "--host HOST" in text
    assert "api.leadsquared.com or https://api.leadsquared.com" in text
    assert check_host("api.leadsquared.com") == check_host("https://api.leadsquared.com")
    assert "[env var: LSQ_HOST]" in text


@pytest.mark.parametrize(("given", "url"), [
    ("api-in21.leadsquared.com", "https://api-in21.leadsquared.com"),
    ("  api-in21.leadsquared.com/ ", "https://api-in21.leadsquared.com"),
    ("https://api-in21.leadsquared.com", "https://api-in21.leadsquared.com"),
    ("https://api-in21.leadsquared.com/", "https://api-in21.leadsquared.com"),
    ("api.leadsquared.com:443", "https://api.leadsquared.com:443"),
    ("http://127.0.0.1:8750", "http://127.0.0.1:8750"),
])
def test_check_host_takes_a_bare_name_as_https(given: str, url: str) -> None:
    assert check_host(given) == url


@pytest.mark.parametrize(("given", "message"), [
    ("", "expected a host such as api-in21.leadsquared.com or https://"),
    ("https://", "expected a host such as"),
    ("ftp://api-in21.leadsquared.com", "expected a host such as"),
    ("http://api-in21.leadsquared.com", "https:// is required"),
    ("api-in21.leadsquared.com?x=1", "no query string"),
])
def test_check_host_still_refuses(given: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        check_host(given)


@pytest.mark.parametrize(("host", "accepted"), [
    ("api-in21.leadsquared.com", True),
    ("https://api-in21.leadsquared.com", True),
    ("http://api-in21.leadsquared.com", False),
])
def test_the_cli_takes_both_host_forms(tmp_path: Path, host: str, accepted: bool) -> None:
    # With no keys, the host is checked and the run stops at the keys: no request is made.
    data = write_csv(tmp_path / "in.csv", ["lead"], [["x"]])
    mapping = tmp_path / "m.toml"
    mapping.write_text('[activity]\nevent = 201\nlead_id_column = "lead"\n')
    done = run_cli("run", data, "--mapping", mapping, "--results", tmp_path / "r.csv",
                   "--host", host, LSQ_ACCESS_KEY="", LSQ_SECRET_KEY="")
    assert done.code == 2
    if accepted:
        assert "set LSQ_ACCESS_KEY in the environment" in done.stderr, done.stderr
    else:
        assert "https:// is required" in done.stderr


def test_sandbox_help_gives_the_default_keys() -> None:
    text = " ".join(_help("sandbox").split())
    assert f"[default: {DEFAULT_ACCESS_KEY}]" in text
    assert f"[default: {DEFAULT_SECRET_KEY}]" in text


@pytest.mark.e2e
def test_sandbox_announces_its_url_and_the_demo_keys_on_stderr() -> None:
    with SandboxProcess() as (ready, announcement):
        url = json.loads(ready)["sandbox"]
        assert announcement.startswith(f"bulkpost sandbox: listening on {url} ")
        exports = [line.strip() for line in announcement.splitlines()
                   if line.strip().startswith("export ")]
        assert exports == [
            f"export LSQ_ACCESS_KEY={DEFAULT_ACCESS_KEY} LSQ_SECRET_KEY={DEFAULT_SECRET_KEY}",
            f"export LSQ_HOST={url}"]
        # The lines to copy are the ones that work: `check` reads the schemas with them.
        env = dict(word.split("=", 1) for line in exports for word in line.split()[1:])
        done = run_cli("check", "--mapping", ROOT / "samples" / "mapping.toml", **env)
        assert done.code == 0, done.stderr
        assert "the mapping fits: ok" in done.stdout


@pytest.mark.e2e
def test_sandbox_with_custom_keys_says_so_and_never_prints_them() -> None:
    access, secret = "custom-access-7f3a", "custom-secret-9b1c"
    with SandboxProcess("--access-key", access, "--secret-key", secret) as (ready, announcement):
        url = json.loads(ready)["sandbox"]
        assert f"listening on {url}" in announcement
        assert "custom keys" in announcement
        assert announcement.rstrip().endswith(f"export LSQ_HOST={url}")
        for key in (access, secret, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY):
            assert key not in announcement and key not in ready
        assert "export LSQ_ACCESS_KEY" not in announcement
