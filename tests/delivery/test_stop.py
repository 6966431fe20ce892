"""Ctrl-C and SIGTERM stop a run: through the loop's signal handlers where it has them, and
through Python's own handlers where it has none (Windows' loops), to the same effect."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any, TypeVarTuple, Unpack

import pytest

from bulkpost.delivery.stop import StopSignal, signals_handled, signals_passed_to
from bulkpost.errors import AbortRun

_Ts = TypeVarTuple("_Ts")


class _LoopWithoutSignals(asyncio.SelectorEventLoop):
    """A loop that cannot handle signals itself, as Windows' loops cannot."""

    def add_signal_handler(self, sig: int, callback: Callable[[Unpack[_Ts]], object],
                           *args: *_Ts) -> None:
        raise NotImplementedError


async def _stopped_by(signum: signal.Signals, stopping: StopSignal) -> None:
    signal.raise_signal(signum)
    await asyncio.wait_for(stopping.wait(), timeout=10)


def _interrupt(stopping: StopSignal) -> Any:
    return lambda name: stopping.stop(AbortRun(f"interrupted by {name}"), asked=True)


async def test_a_signal_passed_to_the_loop_stops_the_run_and_the_handler_is_put_back() -> None:
    """The path for loops without signal handlers, taken directly."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stopping = StopSignal()
    with signals_passed_to(asyncio.get_running_loop(), _interrupt(stopping),
                           [signal.SIGINT, signal.SIGTERM]):
        await _stopped_by(signal.SIGTERM, stopping)
    assert stopping.asked and str(stopping.reason) == "interrupted by SIGTERM"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("loop_kind", [asyncio.SelectorEventLoop, _LoopWithoutSignals],
                         ids=["loop-handlers", "no-loop-handlers"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_stop_the_run_with_or_without_the_loops_signal_handlers(
        loop_kind: type[asyncio.AbstractEventLoop], signum: signal.Signals) -> None:
    names: list[str] = []

    async def run() -> StopSignal:
        stopping = StopSignal()
        stopping.listen(lambda: names.append(str(stopping.reason)))
        with signals_handled(_interrupt(stopping)):
            await _stopped_by(signum, stopping)
            await _stopped_by(signum, stopping)  # a second signal is the handler's to judge
        return stopping

    before = signal.getsignal(signum)
    with asyncio.Runner(loop_factory=loop_kind) as runner:
        stopping = runner.run(run())
    assert stopping.asked and names == [f"interrupted by {signum.name}"] * 2
    assert signal.getsignal(signum) == before  # nothing of ours is left behind
