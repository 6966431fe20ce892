"""docs/TUTORIAL.md, run as written: a partly failed load, report, fix, load again.

Every ```sh block of the tutorial is run, line by line, in a copy of docs/tutorial/, with
``bulkpost`` on the PATH and LSQ_HOST pointing at a sandbox; a line ending in ``# exits N``
must exit N, any other 0. At the end every row is posted once, with its text intact, the
first load's command exits 0 sending nothing, and its report says which rows were fixed, by
which file.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, cli_env

pytestmark = pytest.mark.e2e

TUTORIAL = ROOT / "docs" / "TUTORIAL.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXITS = re.compile(r"#\s*exits (\d+)\s*$")


def _commands() -> list[tuple[str, int]]:
    commands = []
    for block in _BLOCK.findall(TUTORIAL.read_text(encoding="utf-8")):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                expected = _EXITS.search(line)
                commands.append((line, int(expected[1]) if expected else 0))
    return commands


def test_the_tutorial_ends_with_every_row_posted_once_with_its_text_intact(
        tmp_path: Path, make_sandbox: Any) -> None:
    commands = _commands()
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
