"""The API's operations as `Call` values: method, path, body and reply parser.

The sync and async clients share these builders, so an operation's wire shape is
written once and only the sending differs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from orderdesk.client._encoding import to_json
from orderdesk.client._retry import IDEMPOTENCY_HEADER, is_retryable
from orderdesk.client.errors import InvalidResponse
from orderdesk.client.models import (
    CreatedOrder,
    Delivery,
    DeliveryPage,
    DraftOrder,
    Order,
    OrderPage,
    Package,
    Refund,
    WebhookEndpoint,
)

T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=BaseModel)

ORDERS = "/api/2022-06-09/orders"
UNSTABLE_ORDERS = "/api/unstable/orders"
WEBHOOKS = "/api/unstable/webhooks"

JsonObject = Mapping[str, Any] | BaseModel


class NotGiven:
    """The default of optional update fields, so that None can mean "clear"."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its reply. `body` None sends no body."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def retryable(self) -> bool:
        return is_retryable(self.method, self.headers)

    def read(self, response: httpx.Response) -> T:
        """Decode a successful reply; raise InvalidResponse when it does not fit."""
        data: Any = None
        if response.status_code != 204 and response.content:
            try:
                data = json.loads(response.content)
            except ValueError as exc:
                raise self._invalid(response, "is not JSON") from exc
        try:
            return self.parse(data)
        except ValidationError as exc:
            problem = f"does not match the expected shape ({exc.error_count()} errors)"
            raise self._invalid(response, problem) from exc

    def _invalid(self, response: httpx.Response, problem: str) -> InvalidResponse:
        return InvalidResponse(
            f"The reply to {self.method} {self.path} {problem}. Check that base_url "
            "points at an orderdesk server of a compatible version.",
            status_code=response.status_code,
            code="invalid_response",
            body=response.text,
            response=response,
        )


