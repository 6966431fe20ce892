"""A run's feeder and worker tasks, and how they end.

Owns the stop of a run's tasks: a stop (a fatal answer, a signal, an unwritable results
file, a spent budget: whoever said so through the run's
:class:`~bulkpost.delivery.stop.StopSignal`) cancels the feeder and every worker whose
request is not on the wire; requests already on the wire are let finish for a bounded time
(``drain_timeout``), then cancelled. A first interrupt stops the run that way, as no error;
a second cancels every worker at once (rows on the wire stay ``unknown``). An error the
feeder or a worker raised becomes the run's stop: an input or usage problem found mid-file,
after requests went out, is an abort, so that the summary says what was done.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from bulkpost.core.summary import Summary
from bulkpost.delivery.single import Delivery
from bulkpost.delivery.stop import StopSignal
from bulkpost.errors import AbortRun, BulkpostError

log = structlog.get_logger("bulkpost")


class RunTasks:
    """The feeder and worker tasks of one run, stopped when its signal says so."""

    def __init__(self, stopping: StopSignal, summary: Summary, drain_timeout: float) -> None:
        self.stopping = stopping
        self._summary = summary
        self._drain_timeout = drain_timeout
        self.on_wire: set[asyncio.Task[Any]] = set()  # the delivery's calls on the wire
        self.workers: list[asyncio.Task[None]] = []
        self.feeder: asyncio.Task[None] | None = None
        self.interrupts = 0
        stopping.listen(self._say_why, once=True)
        stopping.listen(self._halt)

    def stop(self, error: BulkpostError, *, asked: bool = False) -> None:
        """Stop sending now; requests on the wire may finish (bounded by drain_timeout).
        ``asked``: the user asked for it (a signal), which is no error."""
        self.stopping.stop(error, asked=asked)

    def _say_why(self) -> None:
        if not self.stopping.asked:
            log.error("run.stopping", reason=str(self.stopping.reason))

    def _halt(self) -> None:
        """The run stops (whoever said so): cancel the feeder and every worker whose
        request is not on the wire."""
        if self.feeder is not None:
            self.feeder.cancel()
        for task in self.workers:
            if task not in self.on_wire:
                task.cancel()

    def interrupt(self, signame: str) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            log.warning("run.interrupted", signal=signame)
            self._summary.interrupted = True
            self.stop(AbortRun(f"interrupted by {signame}"), asked=True)
        else:
            log.warning("run.interrupted_again", signal=signame)
            for task in self.workers:
                task.cancel()

    async def until_done(self, feeder: asyncio.Task[None], delivery: Delivery) -> None:
        """Wait for the feeder and the workers to finish, or for the run to stop; then let
        requests on the wire finish, for a bounded time."""
        everything: asyncio.Future[Any] = asyncio.gather(feeder, *self.workers)
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({everything, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if everything.done():
                error = everything.exception()
                if isinstance(error, BulkpostError):
                    # An input or usage problem found mid-file, after requests went out,
                    # is an abort: the summary must say what was done.
                    sent = delivery.calls.counts.creates > 0
                    self.stop(AbortRun(str(error)) if sent and error.exit_code == 2
                              else error)
                elif error is not None and not isinstance(error, asyncio.CancelledError):
                    log.error("internal_error", exc_info=error)
                    self.stop(AbortRun(f"internal error ({type(error).__name__}: {error}); "
                                       "please report it. Rerun to resume"))
            if self.stopping.is_set():
                _done, late = await asyncio.wait(self.workers, timeout=self._drain_timeout)
                for task in late:
                    task.cancel()
        finally:
            stopped.cancel()
            for task in (feeder, *self.workers):
                task.cancel()  # no-op for the finished ones
            await asyncio.gather(feeder, *self.workers, return_exceptions=True)
