"""A fake LeadSquared client for unit tests of the call layer and of delivery.

:class:`FakeClient` has the methods of :class:`bulkpost.delivery.client.LeadSquaredClient` that
delivery and look-ups call, and answers each from a script of :class:`Classified` answers
(what the real client returns once a response is classified), after a latency on the
running loop's clock. It remembers every call and when it was made, so tests assert on
the order and the timing of requests, on a virtual clock (:mod:`tests.clock`).

:class:`InlineExecutor` runs a loop's ``to_thread`` work (the results file's fsync) at
once on the loop's thread: on a virtual clock a worker thread would leave the loop with
nothing scheduled, which :mod:`tests.clock` reports as a deadlock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from bulkpost.core.credentials import Credentials
from bulkpost.core.response import Classified, Verdict
from bulkpost.delivery.client import LeadSquaredClient

SECRET = "fake-secret-key-0123456789"
POSTED = Classified(Verdict.POSTED, 200, activity_id="act-new")
OK = Classified(Verdict.OK, 200)


def retry(*, uncertain: bool = False) -> Classified:
    """A passing failure: a timeout (``uncertain``: the request may have been carried out),
    or a connection that never opened (nothing was sent)."""
    if uncertain:
        return Classified(Verdict.RETRY, None, error_type="timeout",
                          error="no answer within 30 s", uncertain=True)
    return Classified(Verdict.RETRY, None, error_type="connect error",
                      error="connection refused")


def rate_limited(retry_after: float | None = None) -> Classified:
    return Classified(Verdict.RATE_LIMITED, 429, error_type="MXAPIRateLimitExceededException",
                      error="rate limited", retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class Sent:
    """One call the fake received: which method, its first argument, and when."""

    method: str
    argument: Any
    at: float


class FakeClient:
    """Answers from scripts: ``posts`` for creates, ``reads`` for look-ups (each an answer
    and its document). A script that runs out repeats its last answer."""

    def __init__(self, posts: list[Classified] | None = None,
                 reads: list[tuple[Classified, Any]] | None = None, *,
                 latency: float = 0.1) -> None:
        self.credentials = Credentials("fake-access-key", SECRET)
        self.posts = list(posts or [])
        self.reads = list(reads or [])
        self.latency = latency
        self.sent: list[Sent] = []
        self.on_call: Callable[[Sent], None] | None = None  # seen as each call arrives

    def as_client(self) -> LeadSquaredClient:
        """This fake where the code wants the real client (it has the methods used)."""
        return cast(LeadSquaredClient, self)

    def methods(self) -> list[str]:
        return [call.method for call in self.sent]

    def times(self, method: str) -> list[float]:
        return [call.at for call in self.sent if call.method == method]

    async def _answer(self, method: str, argument: Any, script: list[Any]) -> Any:
        call = Sent(method, argument, asyncio.get_running_loop().time())
        self.sent.append(call)
        if self.on_call is not None:
            self.on_call(call)
        answer = script.pop(0) if len(script) > 1 else script[0]
        await asyncio.sleep(self.latency)
        return answer

    async def post_activity(self, body: bytes) -> Classified:
        answer: Classified = await self._answer("post_activity", body, self.posts)
        return answer

    async def retrieve_activities(self, lead_id: str, event: int, offset: int,
                                  count: int = 25) -> tuple[Classified, Any]:
        answer: tuple[Classified, Any] = await self._answer("retrieve_activities", offset,
                                                            self.reads)
        return answer

    async def lead_by_email(self, email: str) -> tuple[Classified, Any]:
        answer: tuple[Classified, Any] = await self._answer("lead_by_email", email, self.reads)
        return answer

    async def activity_setting(self, code: int) -> tuple[Classified, Any]:
        answer: tuple[Classified, Any] = await self._answer("activity_setting", code,
                                                            self.reads)
        return answer


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs submitted work at once, on the caller's thread: no time passes on the loop."""

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting task, as a thread would
            future.set_exception(exc)
        return future


def inline_threads() -> None:
    """Make the running loop run ``to_thread`` work inline (see :class:`InlineExecutor`)."""
    asyncio.get_running_loop().set_default_executor(InlineExecutor(max_workers=1))
