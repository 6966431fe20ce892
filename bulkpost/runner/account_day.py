"""The account's day for a run: its clock, and ``--daily-calls``' budget started on it.

Owns reading the account's clock before the first other call when a ``--share`` schedule
or a daily budget needs it (``--timezone``'s zone, else the one the history remembers for
the account, else the one the account answers, then remembered: a dry run reads it only for
a schedule's hours and spends no budget), starting the day's budget with the calls spent
already, and closing the budget into the run's summary. A zone that cannot be had, or a
budget spent before the first row, stops the run through its stop signal.
"""

from __future__ import annotations

import structlog

from bulkpost.core.options import RunOptions
from bulkpost.core.summary import Summary
from bulkpost.delivery.calls import Stopped
from bulkpost.delivery.client import LeadSquaredClient
from bulkpost.delivery.single import Delivery
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import ResultsWriteError, UsageError
from bulkpost.onboarding.account_zone import (
    AccountClock,
    ask_zone,
    given_zone,
    remember_zone,
    remembered_zone,
)
from bulkpost.runner.limits import account_tag
from bulkpost.storage.budget import DailyBudget
from bulkpost.storage.history.database import History

log = structlog.get_logger("bulkpost")


class AccountDay:
    """A run's account clock and, with ``--daily-calls``, the day's budget on it."""

    def __init__(self, options: RunOptions) -> None:
        self._options = options
        # The account's clock: --timezone's zone, else the account's, read before sending.
        self.clock = AccountClock(given_zone(options.timezone) if options.timezone else None)
        self.budget: DailyBudget | None = None  # --daily-calls, once the clock is known

    async def begin(self, delivery: Delivery, client: LeadSquaredClient,
                    history: History | None, stopping: StopSignal) -> bool:
        """Read the account's clock, when a schedule or a budget needs it, and start the day's
        budget. False when the run stops here (the zone cannot be had, or the budget is
        spent: the stop signal says which)."""
        opts = self._options
        assert opts.credentials is not None
        account = account_tag(opts.credentials)
        # A dry run reads the zone only for a schedule's hours (its estimate follows them);
        # it spends no budget.
        wanted = (opts.share is not None and opts.share.timed) if opts.dry_run \
            else opts.needs_zone
        if wanted and self.clock.zone is None:
            zone = remembered_zone(history, account)
            if zone is None:
                try:
                    zone = await ask_zone(delivery.calls, client,
                                          "--share's hours and --daily-calls' day")
                except Stopped:
                    return False
                except UsageError as exc:
                    stopping.stop(exc)
                    return False
                remember_zone(history, account, zone)
            self.clock.zone = zone
        if self.clock.zone is not None:
            log.info("account.zone", zone=self.clock.zone.key, given=bool(opts.timezone))
        if opts.daily_calls is not None and self.clock.zone is not None and not opts.dry_run:
            self.budget = DailyBudget(opts.daily_calls, self.clock.zone, history, account,
                                      clock=self.clock.utc)
            await self.budget.spent_before(delivery.calls.counts.calls)
            delivery.calls.budget = self.budget
            if not self.budget.left:
                stopping.stop(self.budget.spent_error(), asked=True)
                return False
        return True

    async def close(self, summary: Summary) -> None:
        """Save the day's budget (a failure is logged) and put it in the summary."""
        if self.budget is not None:
            try:
                await self.budget.close()
            except ResultsWriteError as exc:
                log.error("budget.not_saved", reason=str(exc))
            summary.budget = self.budget.as_dict()
            summary.budget_renews = self.budget.when_renewed()
