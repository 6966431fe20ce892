"""The sandbox's counters: what ``GET /_sandbox/stats`` serves and tests assert on.

Owns :class:`ServerCounts`: calls, activities created, calls refused (unauthorized, rate-limited,
rejected), calls dropped without effect while the sandbox was down, look-ups (``details`` of
them custom-field calls), faults by kind as they take effect (and by what they struck: single
creates or updates, bulk calls, look-ups), the most calls seen in any window, when the first
and the last creating call arrived, and the same for bulk calls. The gate, the endpoints and
the store share one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bulkpost.sandbox.faults import FAULT_KINDS


@dataclass
class ServerCounts:
    """What the server saw (a run counts its own side in ``DeliveryCounts`` and ``Summary``)."""

    calls: int = 0
    created: int = 0
    rate_limited: int = 0
    unauthorized: int = 0
    rejected: int = 0
    lookups: int = 0
    details: int = 0  # "Get Custom Fields of an Activity" calls (counted in lookups too)
    max_in_window: int = 0
    accepted: int = 0  # single calls the window let through (creates, updates, look-ups)
    first_accepted: float | None = None  # arrival (time.time()) of the first and last
    last_accepted: float | None = None  # of them: the span the allowance was used over
    updated: int = 0  # activities updated ("Update an Activity", or a bulk update's items)
    bulk_calls: int = 0  # bulk creates and bulk updates
    bulk_rate_limited: int = 0
    max_bulk_in_window: int = 0
    dropped: int = 0  # calls without effect: the sandbox was down (counted in calls too)
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    faults_on: dict[str, dict[str, int]] = field(default_factory=lambda: {
        on: dict.fromkeys(FAULT_KINDS, 0) for on in ("single", "bulk", "lookups")})
    first_created: float | None = None  # arrival (time.time()) of the first and last
    last_created: float | None = None   # call that created an activity
    second_created: float | None = None  # and of the second (after a run's first check)

    def as_dict(self) -> dict[str, Any]:
        """The counters as plain data (``faults`` and ``faults_on`` copied)."""
        return asdict(self)
