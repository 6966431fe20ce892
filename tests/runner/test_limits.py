"""The run's rate limits against the sandbox: learnt when not given, kept, used by the next run.

The learning itself is exercised on a virtual clock (``tests/core/test_allowance.py``); here the
real CLI meets a sandbox whose account allows fewer calls than the documented maximum, and
what it learnt must reach the next run, beside the results file and through the history.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bulkpost.core.allowance import RateSpec
from bulkpost.core.credentials import Credentials
from bulkpost.core.mapping import parse_mapping
from bulkpost.core.options import RunOptions
from bulkpost.runner.limits import Learnt, RunLimits, account_tag, rate_setting, recalled
from bulkpost.storage.history.database import History
from tests.conftest import run_cli_process, write_csv
from tests.storage.test_history import HEADER, MAPPING

LEADS = ["3c6ef372-fe94-4f3a-a54f-f53a5f1d36f1", "9e107d9d-3721-4b1a-a1b9-0d3a5f2c7e11"]


def _orders(path: Path, first: int, count: int) -> Path:
    return write_csv(path, HEADER, [[f"ORD-{n:05d}", LEADS[n % 2], f"order {n}",
                                     f"2025-06-{n % 28 + 1:02d} 10:00:00", f"{n}.50"]
                                    for n in range(first, first + count)])


def _run(tmp_path: Path, url: str, data: Path, results: Path, *extra: str) -> Any:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    # Each run in a process of its own: the windows and the 429s are timed at the server,
    # which shares no interpreter (and no GIL) with the client.
    return run_cli_process("run", data, "--mapping", mapping, "--results", results,
                   "--history", tmp_path / "history.db", "--host", url, "--timeout", "5",
                   "--backoff", "0.05", "--log-format", "json", *extra)


def _events(stderr: str, event: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
    return [line for line in lines if line["event"] == event]


# Every form real accounts were seen to answer rate limiting in (the sandbox's
# --rate-limit-answer): the documented 429, a 403 with the sentence in JSON and without an
# ExceptionType, the MX body under a 200, and a 403 whose body is the sentence alone.
ANSWERS = ("429", "403", "200", "403-plain")


@pytest.mark.e2e
@pytest.mark.parametrize("answer", ANSWERS)
def test_a_limit_learnt_is_kept_and_the_next_run_starts_at_it_without_a_429(
        tmp_path: Path, make_sandbox: Any, answer: str) -> None:
    server = make_sandbox("10/5s", latency=(0.02, 0.1), rate_limit_answer=answer)
    first = _run(tmp_path, server.url, _orders(tmp_path / "n1.csv", 1, 12),
                 tmp_path / "n1.results.csv")
    assert first.code == 0, first.stderr
    assert first.summary["posted"] == 12
    assert first.summary["rate"] == {"single": "10/5s (learnt)"}
    learnt = _events(first.stderr, "rate_limit.learnt")
    # The text is read alike in every form: it corroborates what was counted.
    assert [(e["limit"], e["counted"], e["said"]) for e in learnt] == [("10/5s", 10, 10)]
    refused = server.stats()["rate_limited"]
    assert 1 <= refused <= 5 and server.stats()["max_in_window"] <= 10 + refused
    assert first.summary["rate_limited"] == refused
    assert len(server.ledger()) == 12  # each row once: a refusal created nothing
    if answer != "429":
        return  # what follows meets no refusal: the form changes nothing of it
    # One file beside the results file keeps what was learnt, the look-ups' calibration too.
    assert sorted(p.name for p in tmp_path.glob("n1.*")) == [
        "n1.csv", "n1.results.csv", "n1.results.csv.learnt.json"]
    kept = json.loads((tmp_path / "n1.results.csv.learnt.json").read_text())["limits"]
    assert kept["single"]["calls"] == 10 and kept["single"]["period"] == 5.0
    assert "demo-access-key" not in json.dumps(kept)  # a digest names the account

    # The next night (the account's window long empty): another results file, the same
    # history. It starts at 10/5s.
    time.sleep(5.2)
    second = _run(tmp_path, server.url, _orders(tmp_path / "n2.csv", 13, 10),
                  tmp_path / "n2.results.csv")
    assert second.code == 0, second.stderr
    assert second.summary["posted"] == 10
    assert second.summary["rate"] == {"single": "10/5s (remembered)"}
    assert server.stats()["rate_limited"] == refused  # not one more

    # --rate auto forgets it (a plan changed), and a given rate means exactly that.
    third = _run(tmp_path, server.url, _orders(tmp_path / "n3.csv", 23, 2),
                 tmp_path / "n3.results.csv", "--rate", "auto")
    assert third.summary["rate"] == {"single": "25/5s (documented maximum)"}
    fourth = _run(tmp_path, server.url, _orders(tmp_path / "n4.csv", 25, 2),
                  tmp_path / "n4.results.csv", "--rate", "8/5s")
    assert fourth.summary["rate"] == {"single": "8/5s (given)"}
    lessons = tmp_path / "n4.results.csv.learnt.json"
    assert not lessons.exists() or "limits" not in json.loads(lessons.read_text())


@pytest.mark.e2e
def test_a_plan_above_the_documented_maximum_is_climbed_to_learnt_and_kept(
        tmp_path: Path, make_sandbox: Any) -> None:
    """Some accounts allow more than 25 per 5 s. Without --rate, the run uses the whole
    documented maximum for a window, then climbs one call over what the account proved
    until the window refuses one call, and the next run starts there."""
    server = make_sandbox("34/5s", latency=(0.02, 0.05))
    first = _run(tmp_path, server.url, _orders(tmp_path / "n1.csv", 1, 62),
                 tmp_path / "n1.results.csv")
    assert first.code == 0, first.stderr
    assert first.summary["posted"] == 62 and len(server.ledger()) == 62
    assert first.summary["rate"] == {"single": "34/5s (learnt)"}
    stats = server.stats()
    assert stats["rate_limited"] == first.summary["rate_limited"] == 1  # the probe's one
    assert stats["max_in_window"] == 35  # 34 allowed and the one over it, never more
    assert [(e["limit"], e["said"]) for e in _events(first.stderr, "rate_limit.learnt")] \
        == [("34/5s", 34)]
    kept = json.loads((tmp_path / "n1.results.csv.learnt.json").read_text())["limits"]
    assert kept["single"]["calls"] == 34 and kept["single"]["confirmed"] is True
    time.sleep(5.2)  # the next night: the window empty
    second = _run(tmp_path, server.url, _orders(tmp_path / "n2.csv", 63, 8),
                  tmp_path / "n2.results.csv")
    assert second.code == 0, second.stderr
    assert second.summary["rate"] == {"single": "34/5s (remembered)"}
    assert server.stats()["rate_limited"] == 1  # not one more


@pytest.mark.e2e
@pytest.mark.parametrize("answer", ["429", "403-plain"])
def test_the_bulk_limit_is_learnt_beside_the_single_one(tmp_path: Path, make_sandbox: Any,
                                                        answer: str) -> None:
    server = make_sandbox("100/1s", bulk_rate=RateSpec(1, 5.0), latency=(0.02, 0.1),
                          rate_limit_answer=answer)
    done = _run(tmp_path, server.url, _orders(tmp_path / "n1.csv", 1, 51),
                tmp_path / "results.csv", "--mode", "bulk", "--rate", "100/1s")
    assert done.code == 0, done.stderr
    assert done.summary["posted"] == 51
    assert done.summary["rate"] == {"bulk": "1/5s (learnt)"}
    assert server.stats()["bulk_rate_limited"] <= 3
    kept = json.loads((tmp_path / "results.csv.learnt.json").read_text())["limits"]
    assert kept["bulk"]["calls"] == 1 and "single" not in kept


# -- what is kept, and for whom ------------------------------------------------------------
def _recalled(tmp_path: Path, host: str, access: str,
              history: History | None = None) -> dict[str, Learnt]:
    return recalled(tmp_path / "results.csv", host, Credentials(access, "secret"), history)


def test_a_kept_limit_is_recalled_only_for_its_host_and_account(tmp_path: Path) -> None:
    document = {"host": "https://api-in21.leadsquared.com",
                "account": account_tag(Credentials("key-1", "s")),
                "single": {"calls": 10, "period": 5.0, "run_id": "r1"},
                "bulk": {"calls": "one", "period": 5.0}}  # not a number: ignored
    # As an earlier version kept it (a file per kind, still read), and as kept now.
    for path, text in ((tmp_path / "results.csv.limits.json", json.dumps(document)),
                       (tmp_path / "results.csv.learnt.json",
                        json.dumps({"limits": document, "calibration": {}}))):
        path.write_text(text)
        assert _recalled(tmp_path, "https://api-in21.leadsquared.com", "key-1") == {
            "single": Learnt(RateSpec(10, 5.0), "r1")}
        assert _recalled(tmp_path, "https://api.leadsquared.com", "key-1") == {}
        assert _recalled(tmp_path, "https://api-in21.leadsquared.com", "key-2") == {}
        path.unlink()


def test_a_kept_limit_is_found_in_the_history_when_the_results_file_has_none(
        tmp_path: Path) -> None:
    host, account = "https://api.leadsquared.com", account_tag(Credentials("key-1", "s"))
    history = History(tmp_path / "history.db", "run-1").open()
    try:
        history.set_meta(f"limits {host} {account}", json.dumps(
            {"host": host, "account": account, "bulk": {"calls": 5, "period": 5.0}}))
        history.commit(history.take())
        assert _recalled(tmp_path, host, "key-1", history) == {
            "bulk": Learnt(RateSpec(5, 5.0), "")}
    finally:
        history.close()


@pytest.mark.parametrize(("outgrown_to", "kept_single"), [
    (23, {"calls": 23, "confirmed": False}),  # proven, not met by a 429: the next run climbs
    (25, None),  # the documented maximum again: nothing to keep
])
def test_a_kept_limit_a_probe_outgrew_is_replaced_by_what_the_account_proved(
        tmp_path: Path, outgrown_to: int, kept_single: dict[str, Any] | None) -> None:
    host, credentials = "https://api.leadsquared.com", Credentials("key-1", "s")
    kept = tmp_path / "results.csv.limits.json"
    kept.write_text(json.dumps({"host": host, "account": account_tag(credentials),
                                "single": {"calls": 20, "period": 5.0, "run_id": "r1"},
                                "bulk": {"calls": 1, "period": 5.0, "run_id": "r1"}}))
    options = RunOptions(input=tmp_path / "in.csv", mapping=parse_mapping({"activity": {
        "event": 201, "lead_id_column": "lead"}}, "m"), results=tmp_path / "results.csv",
        host=host, credentials=credentials, learn_rate=True, learn_bulk_rate=True)
    limits = RunLimits(options, None)
    assert limits.source("single") == "remembered" and limits.ceiling("single").calls == 20
    assert limits.single.allowance.learnt  # kept without "confirmed": met by a 429
    allowance = limits.single.allowance
    # What a successful probe does: the account proved it, beyond doubt.
    allowance.ceiling, allowance.learnt = outgrown_to, False
    allowance.surely = allowance.proven = outgrown_to
    (tmp_path / "results.csv.learnt.json").write_text(json.dumps({"calibration": {"x": 1}}))
    limits.keep("r2")
    # Kept in the one file, beside its other lessons; the earlier version's file is gone.
    lessons = json.loads((tmp_path / "results.csv.learnt.json").read_text())
    document = lessons["limits"]
    single = document.get("single")
    got = None if single is None else {k: single[k] for k in ("calls", "confirmed")}
    assert got == kept_single
    assert document["bulk"]["calls"] == 1
    assert lessons["calibration"] == {"x": 1} and not kept.exists()
    if kept_single is not None:  # the next run starts at it, and climbs on
        again = RunLimits(options, None)
        assert again.ceiling("single").calls == 23 and not again.single.allowance.learnt
        assert again.source("single") == "remembered"


def test_a_limit_learnt_under_a_share_is_not_kept(tmp_path: Path) -> None:
    host, credentials = "https://api.leadsquared.com", Credentials("key-1", "s")
    options = RunOptions(input=tmp_path / "in.csv", mapping=parse_mapping({"activity": {
        "event": 201, "lead_id_column": "lead"}}, "m"), results=tmp_path / "results.csv",
        host=host, credentials=credentials, learn_rate=True)
    limits = RunLimits(options, None)
    allowance = limits.single.allowance
    allowance.ceiling, allowance.learnt, allowance.learnt_held = 15, True, True
    limits.keep("r1")
    assert not (tmp_path / "results.csv.learnt.json").exists()
    allowance.learnt_held = False  # learnt while taking the whole limit: kept
    limits.keep("r1")
    kept = json.loads((tmp_path / "results.csv.learnt.json").read_text())["limits"]
    assert kept["single"]["calls"] == 15 and kept["single"]["confirmed"] is True


@pytest.mark.parametrize(("given", "meant"), [
    (None, (RateSpec(25, 5.0), True, False)), ("auto", (RateSpec(25, 5.0), True, True)),
    ("10/5s", (RateSpec(10, 5.0), False, False)),
    (RateSpec(2, 5.0), (RateSpec(2, 5.0), False, False)),
])
def test_what_a_rate_as_given_means(given: str | RateSpec | None,
                                    meant: tuple[RateSpec, bool, bool]) -> None:
    assert rate_setting(given, RateSpec(25, 5.0)) == meant