def segment(value: str, name: str) -> str:
    """Quote an id for use as one path segment."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    return quote(value, safe="")


def parse_model(model: type[ModelT]) -> Callable[[Any], ModelT]:
    return model.model_validate


def parse_list(model: type[ModelT]) -> Callable[[Any], list[ModelT]]:
    return TypeAdapter(list[model]).validate_python  # type: ignore[valid-type]


def parse_none(_data: Any) -> None:
    return None


def _given(**fields: Any) -> dict[str, Any]:
    """Keep the fields that were passed, turning each into JSON."""
    return {k: to_json(v) for k, v in fields.items() if not isinstance(v, NotGiven)}


def _query(**values: str | int | None) -> dict[str, str]:
    return {key: str(value) for key, value in values.items() if value is not None}


def _order_path(order_id: str) -> str:
    return f"{ORDERS}/{segment(order_id, 'order_id')}"


def _unstable_path(order_id: str, *rest: str) -> str:
    return "/".join([UNSTABLE_ORDERS, segment(order_id, "order_id"), *rest])


# Orders


def _order_body(
    recipient: JsonObject | None,
    payment: JsonObject,
    line_items: JsonObject | Sequence[JsonObject],
    locale: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payment": to_json(payment),
        "lineItems": to_json(line_items),
    }
    if recipient is not None:
        body["recipient"] = to_json(recipient)
    if locale is not None:
        body["locale"] = locale
    return body


def create_order(
    recipient: JsonObject | None,
    payment: JsonObject,
    line_items: JsonObject | Sequence[JsonObject],
    locale: str | None,
) -> Call[CreatedOrder]:
    body = _order_body(recipient, payment, line_items, locale)
    return Call("POST", ORDERS, parse_model(CreatedOrder), body=body)


def create_draft(
    recipient: JsonObject | None,
    payment: JsonObject,
    line_items: JsonObject | Sequence[JsonObject],
    locale: str | None,
) -> Call[DraftOrder]:
    body = _order_body(recipient, payment, line_items, locale)
    body["state"] = "draft"
    return Call("POST", ORDERS, parse_model(DraftOrder), body=body)


def get_order(order_id: str) -> Call[Order]:
    return Call("GET", _order_path(order_id), parse_model(Order))


def list_orders(limit: int | None, cursor: str | None) -> Call[OrderPage]:
    params = _query(limit=limit, cursor=cursor)
    return Call("GET", ORDERS, parse_model(OrderPage), params=params)


def update_order(
    order_id: str, recipient: Any, payment: Any, locale: Any
) -> Call[Order]:
    body = _given(recipient=recipient, payment=payment, locale=locale)
    return Call("PATCH", _order_path(order_id), parse_model(Order), body=body)


def pay_order(order_id: str, tx_id: str) -> Call[Order]:
    body = {"type": "crypto-tx-id", "txId": tx_id}
    path = f"{_order_path(order_id)}/payment"
    return Call("POST", path, parse_model(Order), body=body)


# Tracking and shipments


def get_tracking(order_id: str) -> Call[list[Package]]:
    return Call("GET", _unstable_path(order_id, "tracking"), parse_list(Package))


def create_shipment(
    order_id: str,
    carrier_name: str,
    tracking_number: str,
    line_items: Sequence[int],
    tracking_url: str | None,
    delivery_time_range: JsonObject | None,
) -> Call[Package]:
    body: dict[str, Any] = {
        "carrierName": carrier_name,
        "carrierTrackingNumber": tracking_number,
        "lineItems": list(line_items),
    }
    if tracking_url is not None:
        body["trackingUrl"] = tracking_url
    if delivery_time_range is not None:
        body["deliveryTimeRange"] = to_json(delivery_time_range)
    path = _unstable_path(order_id, "shipments")
    return Call("POST", path, parse_model(Package), body=body)


def add_tracking_event(
    order_id: str,
    package_id: str,
    status: str,
    occurred_at: datetime | str,
    description: str | None,
    location: str | None,
    delivery_time_range: JsonObject | None,
) -> Call[Package]:
    body: dict[str, Any] = {"status": status, "occurredAt": to_json(occurred_at)}
    if description is not None:
        body["description"] = description
    if location is not None:
        body["location"] = location
    if delivery_time_range is not None:
        body["deliveryTimeRange"] = to_json(delivery_time_range)
    package = segment(package_id, "package_id")
    path = _unstable_path(order_id, "shipments", package, "events")
    return Call("POST", path, parse_model(Package), body=body)


# Refunds


def create_refund(
    order_id: str, line_item: int, reason: str, idempotency_key: str | None
) -> Call[Refund]:
    # The key is fixed here, before the first attempt, so every retry of this call
    # sends the same one. The server keeps a key for 24 hours and replays the first
    # reply to a repeat, so a retry cannot create a second refund.
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    return Call(
        "POST",
        _unstable_path(order_id, "refunds"),
        parse_model(Refund),
        body={"lineItem": line_item, "reason": reason},
        headers={IDEMPOTENCY_HEADER: key},
    )


def list_refunds(order_id: str, line_item: int | None) -> Call[list[Refund]]:
    params = _query(lineItem=line_item)
    path = _unstable_path(order_id, "refunds")
    return Call("GET", path, parse_list(Refund), params=params)


def review_refund(
    order_id: str, refund_id: str, action: str, body: Mapping[str, Any] | None = None
) -> Call[Refund]:
    refund = segment(refund_id, "refund_id")
    path = _unstable_path(order_id, "refunds", refund, action)
    return Call("POST", path, parse_model(Refund), body=dict(body or {}))


# Webhook endpoints


def _endpoint_path(endpoint_id: str, *rest: str) -> str:
    return "/".join([WEBHOOKS, segment(endpoint_id, "endpoint_id"), *rest])


def _endpoint_list(data: Any) -> list[WebhookEndpoint]:
    return parse_list(WebhookEndpoint)(data["data"] if isinstance(data, dict) else data)


def create_endpoint(
    url: str, events: Sequence[str], description: str | None
) -> Call[WebhookEndpoint]:
    body: dict[str, Any] = {"url": url, "events": list(events)}
    if description is not None:
        body["description"] = description
    return Call("POST", WEBHOOKS, parse_model(WebhookEndpoint), body=body)


def list_endpoints() -> Call[list[WebhookEndpoint]]:
    return Call("GET", WEBHOOKS, _endpoint_list)


def get_endpoint(endpoint_id: str) -> Call[WebhookEndpoint]:
    return Call("GET", _endpoint_path(endpoint_id), parse_model(WebhookEndpoint))


def update_endpoint(
    endpoint_id: str, url: Any, events: Any, description: Any
) -> Call[WebhookEndpoint]:
    body = _given(url=url, events=events, description=description)
    path = _endpoint_path(endpoint_id)
    return Call("PATCH", path, parse_model(WebhookEndpoint), body=body)


def delete_endpoint(endpoint_id: str) -> Call[None]:
    return Call("DELETE", _endpoint_path(endpoint_id), parse_none)


def rotate_secret(endpoint_id: str) -> Call[WebhookEndpoint]:
    path = _endpoint_path(endpoint_id, "rotate-secret")
    return Call("POST", path, parse_model(WebhookEndpoint), body={})


def list_deliveries(
    endpoint_id: str, limit: int | None, cursor: str | None, status: str | None
) -> Call[DeliveryPage]:
    params = _query(limit=limit, cursor=cursor, status=status)
    path = _endpoint_path(endpoint_id, "deliveries")
    return Call("GET", path, parse_model(DeliveryPage), params=params)


def resend_delivery(endpoint_id: str, delivery_id: str) -> Call[Delivery]:
    delivery = segment(delivery_id, "delivery_id")
    path = _endpoint_path(endpoint_id, "deliveries", delivery, "resend")
    return Call("POST", path, parse_model(Delivery), body={})
