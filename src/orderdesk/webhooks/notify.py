"""Emit the webhook events of API.md from the state changes that cause them.

Each function writes its deliveries in the caller's transaction, so an event commits
or rolls back with its change. The payload is built only when an endpoint subscribes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from orderdesk.orders.models import Order
from orderdesk.webhooks import events
from orderdesk.webhooks.services import emit_event


def order_event(session: Session, order: Order, event_type: str, chains: Any) -> None:
    """Emit an order event whose data is the order as GET returns it."""
    from orderdesk.orders.serialization import serialize_order

    emit_event(
        session,
        order.project_id,
        event_type,
        lambda: serialize_order(order, chains),
        order_id=order.id,
    )


def tracking_updated(session: Session, order: Order, package: Any) -> None:
    """Emit orders.tracking.updated with the package as the tracking array shows it."""
    from orderdesk.shipping.schemas import package_body

    emit_event(
        session,
        order.project_id,
        events.ORDERS_TRACKING_UPDATED,
        lambda: package_body(package),
        order_id=order.id,
    )


def refund_event(session: Session, order: Order, refund: Any, event_type: str) -> None:
    """Emit a refund event whose data is the refund as the refunds API returns it."""
    from orderdesk.refunds.schemas import refund_body

    emit_event(
        session,
        order.project_id,
        event_type,
        lambda: refund_body(refund),
        order_id=order.id,
    )
