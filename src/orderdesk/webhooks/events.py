"""Webhook event types. Merchants subscribe an endpoint to some of them, or to "*"."""

from __future__ import annotations

ORDERS_QUOTE_CREATED = "orders.quote.created"
ORDERS_QUOTE_UPDATED = "orders.quote.updated"
ORDERS_PAYMENT_SUCCEEDED = "orders.payment.succeeded"
ORDERS_PAYMENT_FAILED = "orders.payment.failed"
ORDERS_DELIVERY_INITIATED = "orders.delivery.initiated"
ORDERS_DELIVERY_COMPLETED = "orders.delivery.completed"
ORDERS_DELIVERY_FAILED = "orders.delivery.failed"
ORDERS_TRACKING_UPDATED = "orders.tracking.updated"
ORDERS_REFUND_INITIATED = "orders.refund.initiated"
ORDERS_REFUND_ACCEPTED = "orders.refund.accepted"
ORDERS_REFUND_REJECTED = "orders.refund.rejected"
ORDERS_REFUND_COMPLETED = "orders.refund.completed"

EVENT_TYPES: tuple[str, ...] = (
    ORDERS_QUOTE_CREATED,
    ORDERS_QUOTE_UPDATED,
    ORDERS_PAYMENT_SUCCEEDED,
    ORDERS_PAYMENT_FAILED,
    ORDERS_DELIVERY_INITIATED,
    ORDERS_DELIVERY_COMPLETED,
    ORDERS_DELIVERY_FAILED,
    ORDERS_TRACKING_UPDATED,
    ORDERS_REFUND_INITIATED,
    ORDERS_REFUND_ACCEPTED,
    ORDERS_REFUND_REJECTED,
    ORDERS_REFUND_COMPLETED,
)

# An endpoint subscribed to this receives every event type, including ones added later.
ALL_EVENTS = "*"


def subscribes_to(events: list[str], event_type: str) -> bool:
    """Return whether an endpoint with these `events` receives `event_type`."""
    return ALL_EVENTS in events or event_type in events
