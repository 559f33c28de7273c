"""Typed Python SDK of the orderdesk HTTP API, sync and async, on httpx.

It needs only httpx and pydantic: nothing here imports the server. Usage::

    from orderdesk.client import Conflict, OrderDesk

    with OrderDesk("sk_development_...", base_url="http://127.0.0.1:8000") as od:
        created = od.orders.create(
            recipient={
                "email": "jordan@example.com",
                "physicalAddress": {
                    "name": "Jordan Lee",
                    "line1": "350 Fifth Avenue",
                    "city": "New York",
                    "state": "NY",
                    "postalCode": "10118",
                    "country": "US",
                },
            },
            payment={"method": "devnet", "currency": "usdc", "payerAddress": "0x..."},
            line_items=[{"productLocator": "amazon:B08N5WRWNW", "quantity": 2}],
        )
        order = created.order
        print(order.order_id, order.quote.status, order.payment.status)
        for each in od.orders.iterate(limit=50):
            print(each.order_id, each.phase)
        try:
            od.refunds.create(order.order_id, line_item=0, reason="Arrived dented")
        except Conflict as exc:
            print(exc.code)  # such as "order_not_paid"

The async client has the same methods as coroutines::

    async with AsyncOrderDesk("sk_development_...") as od:
        order = await od.orders.get(order_id)
        async for each in od.orders.iterate():
            ...

Errors are `OrderDeskError` subclasses per status (see `orderdesk.client.errors`).
Webhook receivers check deliveries with `orderdesk.client.webhooks.verify`.
"""

from orderdesk.client._async import AsyncOrderDesk
from orderdesk.client._calls import NOT_GIVEN, NotGiven
from orderdesk.client._sync import OrderDesk
from orderdesk.client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    ErrorDetail,
    Forbidden,
    InvalidResponse,
    NotFound,
    OrderDeskError,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from orderdesk.client.models import (
    Charges,
    CreatedOrder,
    Delivery,
    DeliveryAttempt,
    DeliveryPage,
    DraftOrder,
    FailureReason,
    LineItem,
    LineItemDelivery,
    LineItemMetadata,
    LineItemQuote,
    Money,
    Order,
    OrderFields,
    OrderPage,
    OrderPreview,
    Package,
    PackageTracking,
    Payment,
    PaymentPreparation,
    PaymentReceived,
    Payout,
    PhysicalAddress,
    Quote,
    Recipient,
    Refund,
    RefundHistoryEntry,
    ReturnLabel,
    TimeRange,
    TrackingEvent,
    WebhookEndpoint,
)
from orderdesk.client.webhooks import WebhookVerificationError

__all__ = [
    "NOT_GIVEN",
    "AsyncOrderDesk",
    "BadRequest",
    "Charges",
    "Conflict",
    "ConnectionFailed",
    "CreatedOrder",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryPage",
    "DraftOrder",
    "ErrorDetail",
    "FailureReason",
    "Forbidden",
    "InvalidResponse",
    "LineItem",
    "LineItemDelivery",
    "LineItemMetadata",
    "LineItemQuote",
    "Money",
    "NotFound",
    "NotGiven",
    "Order",
    "OrderDesk",
    "OrderDeskError",
    "OrderFields",
    "OrderPage",
    "OrderPreview",
    "Package",
    "PackageTracking",
    "PayloadTooLarge",
    "Payment",
    "PaymentPreparation",
    "PaymentReceived",
    "Payout",
    "PhysicalAddress",
    "Quote",
    "RateLimited",
    "Recipient",
    "Refund",
    "RefundHistoryEntry",
    "ReturnLabel",
    "ServerError",
    "ServiceUnavailable",
    "TimeRange",
    "TrackingEvent",
    "Unauthorized",
    "UnsupportedMediaType",
    "WebhookEndpoint",
    "WebhookVerificationError",
]
