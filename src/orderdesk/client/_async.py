"""The asynchronous client, `AsyncOrderDesk`, and its resources.

Each method mirrors the one of the same name in `_sync`; only the sending differs.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx
from anyio import sleep

from orderdesk.client import _calls as calls
from orderdesk.client._base import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ClientConfig,
)
from orderdesk.client._calls import NOT_GIVEN, Call, NotGiven
from orderdesk.client.errors import error_from_response
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
from orderdesk.client.params import (
    LineItemInput,
    PaymentInput,
    RecipientInput,
    TimeRangeInput,
)

T = TypeVar("T")


class AsyncOrderDesk:
    """Async client of an orderdesk server, with the methods of `OrderDesk` as
    coroutines. Use it with `async with`, or await aclose().

    `api_key` defaults to the ORDERDESK_API_KEY environment variable. A buyer's
    client may pass only `client_secret`, which reaches that one order. Requests
    that repeat safely (GET, DELETE, and POSTs with an Idempotency-Key) are retried
    up to `max_retries` times on 429, 503 and connection errors. `timeout` is in
    seconds. An `http_client` passed in is left open by aclose(), and its own
    base_url is ignored because requests use absolute URLs built from `base_url`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        client_secret: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._config = ClientConfig.build(
            api_key, base_url, client_secret, timeout, max_retries
        )
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self.orders = AsyncOrders(self)
        self.tracking = AsyncTracking(self)
        self.refunds = AsyncRefunds(self)
        self.shipments = AsyncShipments(self)
        self.webhooks = AsyncWebhooks(self)

    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncOrderDesk:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        return call.read(await self._response(call))

    async def _response(self, call: Call[Any]) -> httpx.Response:
        """Send `call`, retrying when the policy allows; raise for an error reply."""
        arguments = self._config.request_args(call)
        retries_done = 0
        while True:
            try:
                response = await self._http.request(**arguments)
            except httpx.TransportError as exc:
                delay = self._config.retry_delay(call, retries_done, None)
                if delay is None:
                    raise self._config.connection_failed(
                        call, exc, retries_done
                    ) from exc
            else:
                if response.is_success:
                    return response
                delay = self._config.retry_delay(call, retries_done, response)
                if delay is None:
                    raise error_from_response(response)
            await sleep(delay)
            retries_done += 1


class _Resource:
    def __init__(self, client: AsyncOrderDesk) -> None:
        self._client = client


class AsyncOrders(_Resource):
    @overload
    async def create(
        self,
        *,
        recipient: RecipientInput | None = None,
        payment: PaymentInput,
        line_items: LineItemInput | Sequence[LineItemInput],
        locale: str | None = None,
        state: Literal["create"] | None = None,
    ) -> CreatedOrder: ...

    @overload
    async def create(
        self,
        *,
        recipient: RecipientInput | None = None,
        payment: PaymentInput,
        line_items: LineItemInput | Sequence[LineItemInput],
        locale: str | None = None,
        state: Literal["draft"],
    ) -> DraftOrder: ...

    async def create(
        self,
        *,
        recipient: RecipientInput | None = None,
        payment: PaymentInput,
        line_items: LineItemInput | Sequence[LineItemInput],
        locale: str | None = None,
        state: Literal["create", "draft"] | None = None,
    ) -> CreatedOrder | DraftOrder:
        """Create an order, priced from the server's catalog. `state="draft"`
        returns an unsaved preview instead."""
        if state == "draft":
            draft = calls.create_draft(recipient, payment, line_items, locale)
            return await self._client._send(draft)
        call = calls.create_order(recipient, payment, line_items, locale)
        return await self._client._send(call)

    async def get(self, order_id: str) -> Order:
        return await self._client._send(calls.get_order(order_id))

    async def list(
        self, limit: int | None = None, cursor: str | None = None
    ) -> OrderPage:
        """Return one page of the project's orders, newest first (1 to 100 per
        page, 30 by default)."""
        return await self._client._send(calls.list_orders(limit, cursor))

    async def iterate(self, *, limit: int | None = None) -> AsyncIterator[Order]:
        """Yield every order, newest first, fetching pages of `limit` orders as
        the iteration reaches them."""
        cursor: str | None = None
        while True:
            page = await self.list(limit=limit, cursor=cursor)
            for order in page.data:
                yield order
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def update(
        self,
        order_id: str,
        *,
        recipient: RecipientInput | NotGiven = NOT_GIVEN,
        payment: PaymentInput | NotGiven = NOT_GIVEN,
        locale: str | NotGiven = NOT_GIVEN,
    ) -> Order:
        """Replace the recipient, payment or locale of an unpaid order; the
        fields not passed stay as they are."""
        call = calls.update_order(order_id, recipient, payment, locale)
        return await self._client._send(call)

    async def pay(self, order_id: str, tx_id: str) -> Order:
        """Submit the id of the transaction that paid the order, for the server to
        check on chain."""
        return await self._client._send(calls.pay_order(order_id, tx_id))


