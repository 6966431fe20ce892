"""Log events: short stable keys with fields, one table of the sentences a person reads.

The table is checked against the source (every key used, every call's key in the table),
the renderers against the table (the console shows the sentence, a JSON line the key and
the sentence), and runs in this process through structlog's ``capture_logs``: keys and
fields, not rendered text.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs
from structlog.typing import EventDict

import bulkpost
from bulkpost.runner import logs
from bulkpost.runner.logs import EVENTS
from tests.conftest import KEYED_MAPPING, ROOT, SECRET, write_csv

PACKAGE = ROOT / "bulkpost"
_KEY = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_LEVELS = {"debug", "info", "warning", "warn", "error", "err", "exception", "critical",
           "fatal", "msg"}
_LEVELS |= {f"a{level}" for level in _LEVELS}  # structlog's async methods: ainfo, ...

def _is_get_logger(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and ast.unparse(node.func) in
            ("structlog.get_logger", "get_logger", "structlog.stdlib.get_logger"))


def _event_literals(node: ast.expr) -> list[str] | None:
    """The event keys an event argument can be: a literal, or a choice of literals."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _event_literals(node.body), _event_literals(node.orelse)
        return None if body is None or orelse is None else body + orelse
    return None


def log_calls(path: Path) -> list[tuple[int, str | None, list[str]]]:
    """Every structlog call of a module: its line, its event key(s) (None when the event is
    not literal text) and its keyword names. A logger is whatever the module binds to
    ``structlog.get_logger(...)``, or such a call itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    loggers = {ast.unparse(target) for node in ast.walk(tree)
               if isinstance(node, ast.Assign) and _is_get_logger(node.value)
               for target in node.targets}
    found: list[tuple[int, str | None, list[str]]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LEVELS):
            continue
        receiver = node.func.value
        if not (_is_get_logger(receiver) or ast.unparse(receiver) in loggers):
            continue
        names = [k.arg for k in node.keywords if k.arg is not None]
        given = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "event"), None)
        literals = None if given is None else _event_literals(given)
        keys: list[str | None] = [*literals] if literals else [None]
        for key in keys:
            found.append((node.lineno, key, names))
    return sorted(found, key=lambda call: call[0])  # stable: a choice keeps its order


def _all_calls() -> list[tuple[str, int, str | None, list[str]]]:
    return [(path.relative_to(ROOT).as_posix(), line, key, names)
            for path in sorted(PACKAGE.rglob("*.py"))
            for line, key, names in log_calls(path)]


def test_every_log_call_uses_a_key_of_the_table_and_every_key_is_used() -> None:
    calls = _all_calls()
    assert len(calls) >= 25, calls  # the scan sees the package's calls
    used: set[str] = set()
    wrong: list[str] = []
    for path, line, key, names in calls:
        where = f"{path}:{line}"
        if key is None:
            wrong.append(f"{where}: the event is not a literal key")
        elif key in EVENTS:
            used.add(key)
        else:
            wrong.append(f"{where}: {key!r} is not a key of bulkpost.runner.logs.EVENTS")
        if "message" in names:
            wrong.append(f"{where}: 'message' is the JSON line's sentence, not a field")
    unused = set(EVENTS) - used
    assert not wrong, "\n".join(wrong)
    assert not unused, f"keys no log call uses: {sorted(unused)}"


def test_the_keys_are_short_snake_case_dotted_by_area_and_each_has_a_sentence() -> None:
    for key, sentence in EVENTS.items():
        assert _KEY.fullmatch(key) and len(key) <= 40, key
        assert key.count(".") <= 1, key
        assert sentence and sentence == sentence.strip() and "\n" not in sentence, key


def test_the_scan_finds_every_form_of_call(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        "import structlog\n"
        "log = structlog.get_logger('bulkpost')\n"
        "log.info('a.key', n=1)\n"
        "log.warning('b' if x else 'c')\n"
        "structlog.get_logger().error('d', message='no')\n"
        "log.debug(f'{x}')\n"
        "task.exception()\n"  # an asyncio task, no logger
        "other.info('e')\n")  # not a structlog logger
    assert log_calls(module) == [(3, "a.key", ["n"]), (4, "b", []), (4, "c", []),
                                 (5, "d", ["message"]), (6, None, [])]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog's configuration back as the test found it."""
    was_configured = structlog.is_configured()
    saved = {**structlog.get_config()}
    saved["processors"] = list(saved["processors"])
    yield
    if was_configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


