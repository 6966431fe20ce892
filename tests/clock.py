"""A virtual clock for asyncio: time advances only when every task is waiting.

``VirtualClockLoop.time()`` returns a number the loop moves forward itself: when nothing is
ready to run, instead of sleeping until the next timer it jumps the clock to it, and each
turn of the loop costs one microsecond. A test of
minutes of rate limiting runs in milliseconds and is exact. Real I/O still works (the
selector is polled without waiting), but a loop with nothing scheduled at all is a
deadlock and raises instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class _FastForwardSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("deadlock: nothing scheduled and nothing ready")
        # Every turn of the loop costs a microsecond, as on a real machine; without it a
        # timer re-armed for "now" (float rounding in a leaky bucket) would spin forever.
        self._loop.now += max(timeout, 1e-6)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        super().__init__(selector=_FastForwardSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(coro: Any) -> Any:
    """Run ``coro`` to completion on a fresh virtual-clock loop."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
