"""Retries on 429, 503 and connection errors, through an httpx mock transport.

Most tests record the waits in place of sleeping; one sleeps for real to show that
Retry-After is honoured in time.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from orderdesk.client import (
    AsyncOrderDesk,
    BadRequest,
    Conflict,
    ConnectionFailed,
    NotFound,
    OrderDesk,
    RateLimited,
    ServiceUnavailable,
)
from orderdesk.client._retry import RetryPolicy, is_retryable, parse_retry_after

ORDER_ID = "00000000-0000-4000-8000-000000000000"
PAGE: dict[str, object] = {"data": [], "nextCursor": None, "previousCursor": None}
REFUND = {
    "orderId": ORDER_ID,
    "lineItem": 0,
    "reason": "Dented.",
    "status": "refund-request-initiated",
}
Reply = httpx.Response | Exception


class Script:
    """A mock transport handler that plays back one reply per request."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def status(code: int, retry_after: str | None = None) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    body = {"error": True, "message": f"HTTP {code}.", "code": f"code_{code}"}
    return httpx.Response(code, json=body, headers=headers)


def ok(body: object = PAGE, code: int = 200) -> httpx.Response:
    return httpx.Response(code, json=body)


def sync_client(script: Script, max_retries: int = 3) -> OrderDesk:
    http = httpx.Client(transport=httpx.MockTransport(script))
    return OrderDesk("sk_development_key", http_client=http, max_retries=max_retries)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The waits the sync client asks for, recorded in place of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr("orderdesk.client._sync.sleep", recorded.append)
    yield recorded


def test_retry_after_honoured_in_time() -> None:
    script = Script(status(429, retry_after="1"), ok())
    started = time.monotonic()

    page = sync_client(script).orders.list()

    assert time.monotonic() - started >= 1.0
    assert page.data == []
    assert len(script.requests) == 2


def test_429_waits_retry_after(waits: list[float]) -> None:
    script = Script(status(429, "2"), status(429, "3"), ok())
    sync_client(script).orders.list()
    assert waits == [2.0, 3.0]
    assert len(script.requests) == 3


def test_long_retry_after_capped(waits: list[float]) -> None:
    script = Script(status(429, "3600"), ok())
    sync_client(script).orders.list()
    assert waits == [RetryPolicy().max_retry_after]


def test_503_backs_off_exponentially(waits: list[float]) -> None:
    script = Script(status(503), status(503), status(503), ok())
    sync_client(script).orders.list()

    policy = RetryPolicy()
    assert len(waits) == 3
    for retry_number, wait in enumerate(waits):
        full = policy.initial_delay * 2**retry_number
        assert full * (1 - policy.jitter) <= wait <= full


def test_retries_stop_at_max(waits: list[float]) -> None:
    script = Script(*[status(429, "0")] * 3)
    with pytest.raises(RateLimited) as raised:
        sync_client(script, max_retries=2).orders.list()
    assert len(script.requests) == 3
    assert waits == [0.0, 0.0]
    assert raised.value.retry_after == 0.0


def test_zero_max_retries_sends_once(waits: list[float]) -> None:
    script = Script(status(503))
    with pytest.raises(ServiceUnavailable):
        sync_client(script, max_retries=0).orders.list()
    assert len(script.requests) == 1
    assert waits == []


def test_connection_error_retried(waits: list[float]) -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ok())
    assert sync_client(script).orders.list().data == []
    assert len(script.requests) == 3
    assert len(waits) == 2


def test_connection_errors_exhaust_retries(waits: list[float]) -> None:
    script = Script(*[httpx.ConnectError("refused")] * 2)
    with pytest.raises(ConnectionFailed) as raised:
        sync_client(script, max_retries=1).orders.list()
    assert "after 1 retries" in raised.value.message
    assert len(script.requests) == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 413, 415, 500])
def test_other_errors_not_retried(code: int, waits: list[float]) -> None:
    script = Script(status(code), ok())
    with pytest.raises(Exception) as raised:
        sync_client(script).orders.list()
    assert getattr(raised.value, "status_code", None) == code
    assert len(script.requests) == 1
    assert waits == []


def test_post_without_key_not_retried(waits: list[float]) -> None:
    script = Script(status(503), ok())
    with pytest.raises(ServiceUnavailable):
        sync_client(script).orders.pay(ORDER_ID, "0x" + "ab" * 32)
    script_errors = Script(httpx.ConnectError("refused"), ok())
    with pytest.raises(ConnectionFailed):
        sync_client(script_errors).shipments.create(
            ORDER_ID, carrier_name="UPS", tracking_number="1Z", line_items=[0]
        )
    assert len(script.requests) == 1
    assert len(script_errors.requests) == 1
    assert waits == []


def test_patch_not_retried(waits: list[float]) -> None:
    script = Script(status(429, "0"), ok())
    with pytest.raises(RateLimited):
        sync_client(script).orders.update(ORDER_ID, locale="fr-FR")
    assert len(script.requests) == 1