@pytest.fixture
def captured(restore_logging: None) -> Iterator[list[EventDict]]:
    """What the test logs, at every level, as ``capture_logs`` gives it: the key in
    ``event``, the fields beside it (the run id bound by the run too) and ``log_level``."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        yield entries


def test_the_console_shows_the_sentence_and_a_json_line_the_key_and_the_sentence(
        restore_logging: None) -> None:
    log = structlog.get_logger("bulkpost")
    console = io.StringIO()
    logs.configure("console", "debug", stream=console)
    log.warning("history.changed_skipped", rows=2)
    shown = console.getvalue()
    assert EVENTS["history.changed_skipped"] in shown and "rows=2" in shown
    assert "history.changed_skipped" not in shown and "message" not in shown
    assert "[warning" in shown

    lines = io.StringIO()
    logs.configure("json", "debug", stream=lines)
    log.warning("history.changed_skipped", rows=2)
    log.info("not a key", n=1)  # a sentence of no table (another program's logger)
    first, second = map(json.loads, lines.getvalue().splitlines())
    assert first["event"] == "history.changed_skipped" and first["rows"] == 2
    assert first["message"] == EVENTS["history.changed_skipped"]
    assert first["level"] == "warning"
    assert (second["event"], second["message"], second["n"]) == ("not a key", "not a key", 1)


def test_a_sentence_is_scrubbed_of_secrets_like_every_field(restore_logging: None) -> None:
    logs.register_secret(SECRET)
    lines = io.StringIO()
    logs.configure("json", "info", stream=lines)
    structlog.get_logger("bulkpost").info(f"not a key {SECRET}")
    logged = json.loads(lines.getvalue())
    assert SECRET not in lines.getvalue() and logged["message"] == "not a key ***"


LEADS = ["3c6ef372-fe94-4f3a-a54f-f53a5f1d36f1", "9e3779b9-7f4a-4c15-b39c-c0605cedc834"]


def _inputs(tmp_path: Path, rows: int, bad_leads: int = 0) -> tuple[Path, Path]:
    data = write_csv(tmp_path / "in.csv", ["key", "lead", "note", "when", "value"],
                     [[f"K{n:05d}", "not-a-guid" if n <= bad_leads else LEADS[n % 2],
                       f"note {n}", "2024-02-01 10:00", str(n)] for n in range(1, rows + 1)])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(KEYED_MAPPING)
    return data, mapping


def _events(entries: list[EventDict], key: str) -> list[EventDict]:
    return [entry for entry in entries if entry["event"] == key]


def test_a_dry_run_without_keys_logs_its_start_its_warning_and_its_summary(
        tmp_path: Path, captured: list[EventDict]) -> None:
    data, mapping = _inputs(tmp_path, 5, bad_leads=2)
    summary = bulkpost.run(data, mapping, tmp_path / "r.csv", dry_run=True)
    assert (summary.to_send, summary.invalid) == (3, 2)
    started, = _events(captured, "run.started")
    assert started["log_level"] == "info" and started["dry_run"] is True
    assert started["results"] == str(tmp_path / "r.csv") and started["mode"] == "single"
    assert "bulk_rate" in started and started["bulk_rate"] is None
    warned, = _events(captured, "dry_run.no_schemas")
    assert warned["log_level"] == "warning"
    finished, = _events(captured, "run.finished")
    assert finished["log_level"] == "info"
    assert {k: finished[k] for k in summary.as_dict()} == summary.as_dict()
    assert [e["event"] for e in captured].index("run.started") < \
        [e["event"] for e in captured].index("run.finished")
    assert all(e["event"] in EVENTS for e in captured), captured


@pytest.mark.e2e
def test_a_run_logs_its_preflight_read_back_and_calibration_as_keys_with_fields(
        tmp_path: Path, make_sandbox: Any, captured: list[EventDict]) -> None:
    server = make_sandbox("100/1s")
    data, mapping = _inputs(tmp_path, 6)
    summary = bulkpost.run(data, mapping, tmp_path / "r.csv", host=server.url,
                           access_key="demo-access-key", secret_key=SECRET, rate="100/1s")
    assert summary.exit_code == 0 and summary.posted == 6
    assert all(e["event"] in EVENTS for e in captured), captured
    assert all(e["run_id"] == summary.run_id for e in captured), captured
    assert _events(captured, "preflight.report")
    assert all(isinstance(e["detail"], str) for e in _events(captured, "preflight.report"))
    listed, = _events(captured, "preflight.fields_unmapped")
    assert (listed["log_level"], listed["activity_type"], listed["count"]) == ("debug", 201, 48)
    assert len(listed["fields"]) == 48
    assert "48 of them not mapped" in _events(captured, "preflight.report")[0]["detail"]
    assert listed["fields"][:2] == ["mx_Custom_3 (Custom 3)", "mx_Custom_4 (Custom 4)"]
    read_back, = _events(captured, "readback.stored_as_sent")
    assert read_back["rows"] == 1
    calibrated, = _events(captured, "lookup.calibrated")
    assert isinstance(calibrated["reading"], str) and calibrated["reading"]
    assert calibrated["log_level"] == "debug"  # the look-ups' vocabulary, for debugging
    finished, = _events(captured, "run.finished")
    assert {k: finished[k] for k in summary.as_dict()} == summary.as_dict()
    assert finished["posted"] == 6
    assert not [e for e in captured if e["log_level"] in ("warning", "error")], captured
