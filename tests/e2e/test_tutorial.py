"""docs/TUTORIAL.md, run as written: its two parts, each against a sandbox of its own.

Every ```sh block of a part is run, line by line, in a copy of its files, with ``bulkpost``
on the PATH and LSQ_HOST pointing at a sandbox; a line ending in ``# exits N`` must exit N,
any other 0. Part 1 (docs/tutorial/): a partly failed load, report, fix, load again; at the
end every row is posted once, with its text intact, the first load's command exits 0 sending
nothing, and its report says which rows were fixed, by which file. Part 2
(samples/call-log/): another CRM's call log from ``init`` to two nightly runs with
``--on-changed update``; at the end every call is in the CRM once, at its date and time, and
every call edited on a night was updated in place.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bulkpost.cli.sandbox import read_types_file
from tests.conftest import ROOT, cli_env

pytestmark = pytest.mark.e2e

TUTORIAL = ROOT / "docs" / "TUTORIAL.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXITS = re.compile(r"#\s*exits (\d+)\s*$")


PART_2 = "\n# From another CRM's call log to nightly updates\n"


def _part(number: int) -> str:
    """The text of part 1 or 2 of the tutorial (split at part 2's top heading)."""
    first, second = TUTORIAL.read_text(encoding="utf-8").split(PART_2)
    return first if number == 1 else second


def _commands(text: str) -> list[tuple[str, int]]:
    commands = []
    for block in _BLOCK.findall(text):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                expected = _EXITS.search(line)
                commands.append((line, int(expected[1]) if expected else 0))
    return commands


def test_the_tutorial_ends_with_every_row_posted_once_with_its_text_intact(
        tmp_path: Path, make_sandbox: Any) -> None:
    commands = _commands(_part(1))
    assert len(commands) == 8
    work = tmp_path / "tutorial"
    shutil.copytree(ROOT / "docs" / "tutorial", work)
    server = make_sandbox()
    env = cli_env(LSQ_HOST=server.url)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    outputs = []
    creates = []  # the sandbox's create calls after each command
    for command, expected in commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == expected, f"{command}\n{done.stderr}"
        outputs.append(done.stdout + done.stderr)
        creates.append(len(server.ledger()))
    # What the tutorial says the first load prints is what it prints.
    said = re.search(r"```text\n(bulkpost: 2 rows not posted.*)\n```",
                     TUTORIAL.read_text(encoding="utf-8"))
    assert said is not None and said[1] in outputs[0]
    # report said how to load the fixed rows so that they close the loop.
    assert "--fixes results.csv" in outputs[1] and "bulkpost_row" in (
        work / "to-fix.csv").read_text(encoding="cp1252").splitlines()[0]
    assert "2 rows of results.csv marked fixed" in outputs[3]
    # The first load's report shows the rows fixed, and by which file.
    fixed_by = re.search(r"```text\n(fixed \(by .*)\n```", TUTORIAL.read_text(encoding="utf-8"))
    assert fixed_by is not None and fixed_by[1] in outputs[5]
    # The first load's command and the fix command, again: exit 0, nothing sent.
    assert creates[-1] == creates[-2] == creates[-3] == 6
    assert json.loads(outputs[6].splitlines()[0])["exit_code"] == 0
    with open(ROOT / "docs" / "tutorial" / "visits.csv", newline="", encoding="cp1252") as f:
        notes = {row["visit_id"]: row["note"] for row in csv.DictReader(f, delimiter=";")}
    ledger = server.ledger()
    posted = Counter(entry["Fields"]["mx_Custom_1"] for entry in ledger)
    assert posted == Counter(notes.keys())  # every visit, once
    assert {e["Fields"]["mx_Custom_1"]: e["ActivityNote"] for e in ledger} == notes
    assert any("Zoë Müller" in note for note in notes.values())


# -- part 2: another CRM's call log, from init to nightly updates --------------------------

CALL_LOG = ROOT / "samples" / "call-log"
KOLKATA = ZoneInfo("Asia/Kolkata")


def _sandbox_options(text: str) -> dict[str, str]:
    """The options the tutorial starts the sandbox with (its ``$ bulkpost sandbox`` line)."""
    [line] = [line for line in text.splitlines() if line.startswith("$ bulkpost sandbox")]
    words = shlex.split(line)[3:]
    options = dict(zip(words[::2], words[1::2], strict=True))
    assert set(options) == {"--types", "--rate"}, line  # what this test passes in-process
    return options


def _calls(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def _utc(call: dict[str, str]) -> str:
    """The call's date and time in Kolkata, as the UTC date-time the API is sent."""
    local = datetime.strptime(f"{call['Call Date']} {call['Call Time']}", "%d/%m/%Y %I:%M %p")
    return local.replace(tzinfo=KOLKATA).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _stored(call: dict[str, str]) -> dict[str, Any]:
    """What the activity of ``call`` holds when it is up to date."""
    return {"EmailAddress": call["Student Email"], "ActivityDateTime": _utc(call),
            "ActivityNote": call["Notes"], "Fields": {
                "mx_Custom_1": call["Call ID"], "mx_Custom_2": call["Counsellor"],
                "mx_Custom_3": call["Duration (sec)"], "mx_Custom_4": call["Outcome"],
                "mx_Custom_5": call["Campus"]}}


def test_the_call_log_goes_from_init_to_nightly_updates_each_call_once_and_up_to_date(
        tmp_path: Path, make_sandbox: Any) -> None:
    text = _part(2)
    commands = _commands(text)
    assert len(commands) == 16
    work = tmp_path / "calls"
    shutil.copytree(CALL_LOG, work, ignore=shutil.ignore_patterns("__pycache__"))
    options = _sandbox_options(text)
    server = make_sandbox(options["--rate"], types=read_types_file(work / options["--types"]))
    env = cli_env(LSQ_HOST=server.url)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    outputs: list[str] = []
    summaries: dict[int, dict[str, Any]] = {}  # each run's, by its command's index
    created: list[int] = []  # activities in the ledger after each command
    for index, (command, expected) in enumerate(commands):
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == expected, f"{command}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout + done.stderr)
        if command.startswith("bulkpost run"):
            summaries[index] = json.loads(done.stdout.strip().splitlines()[-1])
        created.append(server.stats()["created"])
    dry, load, fixes, again, night_1, night_2 = summaries
    line = [_EXITS.sub("", command).strip() for command, _ in commands]
    assert "--dry-run" in line[dry] and "--fixes results.csv" in line[fixes]
    assert line[again] == line[load] and "nightly-1.csv" in line[night_1]
    assert "nightly-2.csv" in line[night_2]
    assert all("--on-changed update" in line[night] and "--history" not in line[night]
               for night in (night_1, night_2))

    # What the tutorial shows of init, the dry run and the loads is what they print.
    shown = re.findall(r"```text\n(.*?)\n```", text, re.DOTALL)
    printed = "".join(outputs)
    said = [line for block in shown for line in block.splitlines()
            if line.startswith(("wrote calls.toml", "bulkpost:", "dry run:", "  "))]
    assert len(said) == 13 and [line for line in said if line not in printed] == []
    init = next(n for n, (c, _) in enumerate(commands) if c.startswith("bulkpost init"))
    assert '"Call ID" is not the key column' in outputs[init]
    assert 'key_column = "Call ID"' in (work / "calls.toml").read_text(encoding="utf-8")
    assert "dry run: 1,491 rows to send, 8 invalid" in outputs[dry]
    assert summaries[dry]["exit_code"] == 1 and created[dry] == 0
    assert (summaries[load]["posted"], summaries[load]["invalid"],
            summaries[load]["repeats"]) == (1491, 8, 1)
    assert summaries[fixes]["marked_fixed"] == 8 and summaries[fixes]["exit_code"] == 0
    # The first command again: exit 0, nothing created.
    assert summaries[again]["exit_code"] == 0 and summaries[again]["posted"] == 0
    assert created[again] == created[fixes] == 1499

    # The calls as the other CRM holds them after each step, and those each night changed.
    first = _calls(CALL_LOG / "calls.csv")
    fixed = _calls(work / "to-fix.csv")
    broken = {int(row["bulkpost_row"]) for row in fixed}
    assert len(broken) == 8
    truth = {call["Call ID"]: call for row, call in enumerate(first, start=1)
             if row not in broken}
    truth.update((call["Call ID"], {k: call[k] for k in first[0]}) for call in fixed)
    assert len(truth) == 1499  # 1,500 rows, one of them an exact repeat
    edits: Counter[str] = Counter()
    for night, name in ((night_1, "nightly-1.csv"), (night_2, "nightly-2.csv")):
        calls = _calls(CALL_LOG / name)
        changed = [c for c in calls if c["Call ID"] in truth and truth[c["Call ID"]] != c]
        new = [c for c in calls if c["Call ID"] not in truth]
        assert changed and new
        assert all(_utc(c) == _utc(truth[c["Call ID"]]) for c in changed)  # updatable
        summary = summaries[night]
        assert (summary["exit_code"], summary["posted"], summary["updated"],
                summary["changed"]) == (0, len(new), len(changed), 0), summary
        edits.update(c["Call ID"] for c in changed)
        truth.update((c["Call ID"], c) for c in calls)
    assert 2 in edits.values()  # some calls were edited on both nights

    # The ledger: every call once, at its date and time, up to date, edited ones in place.
    ledger = server.ledger()
    by_call = Counter(entry["Fields"]["mx_Custom_1"] for entry in ledger)
    assert by_call == Counter(truth.keys())
    for entry in ledger:
        call = truth[entry["Fields"]["mx_Custom_1"]]
        assert {key: entry[key] for key in _stored(call)} == _stored(call)
        assert len(entry.get("Updates", [])) == edits[call["Call ID"]]
        for update in entry.get("Updates", []):
            assert update["Fields"]["mx_Custom_1"] == call["Call ID"]
    assert any("अपडेट" in entry["ActivityNote"] for entry in ledger)
