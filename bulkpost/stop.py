"""The stop signal: whether a run is stopping, and why. Everything that sends watches it.

One object replaces the callbacks that used to travel with an ``asyncio.Event``. Whoever
finds a reason to stop (a fatal answer, a rate-limit storm, a write failure, a signal)
calls :meth:`StopSignal.stop` with it; the first reason is kept. Calls, backoffs and the
feeder check :meth:`StopSignal.is_set` or await :meth:`StopSignal.wait`; the run, which
owns the tasks, listens (:meth:`StopSignal.listen`) to cancel what must not go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bulkpost.errors import BulkpostError


class StopSignal:
    """Set once: the run stops. ``reason`` is the first reason given."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason: BulkpostError | None = None
        self.asked = False  # the user asked for it (a signal): no error
        self._listeners: list[Callable[[], None]] = []

    def stop(self, reason: BulkpostError, *, asked: bool = False) -> None:
        """Stop the run for ``reason`` (kept only if it is the first); tell the listeners."""
        if self.reason is None:
            self.reason = reason
            self.asked = asked
        self._event.set()
        for listener in list(self._listeners):
            listener()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` on every :meth:`stop` (it must be quick and not raise)."""
        self._listeners.append(listener)

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()
