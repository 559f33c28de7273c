"""Automatic refunds of line items whose delivery failed.

When an outbound parcel goes back to the sender, its line items' delivery status
becomes `failed` (see `shipping.rollup`) and the buyer never got them. Each such item
is refunded in full with no return: the refund is created already accepted, with its
return counted as received, and its payout is enqueued at once. It shows origin
"delivery-failed" and gets no acceptance email (there is no label to send), only the
completion receipt.

A line item that already has an active refund (initiated, accepted or completed) gets
no second one: the existing request goes on through review, and an operator can mark
its return received to pay it out.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orderdesk.db.base import utcnow
from orderdesk.orders.models import LineItem, Order
from orderdesk.orders.statuses import PaymentState
from orderdesk.payments.amounts import format_amount
from orderdesk.refunds import review, services
from orderdesk.refunds.models import Refund
from orderdesk.refunds.services import SYSTEM_ACTOR
from orderdesk.refunds.statuses import RefundEvent, RefundOrigin, RefundStatus
from orderdesk.webhooks import events as webhook_events

log = structlog.get_logger(__name__)

DELIVERY_FAILED_REASON = (
    "The carrier returned the package to the sender, so the item was not delivered."
)


def refund_failed_deliveries(
    session: Session, order: Order, items: list[LineItem], actor: str
) -> list[Refund]:
    """Refund each failed line item that has no active refund. The caller holds the
    order lock, and `actor` recorded the event that failed the delivery."""
    refunds = []
    for item in items:
        refund = create_automatic_refund(session, order, item, cause_actor=actor)
        if refund is not None:
            refunds.append(refund)
    return refunds


def create_automatic_refund(
    session: Session,
    order: Order,
    item: LineItem,
    *,
    cause_actor: str,
    now: datetime | None = None,
) -> Refund | None:
    """Create the accepted, return-received refund of a failed line item and enqueue
    its payout. Returns None when the order is not paid or the item has an active
    refund."""
    if order.payment_state != PaymentState.COMPLETED:
        return None
    active = services.find_active_refund(session, order.id, item.index)
    if active is not None:
        log.info(
            "refund_automatic_skipped",
            order_id=order.id,
            line_item=item.index,
            active_refund_id=active.id,
        )
        return None

    now = now or utcnow()
    refund = Refund(
        order_id=order.id,
        line_item=item.index,
        reason=DELIVERY_FAILED_REASON,
        status=RefundStatus.ACCEPTED,
        amount=services.line_item_total(item),
        currency=order.currency,
        origin=RefundOrigin.DELIVERY_FAILED,
        return_received_at=now,
        created_at=now,
        updated_at=now,
    )
    try:
        # The partial unique index decides against a buyer's request written at the
        # same time, which the check above cannot see.
        with session.begin_nested():
            session.add(refund)
    except IntegrityError:
        log.info("refund_automatic_raced", order_id=order.id, line_item=item.index)
        return None

    services.record_refund_event(
        session,
        refund,
        RefundEvent.CREATED,
        SYSTEM_ACTOR,
        to_state=refund.status,
        data={
            "lineItem": item.index,
            "amount": format_amount(refund.amount),
            "origin": str(refund.origin),
            "causedBy": cause_actor,
        },
    )
    review.schedule_payout(session, order, refund)
    services.emit_refund_webhook(
        session, order, webhook_events.ORDERS_REFUND_ACCEPTED, refund
    )
    log.info(
        "refund_created_automatically",
        order_id=order.id,
        refund_id=refund.id,
        line_item=item.index,
    )
    return refund
