"""Error replies become the exception of their status, with code, message and
details. The first tests use a live server, the rest a mock transport."""

from __future__ import annotations

import json

import httpx
import pytest
from tests.client.helpers import order_arguments
from tests.conftest import KeyMaker, LiveServer, free_port

from orderdesk.client import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidResponse,
    NotFound,
    OrderDesk,
    OrderDeskError,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

MISSING_ORDER = "00000000-0000-4000-8000-000000000000"


def test_unknown_key_is_unauthorized(server: LiveServer) -> None:
    with OrderDesk("sk_development_" + "x" * 32, base_url=server.url) as sdk:
        with pytest.raises(Unauthorized) as raised:
            sdk.orders.list()
    error = raised.value
    assert error.status_code == 401
    assert error.code == "unauthorized"
    assert "not recognised" in error.message
    assert json.loads(error.body)["error"] is True


def test_other_environment_key_rejected(server: LiveServer) -> None:
    with OrderDesk("sk_production_" + "x" * 32, base_url=server.url) as sdk:
        with pytest.raises(Unauthorized) as raised:
            sdk.orders.get(MISSING_ORDER)
    assert raised.value.code == "environment_mismatch"


def test_missing_scope_is_forbidden(server: LiveServer, make_key: KeyMaker) -> None:
    with OrderDesk(make_key("orders.read"), base_url=server.url) as sdk:
        with pytest.raises(Forbidden) as raised:
            sdk.orders.create(**order_arguments())
        assert sdk.orders.list().data == []
    assert raised.value.status_code == 403
    assert "orders.create" in raised.value.message


def test_unknown_order_not_found(sdk: OrderDesk) -> None:
    with pytest.raises(NotFound) as raised:
        sdk.orders.get(MISSING_ORDER)
    assert raised.value.status_code == 404
    assert raised.value.code == "order_not_found"
    with pytest.raises(NotFound):
        sdk.tracking.get("not-a-uuid")


def test_invalid_body_lists_details(sdk: OrderDesk) -> None:
    arguments = order_arguments()
    arguments["line_items"] = [{"productLocator": "amazon:B08N5WRWNW", "quantity": 0}]

    with pytest.raises(BadRequest) as raised:
        sdk.orders.create(**arguments)
    error = raised.value
    assert error.status_code == 400
    assert error.code == "invalid_request"
    assert [detail.field for detail in error.details] == ["lineItems.0.quantity"]
    assert error.details[0].message
    assert sdk.orders.list().data == []


def test_unpaid_refund_is_conflict(sdk: OrderDesk) -> None:
    order = sdk.orders.create(**order_arguments()).order

    with pytest.raises(Conflict) as raised:
        sdk.refunds.create(order.order_id, line_item=0, reason="Dented.")
    assert raised.value.status_code == 409
    assert raised.value.code == "order_not_paid"
    assert sdk.refunds.list(order.order_id) == []


def test_large_body_too_large(sdk: OrderDesk) -> None:
    with pytest.raises(PayloadTooLarge) as raised:
        sdk.refunds.create(MISSING_ORDER, line_item=0, reason="x" * 70_000)
    assert raised.value.status_code == 413
    assert raised.value.code == "payload_too_large"


def test_closed_port_connection_failed() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with OrderDesk("sk_development_key", base_url=url, max_retries=0) as sdk:
        with pytest.raises(ConnectionFailed) as raised:
            sdk.orders.list()
    assert raised.value.status_code is None
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert url in raised.value.message


def replying(status: int, body: bytes, **headers: str) -> OrderDesk:
    """A client whose every request gets this reply."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return OrderDesk("sk_development_key", http_client=http, max_retries=0)


def error_body(code: str, **extra: object) -> bytes:
    return json.dumps(
        {"error": True, "message": f"Message of {code}.", "code": code, **extra}
    ).encode()


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (405, OrderDeskError),
        (409, Conflict),
        (413, PayloadTooLarge),
        (415, UnsupportedMediaType),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (503, ServiceUnavailable),
    ],
)
def test_status_maps_to_class(status: int, cls: type[OrderDeskError]) -> None:
    with pytest.raises(OrderDeskError) as raised:
        replying(status, error_body("some_code")).orders.list()
    assert type(raised.value) is cls
    assert raised.value.status_code == status
    assert raised.value.code == "some_code"
    assert raised.value.message == "Message of some_code."
    assert str(raised.value) == f"{status} some_code: Message of some_code."


def test_service_unavailable_is_server_error() -> None:
    with pytest.raises(ServerError):
        replying(503, error_body("database_unavailable")).orders.list()


def test_rate_limited_reads_retry_after() -> None:
    sdk = replying(429, error_body("rate_limited"), **{"Retry-After": "17"})
    with pytest.raises(RateLimited) as raised:
        sdk.orders.list()
    assert raised.value.retry_after == 17.0


def test_extra_error_fields_kept() -> None:
    body = error_body("invalid_transition", currentStatus="refund-request-rejected")
    with pytest.raises(Conflict) as raised:
        replying(409, body).refunds.accept(MISSING_ORDER, MISSING_ORDER)
    assert raised.value.payload["currentStatus"] == "refund-request-rejected"


def test_html_error_body_described() -> None:
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with pytest.raises(ServerError) as raised:
        replying(502, html).orders.list()
    error = raised.value
    assert error.code is None
    assert error.message.startswith("HTTP 502 Bad Gateway from GET /api/2022-06-09")
    assert "<h1>502 Bad Gateway</h1>" in error.message
    assert error.body == html.decode()
    assert error.payload is None


def test_empty_error_body_described() -> None:
    with pytest.raises(Forbidden) as raised:
        replying(403, b"").orders.list()
    assert raised.value.message.endswith("with an empty body")


def test_malformed_details_kept() -> None:
    body = error_body("invalid_request", details=["not an object", {"field": "x"}])
    with pytest.raises(BadRequest) as raised:
        replying(400, body).orders.list()
    details = raised.value.details
    assert [(d.field, d.message) for d in details] == [
        ("", "not an object"),
        ("x", ""),
    ]


def test_unexpected_reply_shape_invalid() -> None:
    with pytest.raises(InvalidResponse) as raised:
        replying(200, b'{"orderId": 5}').orders.get(MISSING_ORDER)
    assert raised.value.status_code == 200
    assert raised.value.code == "invalid_response"
    with pytest.raises(InvalidResponse):
        replying(200, b"<html></html>").orders.get(MISSING_ORDER)
