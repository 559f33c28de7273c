"""The request timeout: a request still running after `request_timeout_seconds` gets
503 `request_timeout`, and whatever it had not committed by then is never committed.

Sync routes run in the thread pool, and a thread cannot be stopped from outside. So
the middleware sends the 503 in the route's place and lets the route run on in the
background with its reply dropped. Meanwhile a `before_commit` hook makes any commit
of that request raise. A request that began to commit or to send its reply before
the time ran out is not stopped: it finishes and sends its real reply, so a 503 from
the timeout always means that nothing of the request was committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderdesk.errors import ServiceUnavailable

log = structlog.get_logger(__name__)

# How often the middleware looks again whether a timed-out request can be stopped,
# while that request is committing or replying.
_RECHECK_SECONDS = 0.05


class RequestTimedOut(ServiceUnavailable):
    code = "request_timeout"


class RequestDeadline:
    """The state one request shares with the sessions it opens.

    Whichever comes first wins, under one lock: the request starts to commit or to
    reply, or the timeout expires it. After expiry every commit raises.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends_at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._expired = False
        self._committed_or_replied = False
        # Made by wait_expired() only, since few requests need it. expire() and
        # wait_expired() both run on the event loop's thread.
        self._expired_event: asyncio.Event | None = None

    @property
    def expired(self) -> bool:
        return self._expired

    def expire(self) -> bool:
        """Mark the request as timed out; False once it has committed or replied."""
        with self._lock:
            if self._committed_or_replied:
                return False
            self._expired = True
        if self._expired_event is not None:
            self._expired_event.set()
        return True

    def claim(self) -> bool:
        """Record that the request commits or replies; False once it has expired."""
        with self._lock:
            if self._expired:
                return False
            self._committed_or_replied = True
            return True

    async def wait_expired(self) -> None:
        """Wait until the request is marked as timed out."""
        if self._expired:
            return
        if self._expired_event is None:
            self._expired_event = asyncio.Event()
        await self._expired_event.wait()

    def release(self) -> None:
        """Undo a claim whose commit failed, so that the timeout can stop the
        request again."""
        with self._lock:
            self._committed_or_replied = False


_current: contextvars.ContextVar[RequestDeadline | None] = contextvars.ContextVar(
    "orderdesk_request_deadline", default=None
)
# Requests that got the timeout's 503 while their route still runs. The set keeps a
# reference to each task, so that the event loop does not drop it before it ends.
_abandoned: set[asyncio.Task[None]] = set()


def claim_commit() -> bool:
    """Record that the current request commits, for code that commits without a
    Session. Returns False, and logs it, when the request timed out: the caller
    must then roll back."""
    deadline = _current.get()
    if deadline is None or deadline.claim():
        return True
    log.warning("timed_out_commit_refused", timeout_seconds=deadline.seconds)
    return False


def release_commit() -> None:
    """Undo the current request's `claim_commit` after its commit failed and
    nothing was committed, so that the timeout can stop the request again."""
    deadline = _current.get()
    if deadline is not None:
        deadline.release()


def seconds_left() -> float | None:
    """Return the seconds until the current request times out, or None when it
    has no timeout."""
    deadline = _current.get()
    if deadline is None:
        return None
    return max(0.0, deadline.ends_at - time.monotonic())


async def until_timed_out() -> None:
    """Wait until the timeout has sent its 503, for a request whose time ran out
    while a claim of it was held and then undone (the middleware looks again
    every _RECHECK_SECONDS). Returns at once for a request without a timeout or
    one that timed out already."""
    deadline = _current.get()
    if deadline is not None:
        await deadline.wait_expired()


def has_timed_out() -> bool:
    """Return whether the current request got the timeout's 503 already."""
    deadline = _current.get()
    return deadline is not None and deadline.expired


@event.listens_for(Session, "before_commit")
def _refuse_commit_after_timeout(session: Session) -> None:
    # Thread-pool calls run in a copy of the request's context, so the request's
    # deadline is visible here. Sessions of the worker and the CLI have none.
    # NOTE: the claim comes before the commit's own flush. A flush that then waits
    # on a lock is not stopped by the timeout, so such a request replies late.
    # Flushing here first is no fix: the timed-out route's session is then closed
    # while its commit runs, which leaves the connection idle in its transaction.
    deadline = _current.get()
    if deadline is not None and not deadline.claim():
        log.warning("timed_out_commit_refused", timeout_seconds=deadline.seconds)
        raise RequestTimedOut(
            f"The request ran longer than {deadline.seconds:g} seconds and was "
            "stopped, so its changes are not committed."
        )


class RequestTimeoutMiddleware:
    """Send 503 when a request runs longer than `seconds` (0 turns it off)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        deadline = RequestDeadline(self.seconds)

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not deadline.claim():
                return
            if deadline.expired:
                return  # the timeout's 503 went out already
            await send(message)

        loop = asyncio.get_running_loop()
        token = _current.set(deadline)
        try:
            # The task runs in a copy of this context, deadline included.
            task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        finally:
            _current.reset(token)
        if not await _finished_within(loop, task, self.seconds):
            await self._stop_or_finish(scope, send, task, deadline)
            return
        await task  # its result, or its error

    async def _stop_or_finish(
        self,
        scope: Scope,
        send: Send,
        task: asyncio.Task[None],
        deadline: RequestDeadline,
    ) -> None:
        """Send the timeout's 503 unless the request commits or replies first."""
        while not task.done():
            if deadline.expire():
                break
            await asyncio.wait([task], timeout=_RECHECK_SECONDS)
        if task.done():
            await task
            return
        _abandoned.add(task)
        task.add_done_callback(_finish_abandoned)
        log.warning(
            "request_timed_out",
            method=scope.get("method"),
            path=scope.get("path"),
            timeout_seconds=self.seconds,
        )
        await _reply_timed_out(send, self.seconds)


async def _finished_within(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], seconds: float
) -> bool:
    """Wait until the task is done or `seconds` have passed, and return whether it
    is done, leaving it running either way.

    It costs one future and one timer, fewer objects than
    `asyncio.wait_for(asyncio.shield(task))`, which every request would pay.
    """
    waiter = loop.create_future()

    def wake(_task: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    return task.done()


def _finish_abandoned(task: asyncio.Task[None]) -> None:
    _abandoned.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, RequestTimedOut):
        log.error(
            "timed_out_request_failed",
            error_type=type(error).__name__,
            error=str(error),
        )


async def _reply_timed_out(send: Send, seconds: float) -> None:
    error = RequestTimedOut(
        f"The request did not finish within {seconds:g} seconds and was stopped; "
        "nothing it changed was committed. Retry it shortly.",
        headers={"Retry-After": "5"},
    )
    body = json.dumps(error.body()).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"5"),
    ]
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": error.status_code,
        "headers": headers,
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
