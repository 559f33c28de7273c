"""The middleware every request passes through: what the cheaper code paths keep.

The body limit skips its receive wrapper for HTTP/1 requests that have no body,
the timeout waits on one future and one timer, and the lean path checks order ids
with a regular expression. Each test here checks that the behaviour stayed.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from orderdesk import request_timeout
from orderdesk.fastpath import _CANONICAL_UUID
from orderdesk.http import BodyLimitMiddleware
from orderdesk.orders.access import is_uuid
from orderdesk.request_timeout import RequestTimeoutMiddleware

LIMIT = 100


def http_scope(
    headers: list[tuple[bytes, bytes]], http_version: str = "1.1"
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/",
        "http_version": http_version,
        "headers": headers,
    }


def body_receive(chunks: list[bytes]) -> Receive:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def read_all(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class Recorder:
    """An ASGI app that reads the whole body and replies 200 with its length."""

    def __init__(self) -> None:
        self.receives: list[Receive] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.receives.append(receive)
        body = await read_all(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def run_app(app: Any, scope: dict[str, Any], receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def status_of(sent: list[Message]) -> int:
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


# Body limit


def test_bodyless_http1_request_unwrapped() -> None:
    inner = Recorder()
    receive = body_receive([b""])
    sent = run_app(BodyLimitMiddleware(inner, LIMIT), http_scope([]), receive)
    assert status_of(sent) == 200
    assert inner.receives == [receive]


@pytest.mark.parametrize(
    "headers",
    [[(b"content-length", b"50")], [(b"transfer-encoding", b"chunked")]],
)
def test_body_with_length_or_encoding_counted(
    headers: list[tuple[bytes, bytes]],
) -> None:
    inner = Recorder()
    receive = body_receive([b"x" * 50])
    sent = run_app(BodyLimitMiddleware(inner, LIMIT), http_scope(headers), receive)
    assert status_of(sent) == 200
    assert inner.receives[0] is not receive


def test_declared_length_over_limit_rejected() -> None:
    inner = Recorder()
    scope = http_scope([(b"content-length", b"150")])
    sent = run_app(BodyLimitMiddleware(inner, LIMIT), scope, body_receive([b""]))
    assert status_of(sent) == 413
    assert inner.receives == []


def test_chunked_body_over_limit_rejected() -> None:
    inner = Recorder()
    receive = body_receive([b"x" * 60, b"x" * 60])
    scope = http_scope([(b"transfer-encoding", b"chunked")])
    sent = run_app(BodyLimitMiddleware(inner, LIMIT), scope, receive)
    assert status_of(sent) == 413


def test_http2_body_without_length_counted() -> None:
    inner = Recorder()
    receive = body_receive([b"x" * 60, b"x" * 60])
    sent = run_app(
        BodyLimitMiddleware(inner, LIMIT), http_scope([], http_version="2"), receive
    )
    assert status_of(sent) == 413


def test_http2_body_under_limit_read() -> None:
    inner = Recorder()
    receive = body_receive([b"x" * 40, b"x" * 40])
    sent = run_app(
        BodyLimitMiddleware(inner, LIMIT), http_scope([], http_version="2"), receive
    )
    assert status_of(sent) == 200
    assert sent[-1]["body"] == b"80"


# Request timeout


def test_timeout_passes_reply_through() -> None:
    inner = Recorder()
    sent = run_app(
        RequestTimeoutMiddleware(inner, 30), http_scope([]), body_receive([b"abc"])
    )
    assert status_of(sent) == 200
    assert sent[-1]["body"] == b"3"


def test_timeout_reraises_app_error() -> None:
    class Broken(Exception):
        pass

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise Broken("the route failed")

    with pytest.raises(Broken):
        run_app(RequestTimeoutMiddleware(broken, 30), http_scope([]), body_receive([]))


def test_timeout_replies_503_to_stuck_request() -> None:
    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.Event().wait()

    async def scenario() -> list[Message]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        middleware = RequestTimeoutMiddleware(stuck, 0.01)
        await middleware(http_scope([]), body_receive([]), send)
        abandoned = list(request_timeout._abandoned)
        for task in abandoned:
            task.cancel()
        await asyncio.gather(*abandoned, return_exceptions=True)
        return sent

    sent = asyncio.run(scenario())
    assert status_of(sent) == 503
    assert b"request_timeout" in sent[-1]["body"]
    assert request_timeout._abandoned == set()


def test_timeout_leaves_no_timer_after_fast_request() -> None:
    inner = Recorder()

    async def scenario() -> int:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await RequestTimeoutMiddleware(inner, 30)(
            http_scope([]), body_receive([b""]), send
        )
        loop = asyncio.get_running_loop()
        return sum(1 for timer in loop._scheduled if not timer.cancelled())  # type: ignore[attr-defined]

    assert asyncio.run(scenario()) == 0


# Order ids on the lean path


IDS = [
    str(uuid.uuid4()),
    "00000000-0000-4000-8000-000000000000",
    str(uuid.uuid4()).upper(),
    uuid.uuid4().hex,
    "{" + str(uuid.uuid4()) + "}",
    "urn:uuid:" + str(uuid.uuid4()),
    str(uuid.uuid4()) + "\n",
    " " + str(uuid.uuid4()),
    str(uuid.uuid4())[:-1],
    str(uuid.uuid4()) + "0",
    "0000000_-0000-4000-8000-000000000000",
    "ABCDEF12-0000-4000-8000-000000000000",
    "abcdef12-0000-4000-8000-00000000000A",
    "\u0660" * 8 + "-0000-4000-8000-000000000000",
    "does-not-exist",
    "",
]


@pytest.mark.parametrize("value", IDS)
def test_order_id_check_matches_is_uuid(value: str) -> None:
    assert (_CANONICAL_UUID.fullmatch(value) is not None) == is_uuid(value)
