"""The run's two rate limits, single calls and bulk calls: as given, or learnt and kept.

A limit given (``--rate``, ``--bulk-rate``) is exactly that: the ceiling, never raised or
lowered by what the answers say (the run's share of it still yields to another client on
the account: :mod:`bulkpost.core.allowance`). A limit not given is learnt: it starts at what
an earlier run learnt for this host and account, else at the documented maximum, and the
answers teach it the plan's limit. What a run learnt is kept for the runs after it
(:mod:`bulkpost.storage.kept`: ``RESULTS.learnt.json`` beside the results file, and the history),
under the host and a digest of the access key (never the key). ``--rate auto`` learns
afresh, ignoring what was kept. A share (``--share``) takes a fraction of either limit
(:mod:`bulkpost.core.share`): the limits are given the ``fraction`` callable to ask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from bulkpost.core.allowance import (
    DOCUMENTED_BULK_MAXIMUM,
    DOCUMENTED_MAXIMUM,
    Allowance,
    RateSpec,
    parse_rate,
)
from bulkpost.core.credentials import Credentials
from bulkpost.core.options import RunOptions
from bulkpost.delivery.ratelimit import DEFAULT_MARGIN, RateLimit
from bulkpost.storage.history.database import History
from bulkpost.storage.kept import keep, recall

log = structlog.get_logger("bulkpost")
KINDS = ("single", "bulk")


class RateSetting(NamedTuple):
    """What a ``--rate`` (or ``--bulk-rate``) as given means."""

    start: RateSpec  # the rate to start at: the one given, else the documented maximum
    learn: bool  # not given: learnt from the answers, starting at ``start`` or where kept
    forget_learnt: bool  # ``auto``: learnt afresh, ignoring what earlier runs learnt


def rate_setting(given: str | RateSpec | None, documented: RateSpec) -> RateSetting:
    """What a rate as given means. Not given (None): learn, starting where an earlier run
    left it, else at ``documented``; ``"auto"``: learn afresh; N/Ts: exactly that."""
    if given is None:
        return RateSetting(documented, learn=True, forget_learnt=False)
    if isinstance(given, str) and given.strip().lower() == "auto":
        return RateSetting(documented, learn=True, forget_learnt=True)
    return RateSetting(parse_rate(given) if isinstance(given, str) else given, learn=False,
                       forget_learnt=False)


def account_tag(credentials: Credentials | None) -> str:
    """A digest naming the account of the keys in files, without the keys."""
    if credentials is None:
        return ""
    return hashlib.sha256(credentials.access_key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Learnt:
    """A limit the answers proved, as kept."""

    spec: RateSpec
    run_id: str
    confirmed: bool = True  # a 429 met it; else the account proved it and a run climbs on


def _name(host: str, account: str) -> str:
    return f"limits {host} {account}"


def _accept(host: str, account: str) -> Callable[[dict[str, Any]], dict[str, Learnt] | None]:
    def accept(data: dict[str, Any]) -> dict[str, Learnt] | None:
        if data.get("host") != host or data.get("account") != account:
            return None
        found: dict[str, Learnt] = {}
        for kind in KINDS:
            item = data.get(kind)
            if not isinstance(item, dict):
                continue
            calls, period = item.get("calls"), item.get("period")
            if (isinstance(calls, int) and not isinstance(calls, bool) and calls >= 1
                    and isinstance(period, int | float) and period > 0):
                found[kind] = Learnt(RateSpec(calls, float(period)),
                                     str(item.get("run_id", "")),
                                     item.get("confirmed", True) is not False)
        return found or None
    return accept


def recalled(results: Path, host: str, credentials: Credentials | None,
             history: History | None = None) -> dict[str, Learnt]:
    """The limits an earlier run learnt for this host and account, by kind."""
    if credentials is None:
        return {}
    account = account_tag(credentials)
    return recall(results, "limits", _name(host, account), history,
                  _accept(host, account)) or {}


def make_limit(given: RateSpec, learning: bool, earlier: Learnt | None,
               documented: RateSpec, margin: float | None,
               fraction: Callable[[float], float] | None = None) -> RateLimit:
    """A limit exactly as given; or, learning, one that starts where an earlier run left
    it (else at ``documented``) and learns from the answers. ``fraction``: the share of it
    the run takes (None: all)."""
    if not learning:
        return RateLimit(given, margin, fraction=fraction)
    start = earlier.spec if earlier is not None else documented
    margin = DEFAULT_MARGIN * start.period if margin is None else margin
    return RateLimit(start, margin, Allowance(start, learning=True, jitter=margin,
                                              learnt=earlier is not None and earlier.confirmed),
                     fraction=fraction)


class RunLimits:
    """The run's limit for single calls and for bulk calls, and where each came from."""

    def __init__(self, options: RunOptions, history: History | None,
                 fraction: Callable[[float], float] | None = None) -> None:
        self._options = options
        self._history = history
        self.earlier = {} if options.forget_learnt else recalled(
            options.results, options.host, options.credentials, history)
        self.single = make_limit(options.rate, options.learn_rate, self.earlier.get("single"),
                                 DOCUMENTED_MAXIMUM, options.rate_margin, fraction)
        self.bulk = make_limit(options.bulk_rate, options.learn_bulk_rate,
                               self.earlier.get("bulk"), DOCUMENTED_BULK_MAXIMUM,
                               options.rate_margin, fraction)

    def source(self, kind: str) -> str:
        """Where the limit in force came from: given, learnt (by this run, met by a 429),
        proven (this run climbed to it and has not met the window yet), remembered (what
        an earlier run learnt or proved), or the documented maximum (nothing learnt)."""
        limit = self.single if kind == "single" else self.bulk
        allowance = limit.allowance
        if not allowance.learning:
            return "given"
        earlier = self.earlier.get(kind)
        if earlier is not None and earlier.spec.calls == allowance.ceiling \
                and earlier.confirmed <= allowance.learnt:
            return "remembered"
        if allowance.learnt:
            return "learnt"
        documented = DOCUMENTED_MAXIMUM if kind == "single" else DOCUMENTED_BULK_MAXIMUM
        return "documented maximum" if allowance.ceiling == documented.calls else "proven"

    def ceiling(self, kind: str) -> RateSpec:
        limit = self.single if kind == "single" else self.bulk
        return RateSpec(limit.allowance.ceiling, limit.allowance.period)

    def _worth_keeping(self, kind: str, run_id: str) -> Learnt | None:
        """What this run learnt of ``kind``'s limit that a later run may start at: a limit a
        429 confirmed (not while the run took only a share: those 429s may be another
        client's), or one it climbed to without a refusal, as far as is beyond doubt (our
        clock may put one call too many in a window: a later run climbs on from there)."""
        allowance = (self.single if kind == "single" else self.bulk).allowance
        source = self.source(kind)
        if source == "learnt" and not allowance.learnt_held:
            return Learnt(self.ceiling(kind), run_id, True)
        calls = min(allowance.ceiling, allowance.surely)
        if source == "proven" and calls >= 1:
            return Learnt(RateSpec(calls, allowance.period), run_id, False)
        return None

    def keep(self, run_id: str) -> None:
        """Keep what this run learnt (with what earlier runs learnt of the other kind)."""
        opts = self._options
        learnt = {kind: kept for kind in KINDS
                  if (kept := self._worth_keeping(kind, run_id)) is not None}
        # An earlier run's limit that a probe proved too low, and not learnt again since.
        outgrown = {kind for kind in KINDS if kind in self.earlier and kind not in learnt
                    and self.source(kind) in ("documented maximum", "proven")}
        if not (learnt or outgrown) or opts.credentials is None:
            return
        account = account_tag(opts.credentials)
        document: dict[str, Any] = {"host": opts.host, "account": account}
        for kind in KINDS:
            item = learnt.get(kind) or (None if kind in outgrown else self.earlier.get(kind))
            if item is not None:
                document[kind] = {"calls": item.spec.calls, "period": item.spec.period,
                                  "run_id": item.run_id, "confirmed": item.confirmed}
        failed = keep(opts.results, "limits", _name(opts.host, account), document,
                      self._history)
        if failed is not None:
            log.warning("rate_limit.not_saved", reason=failed)
