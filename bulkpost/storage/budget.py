"""A day's budget of API calls (``--daily-calls N``), counted from the account's midnight.

Every call a run makes under the rate limit (creates, updates, look-ups, read-backs) spends
one: :meth:`DailyBudget.spend` is asked before a call leaves
(:class:`bulkpost.delivery.calls.ApiCalls`)
and says no once N calls were spent since the account's midnight, in its time zone
(:mod:`bulkpost.onboarding.account_zone`). The run then stops cleanly, as a signal stops it, and
exits
4 (:class:`~bulkpost.errors.BudgetSpent`).

With a history (the account's own by default) the count is across runs on the account: the
history's ``meta`` table holds the calls spent per account and account day
(``daily_calls ACCOUNT DAY``, the account as a digest of its key). The run claims calls
there in blocks of :data:`BLOCK` before spending them, each claim committed (synchronous
SQLite) before the first call of its block leaves, and writes the exact count when it ends.
So the count never falls short of the calls made, and a ``kill -9`` overstates it by at
most ``BLOCK - 1`` calls (budget lost for that day, never exceeded). Without a history, the
count is this run's calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from bulkpost.errors import BudgetSpent
from bulkpost.storage.history.database import History

BLOCK = 10  # calls claimed in the history at a time: what a kill -9 may overstate by
_META = "daily_calls"
_UPSERT = ("INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
           "SET value = excluded.value")


def meta_name(account: str, day: date) -> str:
    """The history's ``meta`` row holding ``account``'s calls of ``day``."""
    return f"{_META} {account} {day.isoformat()}"


class DailyBudget:
    """At most ``calls`` API calls per account day; ``clock`` gives the time (UTC)."""

    def __init__(self, calls: int, zone: ZoneInfo, history: History | None, account: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.calls = calls
        self.zone = zone
        self._history = history
        self._account = account
        self._clock = clock
        self._lock = asyncio.Lock()
        self.day = self._today()
        self.spent = self._stored(self.day)  # calls spent on the account's day
        self._claimed = self.spent  # calls the history counts as spent (claimed ahead)

    def _today(self) -> date:
        return self._clock().astimezone(self.zone).date()

    def _stored(self, day: date) -> int:
        if self._history is None:
            return 0
        value = self._history.meta(meta_name(self._account, day))
        return int(value) if value is not None and value.isdigit() else 0

    def _roll(self) -> None:
        """A new account day: its own count (another run may have spent some already)."""
        today = self._today()
        if today != self.day:
            self.day = today
            self.spent = self._claimed = self._stored(today)

    @property
    def left(self) -> int:
        self._roll()
        return max(0, self.calls - self.spent)

    def renews(self) -> datetime:
        """The account's next midnight (aware, in the account's zone)."""
        now = self._clock().astimezone(self.zone)
        tomorrow = now.date() + timedelta(days=1)
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self.zone)

    async def spent_before(self, calls: int) -> None:
        """Count ``calls`` made before the budget was known (reading the account's zone)."""
        for _ in range(calls):
            if not await self.spend():
                return

    async def spend(self) -> bool:
        """One call is about to leave: True when the budget allows it (it is counted), False
        when the day's budget is spent (nothing is counted)."""
        self._roll()
        if self.spent >= self.calls:
            return False
        self.spent += 1
        mine, day = self.spent, self.day
        while mine > self._claimed and day == self.day:
            async with self._lock:
                if mine > self._claimed and day == self.day:
                    claim = min(self.calls, max(mine, self.spent) + BLOCK - 1)
                    await self._store(claim, day)
                    if day == self.day:  # a new day meanwhile counts from its own claims
                        self._claimed = max(self._claimed, claim)
        return True

    async def _store(self, count: int, day: date | None = None) -> None:
        if self._history is None:
            return
        name = meta_name(self._account, day or self.day)
        batch = [(_UPSERT, (name, str(count))),
                 # Earlier days of this account: no longer needed (never a later day's: a
                 # claim of the day before may be written after midnight).
                 ("DELETE FROM meta WHERE name LIKE ? AND name < ?",
                  (f"{_META} {self._account} %", name))]
        await asyncio.to_thread(self._history.commit, batch)

    async def close(self) -> None:
        """The run ends: the history holds the calls truly spent, not the claim ahead."""
        if self._history is not None and self._claimed != self.spent:
            await self._store(self.spent)
            self._claimed = self.spent

    def when_renewed(self) -> str:
        """The account's next midnight, in its zone and in local time, in words."""
        renews = self.renews()
        local = renews.astimezone()
        return (f"{renews:%Y-%m-%d %H:%M} {self.zone.key} "
                f"({local:%Y-%m-%d %H:%M} {local.tzname() or 'local time'})")

    def spent_error(self) -> BudgetSpent:
        return BudgetSpent(f"the day's budget of {self.calls:,} calls (--daily-calls) is "
                           f"spent: nothing is wrong; it renews at the account's midnight, "
                           f"{self.when_renewed()}")

    def as_dict(self) -> dict[str, object]:
        """For the summary: the calls spent on the account's day and the budget."""
        return {"calls_today": self.spent, "daily_calls": self.calls,
                "day": self.day.isoformat(), "renews": self.renews().isoformat()}