def test_refund_retry_reuses_key(waits: list[float]) -> None:
    script = Script(status(503), httpx.ConnectError("reset"), ok(REFUND, 201))

    refund = sync_client(script).refunds.create(ORDER_ID, line_item=0, reason="Dented.")

    assert refund.status == "refund-request-initiated"
    keys = [request.headers["Idempotency-Key"] for request in script.requests]
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert uuid.UUID(keys[0]).version == 4
    bodies = [json.loads(request.content) for request in script.requests]
    assert bodies == [{"lineItem": 0, "reason": "Dented."}] * 3


def test_given_key_sent_each_try(waits: list[float]) -> None:
    script = Script(status(429, "0"), ok(REFUND, 201))
    sync_client(script).refunds.create(
        ORDER_ID, line_item=0, reason="Dented.", idempotency_key="order-7-item-0"
    )
    keys = [request.headers["Idempotency-Key"] for request in script.requests]
    assert keys == ["order-7-item-0", "order-7-item-0"]


def test_separate_calls_get_new_keys(waits: list[float]) -> None:
    script = Script(ok(REFUND, 201), ok(REFUND, 201))
    client = sync_client(script)
    for _ in range(2):
        client.refunds.create(ORDER_ID, line_item=0, reason="Dented.")
    first, second = (request.headers["Idempotency-Key"] for request in script.requests)
    assert first != second


def test_delete_retried(waits: list[float]) -> None:
    script = Script(status(503, "0"), httpx.Response(204))
    sync_client(script).webhooks.delete("ep_1")
    assert [request.method for request in script.requests] == ["DELETE", "DELETE"]


def test_request_carries_credentials() -> None:
    script = Script(ok())
    http = httpx.Client(transport=httpx.MockTransport(script))
    OrderDesk(
        "sk_development_key", client_secret="secret-1", http_client=http
    ).orders.list(limit=5, cursor="abc")
    request = script.requests[0]
    assert request.headers["X-API-KEY"] == "sk_development_key"
    assert request.headers["Authorization"] == "secret-1"
    assert request.headers["User-Agent"].startswith("orderdesk-python/")
    assert str(request.url) == (
        "http://127.0.0.1:8000/api/2022-06-09/orders?limit=5&cursor=abc"
    )


def test_ids_quoted_in_path() -> None:
    script = Script(ok({"status": "x"} | REFUND))
    sync_client(script).refunds.accept("../orders", "a/b")
    assert script.requests[0].url.raw_path == (
        b"/api/unstable/orders/..%2Forders/refunds/a%2Fb/accept"
    )


def test_policy_helpers() -> None:
    assert is_retryable("GET", {})
    assert is_retryable("delete", {})
    assert not is_retryable("POST", {})
    assert not is_retryable("PATCH", {})
    assert is_retryable("POST", {"idempotency-key": "k"})
    assert parse_retry_after(None) is None
    assert parse_retry_after(" 5 ") == 5.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-1") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def async_client(script: Script, max_retries: int = 3) -> AsyncOrderDesk:
    async def handler(request: httpx.Request) -> httpx.Response:
        return script(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AsyncOrderDesk(
        "sk_development_key", http_client=http, max_retries=max_retries
    )


@pytest.fixture
def async_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []

    async def record(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr("orderdesk.client._async.sleep", record)
    return recorded


@pytest.mark.anyio
async def test_async_retries_429_then_ok(async_waits: list[float]) -> None:
    script = Script(status(429, "4"), status(503), ok())
    page = await async_client(script).orders.list()
    assert page.data == []
    assert len(script.requests) == 3
    assert async_waits[0] == 4.0
    # The 503 came on the second retry, so its backoff is doubled once.
    policy = RetryPolicy()
    full = policy.initial_delay * 2
    assert full * (1 - policy.jitter) <= async_waits[1] <= full


@pytest.mark.anyio
async def test_async_retry_after_in_time() -> None:
    script = Script(status(429, "1"), ok())
    started = time.monotonic()
    await async_client(script).orders.list()
    assert time.monotonic() - started >= 1.0


@pytest.mark.anyio
async def test_async_refund_reuses_key(async_waits: list[float]) -> None:
    script = Script(httpx.ConnectError("refused"), ok(REFUND, 201))
    await async_client(script).refunds.create(ORDER_ID, line_item=0, reason="x")
    keys = {request.headers["Idempotency-Key"] for request in script.requests}
    assert len(script.requests) == 2
    assert len(keys) == 1


@pytest.mark.anyio
async def test_async_errors_not_retried(async_waits: list[float]) -> None:
    cases: list[tuple[httpx.Response, type[Exception]]] = [
        (status(400), BadRequest),
        (status(404), NotFound),
        (status(409), Conflict),
    ]
    for reply, cls in cases:
        script = Script(reply, ok())
        with pytest.raises(cls):
            await async_client(script).orders.list()
        assert len(script.requests) == 1
    script = Script(status(503), ok())
    with pytest.raises(ServiceUnavailable):
        await async_client(script).orders.pay(ORDER_ID, "0x" + "ab" * 32)
    assert len(script.requests) == 1
    assert async_waits == []
