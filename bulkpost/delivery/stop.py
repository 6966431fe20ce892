"""The stop signal: whether a run is stopping, and why. Everything that sends watches it.

One object replaces the callbacks that used to travel with an ``asyncio.Event``. Whoever
finds a reason to stop (a fatal answer, a rate-limit storm, a write failure, a signal)
calls :meth:`StopSignal.stop` with it; the first reason is kept. Calls, backoffs and the
feeder check :meth:`StopSignal.is_set` or await :meth:`StopSignal.wait`; the run, which
owns the tasks, listens (:meth:`StopSignal.listen`) to cancel what must not go on.
:func:`signals_handled` turns SIGINT and SIGTERM into a call of the caller's choice: through
the loop's own signal handlers where it has them (Linux, macOS), else (Windows, whose loops
have none) through Python's :func:`signal.signal`, handing the call to the loop
(:func:`signals_passed_to`), so Ctrl-C stops a run the same way everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from bulkpost.errors import BulkpostError


class StopSignal:
    """Set once: the run stops. ``reason`` is the first reason given."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason: BulkpostError | None = None
        self.asked = False  # the user asked for it (a signal): no error
        self._listeners: list[tuple[Callable[[], None], bool]] = []

    def stop(self, reason: BulkpostError, *, asked: bool = False) -> None:
        """Stop the run for ``reason`` (kept only if it is the first); tell the listeners."""
        first = self.reason is None
        if first:
            self.reason = reason
            self.asked = asked
        self._event.set()
        for listener, once in list(self._listeners):
            if first or not once:
                listener()

    def listen(self, listener: Callable[[], None], *, once: bool = False) -> None:
        """Call ``listener`` on every :meth:`stop` (``once``: on the first only). It must be
        quick and must not raise."""
        self._listeners.append((listener, once))

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


@contextlib.contextmanager
def signals_handled(handler: Callable[[str], None]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM call ``handler`` with the signal's name on the
    running loop: through the loop's signal handlers, or, where the loop has none (Windows),
    through :func:`signals_passed_to`. Outside the main thread neither can be had."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    without_loop: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, handler, signum.name)
        except NotImplementedError:
            without_loop.append(signum)
        except RuntimeError:
            continue
        else:
            installed.append(signum)
    try:
        with signals_passed_to(loop, handler, without_loop):
            yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


@contextlib.contextmanager
def signals_passed_to(loop: asyncio.AbstractEventLoop, handler: Callable[[str], None],
                      signums: Sequence[signal.Signals]) -> Iterator[None]:
    """While inside, each of ``signums`` calls ``handler`` with the signal's name on
    ``loop``, from a :func:`signal.signal` handler (Python runs it in the main thread,
    between two steps, and the loop wakes up for it); the handlers before are put back on
    leaving. For loops that cannot handle signals themselves."""

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(handler, signal.Signals(signum).name)

    before: dict[signal.Signals, Callable[[int, FrameType | None], object] | int] = {}
    for signum in signums:
        with contextlib.suppress(ValueError):  # not the main thread: no handler can be set
            previous = signal.signal(signum, pass_on)
            before[signum] = signal.SIG_DFL if previous is None else previous
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)