class AsyncTracking(_Resource):
    async def get(self, order_id: str) -> builtins.list[Package]:
        """Return the order's packages, oldest first; empty before any shipment."""
        return await self._client._send(calls.get_tracking(order_id))


class AsyncShipments(_Resource):
    async def create(
        self,
        order_id: str,
        *,
        carrier_name: str,
        tracking_number: str,
        line_items: Sequence[int],
        tracking_url: str | None = None,
        delivery_time_range: TimeRangeInput | None = None,
    ) -> Package:
        """Record a package holding the line items at these indexes."""
        call = calls.create_shipment(
            order_id,
            carrier_name,
            tracking_number,
            line_items,
            tracking_url,
            delivery_time_range,
        )
        return await self._client._send(call)

    async def add_event(
        self,
        order_id: str,
        package_id: str,
        *,
        status: str,
        occurred_at: datetime | str,
        description: str | None = None,
        location: str | None = None,
        delivery_time_range: TimeRangeInput | None = None,
    ) -> Package:
        """Record a carrier event and return the package after it; an event the
        server already stored changes nothing."""
        call = calls.add_tracking_event(
            order_id,
            package_id,
            status,
            occurred_at,
            description,
            location,
            delivery_time_range,
        )
        return await self._client._send(call)


class AsyncRefunds(_Resource):
    async def create(
        self,
        order_id: str,
        *,
        line_item: int,
        reason: str,
        idempotency_key: str | None = None,
    ) -> Refund:
        """Request a refund of one line item. Without `idempotency_key` a new
        UUID is sent, and retries of this call reuse it."""
        call = calls.create_refund(order_id, line_item, reason, idempotency_key)
        return await self._client._send(call)

    async def list(
        self, order_id: str, line_item: int | None = None
    ) -> builtins.list[Refund]:
        """Return the order's refund requests oldest first, or those of one item."""
        return await self._client._send(calls.list_refunds(order_id, line_item))

    async def accept(self, order_id: str, refund_id: str) -> Refund:
        """Accept a request; the server emails the buyer a return label."""
        call = calls.review_refund(order_id, refund_id, "accept")
        return await self._client._send(call)

    async def reject(self, order_id: str, refund_id: str, *, reason: str) -> Refund:
        """Reject a request; the server emails the buyer the reason."""
        call = calls.review_refund(order_id, refund_id, "reject", {"reason": reason})
        return await self._client._send(call)

    async def received(self, order_id: str, refund_id: str) -> Refund:
        """Mark the return as received, which starts the payout."""
        call = calls.review_refund(order_id, refund_id, "return-received")
        return await self._client._send(call)


class AsyncWebhooks(_Resource):
    async def create(
        self, url: str, events: Sequence[str], description: str | None = None
    ) -> WebhookEndpoint:
        """Register an endpoint. The reply's `secret` is shown only this once."""
        call = calls.create_endpoint(url, events, description)
        return await self._client._send(call)

    async def list(self) -> builtins.list[WebhookEndpoint]:
        return await self._client._send(calls.list_endpoints())

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        return await self._client._send(calls.get_endpoint(endpoint_id))

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | NotGiven = NOT_GIVEN,
        events: Sequence[str] | NotGiven = NOT_GIVEN,
        description: str | None | NotGiven = NOT_GIVEN,
    ) -> WebhookEndpoint:
        """Change the fields passed; `description=None` clears the description."""
        call = calls.update_endpoint(endpoint_id, url, events, description)
        return await self._client._send(call)

    async def delete(self, endpoint_id: str) -> None:
        await self._client._send(calls.delete_endpoint(endpoint_id))

    async def rotate_secret(self, endpoint_id: str) -> WebhookEndpoint:
        """Replace the secret and return the new one; the old one keeps signing
        for 24 hours."""
        return await self._client._send(calls.rotate_secret(endpoint_id))

    async def deliveries(
        self,
        endpoint_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        status: str | None = None,
    ) -> DeliveryPage:
        """Return one page of the endpoint's deliveries, newest first. `status`
        keeps only pending, delivered or failed ones."""
        call = calls.list_deliveries(endpoint_id, limit, cursor, status)
        return await self._client._send(call)

    async def resend(self, endpoint_id: str, delivery_id: str) -> Delivery:
        """Send a delivered or failed delivery again."""
        return await self._client._send(calls.resend_delivery(endpoint_id, delivery_id))
