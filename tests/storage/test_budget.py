"""A day's budget of calls, counted in the history per account day, and the account's
clock it is read on. Times are passed by hand; the history is a real SQLite file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bulkpost.core.share import ShareSchedule
from bulkpost.errors import BudgetSpent, UsageError
from bulkpost.onboarding.account_zone import (
    AccountClock,
    given_zone,
    remember_zone,
    remembered_zone,
    share_fraction,
    zone_answered,
)
from bulkpost.storage.budget import BLOCK, DailyBudget, meta_name
from bulkpost.storage.history.database import History

KOLKATA = ZoneInfo("Asia/Kolkata")


async def spend(budget: DailyBudget, calls: int) -> int:
    """Spend up to ``calls``; how many the budget allowed."""
    allowed = 0
    for _ in range(calls):
        allowed += await budget.spend()
    return allowed


def test_the_budget_allows_n_calls_a_day_across_runs(tmp_path: Path) -> None:
    now = [datetime(2026, 3, 2, 10, 0, tzinfo=UTC)]  # 15:30 in Kolkata
    with History(tmp_path / "h.db", "run-1").open() as history:
        budget = DailyBudget(25, KOLKATA, history, "acct", clock=lambda: now[0])
        assert asyncio.run(spend(budget, 13)) == 13
        # Claimed a block ahead: a kill -9 now would count at most BLOCK - 1 calls more.
        claimed = int(history.meta(meta_name("acct", budget.day)) or 0)
        assert 13 <= claimed <= 13 + BLOCK - 1
        asyncio.run(budget.close())
        assert history.meta(meta_name("acct", budget.day)) == "13"
    with History(tmp_path / "h.db", "run-2").open() as history:
        later = DailyBudget(25, KOLKATA, history, "acct", clock=lambda: now[0])
        assert later.spent == 13 and later.left == 12
        assert asyncio.run(spend(later, 20)) == 12 and later.left == 0
        error = later.spent_error()
        assert isinstance(error, BudgetSpent) and error.exit_code == 4
        assert "2026-03-03 00:00 Asia/Kolkata" in str(error)
        # The account's midnight (18:30 UTC): a new day, a new budget.
        now[0] = datetime(2026, 3, 2, 18, 30, tzinfo=UTC)
        assert later.left == 25 and asyncio.run(spend(later, 3)) == 3
        asyncio.run(later.close())
        assert later.as_dict()["day"] == "2026-03-03"
    with History(tmp_path / "h.db", "run-3").open() as history:
        rows = history.db.execute("SELECT name, value FROM meta WHERE name LIKE "
                                  "'daily_calls %'").fetchall()
        assert rows == [("daily_calls acct 2026-03-03", "3")]  # the day before let go


def test_without_a_history_the_budget_is_the_run_s_own() -> None:
    budget = DailyBudget(3, ZoneInfo("UTC"), None, "acct")
    assert asyncio.run(spend(budget, 5)) == 3
    assert budget.as_dict()["calls_today"] == 3 and budget.as_dict()["daily_calls"] == 3


def test_accounts_have_budgets_of_their_own(tmp_path: Path) -> None:
    with History(tmp_path / "h.db", "run-1").open() as history:
        one = DailyBudget(5, KOLKATA, history, "one")
        assert asyncio.run(spend(one, 5)) == 5
        asyncio.run(one.close())
        other = DailyBudget(5, KOLKATA, history, "other")
        assert other.left == 5


@pytest.mark.parametrize(("answered", "zone"), [
    ("Asia/Kolkata", "Asia/Kolkata"), ("India Standard Time", "Asia/Kolkata"),
    ("UTC", "UTC"), (" Europe/London ", "Europe/London"),
])
def test_the_account_s_zone_is_an_iana_name_or_a_windows_name_known_for_certain(
        answered: str, zone: str) -> None:
    assert zone_answered({"TimeZone": answered}).key == zone


@pytest.mark.parametrize("answered", ["(UTC+05:30) Chennai, Kolkata, Mumbai", "IST", "",
                                      None, "../etc/passwd", "Mountain Standard Time"])
def test_a_zone_that_cannot_be_read_for_certain_fails_closed(answered: str | None) -> None:
    with pytest.raises(UsageError, match="--timezone"):
        zone_answered({"TimeZone": answered})


def test_timezone_given_must_be_an_iana_name() -> None:
    assert given_zone("America/Sao_Paulo").key == "America/Sao_Paulo"
    with pytest.raises(UsageError, match="not a time zone name"):
        given_zone("India Standard Time")


def test_the_zone_the_account_answered_is_kept(tmp_path: Path) -> None:
    with History(tmp_path / "h.db", "run-1").open() as history:
        assert remembered_zone(history, "acct") is None
        remember_zone(history, "acct", KOLKATA)
        history.commit(history.take())
        assert remembered_zone(history, "acct") == KOLKATA
        assert remembered_zone(history, "other") is None


def test_a_schedule_is_read_on_the_account_s_clock() -> None:
    now = [datetime(2026, 3, 2, 3, 0, tzinfo=UTC)]  # 08:30 in Kolkata
    clock = AccountClock(None, clock=lambda: now[0])
    fraction = share_fraction(ShareSchedule.parse("09:00-19:00=40%,100%"), clock)
    assert fraction(0.0) == 0.4  # the zone not known yet: the smallest share
    clock.zone = KOLKATA
    assert fraction(0.0) == 1.0
    now[0] += timedelta(minutes=30)
    assert fraction(0.0) == 0.4
    assert share_fraction(ShareSchedule.parse("60%"), AccountClock())(0.0) == 0.6


def test_midnight_while_a_claim_is_written_leaves_the_new_day_its_own_count(
        tmp_path: Path) -> None:
    """A claim of the day before is written while the account's midnight passes: the new
    day is not taken for claimed by it (its calls claim their own, committed before they
    leave), and the old day's late write deletes no later day's count."""
    now = [datetime(2026, 3, 2, 18, 29, 59, tzinfo=UTC)]  # 23:59:59 in Kolkata

    async def scenario(history: History) -> tuple[int, int]:
        budget = DailyBudget(100, KOLKATA, history, "acct", clock=lambda: now[0])
        first = asyncio.create_task(budget.spend())  # claims a block of the old day
        await asyncio.sleep(0)  # its claim is being written (in a thread)...
        now[0] = datetime(2026, 3, 2, 18, 30, 1, tzinfo=UTC)  # ...as midnight passes
        second = asyncio.create_task(budget.spend())  # the new day's first call
        assert await first and await second
        stored = int(history.meta(meta_name("acct", budget.day)) or 0)
        return budget.spent, stored

    with History(tmp_path / "h.db", "run-1").open() as history:
        spent, stored = asyncio.run(scenario(history))
        assert spent == 1 and stored >= 1  # the new day's claim covers its call
