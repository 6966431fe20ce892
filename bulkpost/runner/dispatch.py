"""The queue between the feeder and the workers: one row at a time, or a batch for one
bulk endpoint.

Single-call workers take rows one by one; bulk workers take up to a batch of rows that go
to the same bulk endpoint (by lead Id, or by e-mail address). Rows that must be looked up
before they are sent again (``reconcile_first``) are never batched: they go alone. The feeder
puts a mapped batch of rows at once and waits for the queue to drain below a low-water mark
before putting the next, so it wakes once per batch, not once per row.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class JobQueue(Generic[T]):
    """A FIFO of jobs for many consumers, closed once the input is read."""

    def __init__(self, low_water: int) -> None:
        self.low_water = low_water
        self._jobs: collections.deque[T] = collections.deque()
        self._closed = False
        self._ready = asyncio.Event()  # jobs are waiting, or the queue is closed
        self._room = asyncio.Event()   # at or below the low-water mark

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: T) -> None:
        self._jobs.append(job)
        self._ready.set()

    def put_front(self, jobs: list[T]) -> None:
        """Put jobs back ahead of the others, in their order (taken out to wait)."""
        if jobs:
            self._jobs.extendleft(reversed(jobs))
            self._ready.set()

    def close(self) -> None:
        """No more jobs will come: consumers drain what is left, then get None / []."""
        self._closed = True
        self._ready.set()

    async def wait_for_room(self) -> None:
        """Return once the queue holds no more than ``low_water`` jobs."""
        while len(self._jobs) > self.low_water:
            self._room.clear()
            await self._room.wait()

    def _taken(self) -> None:
        if len(self._jobs) <= self.low_water:
            self._room.set()
        if not self._jobs and not self._closed:
            self._ready.clear()

    async def _wait(self) -> bool:
        """Wait for a job; False when the queue is closed and empty."""
        while not self._jobs:
            if self._closed:
                return False
            await self._ready.wait()
        return True

    async def get(self) -> T | None:
        """The next job, or None once the queue is closed and empty."""
        if not await self._wait():
            return None
        job = self._jobs.popleft()
        self._taken()
        return job

    async def get_batch(self, size: int, kind: Callable[[T], str | None]) -> list[T]:
        """Up to ``size`` jobs of the first waiting job's kind, in queue order; [] once
        closed and empty. A job whose kind is None goes alone."""
        if not await self._wait():
            return []
        first = self._jobs.popleft()
        batch = [first]
        wanted = kind(first)
        if wanted is not None:
            skipped: list[T] = []
            while self._jobs and len(batch) < size:
                job = self._jobs.popleft()
                (batch if kind(job) == wanted else skipped).append(job)
            self._jobs.extendleft(reversed(skipped))  # the others keep their places
        self._taken()
        return batch
