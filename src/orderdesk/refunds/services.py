"""Create, find and list refund requests, and record their moves. Services never commit.

A buyer may request a refund for a line item once a package contains it, including
while that package is still on its way. The return window (`return_window_days` in the
settings) starts only when the line item's last outbound package is delivered.

Writers that lock more than one of these rows take them in one order: the order, then
the refund, then the treasury's nonce row. So no two writers wait for each other in a
cycle.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orderdesk.db.base import utcnow
from orderdesk.errors import Conflict
from orderdesk.orders.access import is_uuid
from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.orders.statuses import PaymentState
from orderdesk.payments.amounts import format_amount
from orderdesk.refunds.exceptions import (
    InvalidRefundRequest,
    InvalidTransition,
    LineItemNotShipped,
    OrderNotPaid,
    RefundAlreadyRequested,
    RefundNotFound,
    ReturnWindowExpired,
)
from orderdesk.refunds.models import ACTIVE_STATUSES, Refund
from orderdesk.refunds.schemas import check_reason, refund_body
from orderdesk.refunds.statuses import (
    ALLOWED_MOVES,
    HISTORY_EVENTS,
    RefundEvent,
    RefundOrigin,
    RefundStatus,
    can_move,
)
from orderdesk.shipping.models import Package
from orderdesk.shipping.statuses import PackageKind
from orderdesk.webhooks import events as webhook_events
from orderdesk.webhooks.services import emit_event

log = structlog.get_logger(__name__)

SYSTEM_ACTOR = "system"


def check_line_item_index(order: Order, index: int) -> LineItem:
    """Return the line item at `index`, raising InvalidRefundRequest when the index is
    not an integer from 0 to the number of line items minus one."""
    count = len(order.line_items)
    if type(index) is not int or not 0 <= index < count:
        raise InvalidRefundRequest(
            "lineItem",
            f"{index!r} is out of range: the order has {count} line item(s), "
            f"indexes 0 to {count - 1}",
        )
    return order.line_items[index]


def line_item_total(item: LineItem) -> Decimal:
    """Return the line item's total paid: unit price x quantity, tax and shipping."""
    return paid_total(
        item.total, item.unit_price, item.quantity, item.sales_tax, item.shipping
    )


def paid_total(
    total: Decimal | None,
    unit_price: Decimal | None,
    quantity: int,
    sales_tax: Decimal | None,
    shipping: Decimal | None,
) -> Decimal:
    """Return a line item's total paid from its price columns."""
    if total is not None:
        return total
    goods = (unit_price or Decimal("0")) * quantity
    return goods + (sales_tax or Decimal("0")) + (shipping or Decimal("0"))


def find_active_refund(
    session: Session, order_id: str, line_item: int
) -> Refund | None:
    query = select(Refund).where(
        Refund.order_id == order_id,
        Refund.line_item == line_item,
        Refund.status.in_(ACTIVE_STATUSES),
    )
    return session.scalars(query.execution_options(populate_existing=True)).first()


def get_refund(
    session: Session, order: Order, refund_id: str, *, for_update: bool = False
) -> Refund:
    """Return the order's refund with this id, locked FOR UPDATE when asked.

    Raises RefundNotFound for an unknown or malformed id and for a refund of another
    order, so refund ids cannot be probed across orders.
    """
    if not is_uuid(refund_id):
        raise RefundNotFound(refund_id, order.id)
    query = select(Refund).where(Refund.id == refund_id, Refund.order_id == order.id)
    if for_update:
        query = query.with_for_update()
    refund = session.scalars(query.execution_options(populate_existing=True)).first()
    if refund is None:
        raise RefundNotFound(refund_id, order.id)
    return refund


def lock_refund(session: Session, refund_id: str) -> Refund | None:
    """Lock the refund row (FOR UPDATE on PostgreSQL) and reload it."""
    query = (
        select(Refund)
        .where(Refund.id == refund_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


def list_refunds(
    session: Session, order: Order, line_item: int | None = None
) -> list[Refund]:
    """Return the order's refund requests oldest first, optionally of one line item."""
    query = select(Refund).where(Refund.order_id == order.id)
    if line_item is not None:
        check_line_item_index(order, line_item)
        query = query.where(Refund.line_item == line_item)
    return list(session.scalars(query.order_by(Refund.created_at, Refund.id)))


def create_refund_request(
    session: Session,
    order: Order,
    line_item: int,
    reason: str,
    *,
    return_window: timedelta,
    actor: str,
    now: datetime | None = None,
) -> Refund:
    """Create a refund request for one line item of a paid, shipped order.

    Raises InvalidRefundRequest, OrderNotPaid, LineItemNotShipped,
    RefundAlreadyRequested (carrying the active request) and ReturnWindowExpired.
    At most one active request per line item exists: the partial unique index on
    refunds decides between concurrent requests, not only the check below.
    """
    now = now or utcnow()
    item = check_line_item_index(order, line_item)
    try:
        reason = check_reason(reason)
    except ValueError as exc:
        raise InvalidRefundRequest("reason", str(exc)) from exc

    if order.payment_state != PaymentState.COMPLETED:
        raise OrderNotPaid(order.id, order.payment_state, "requesting a refund")
    if not _is_shipped(session, order.id, line_item):
        raise LineItemNotShipped(order.id, line_item)
    active = find_active_refund(session, order.id, line_item)
    if active is not None:
        raise RefundAlreadyRequested(line_item, refund_body(active))
    if item.delivered_at is not None and now > item.delivered_at + return_window:
        raise ReturnWindowExpired(
            line_item, item.delivered_at, item.delivered_at + return_window
        )

    refund = Refund(
        order_id=order.id,
        line_item=line_item,
        reason=reason,
        status=RefundStatus.INITIATED,
        amount=line_item_total(item),
        currency=order.currency,
        origin=RefundOrigin.BUYER,
        created_at=now,
        updated_at=now,
    )
    _insert_once(session, refund)
    record_refund_event(
        session,
        refund,
        RefundEvent.REQUESTED,
        actor,
        to_state=refund.status,
        data={"lineItem": line_item, "amount": format_amount(refund.amount)},
    )
    emit_refund_webhook(session, order, webhook_events.ORDERS_REFUND_INITIATED, refund)
    log.info(
        "refund_requested", order_id=order.id, refund_id=refund.id, line_item=line_item
    )
    return refund


def record_refund_event(
    session: Session,
    refund: Refund,
    kind: RefundEvent,
    actor: str,
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    data: dict[str, Any] | None = None,
) -> OrderEvent:
    """Add an OrderEvent about the refund. A status event also shows in the
    refund's `history`, so it is flushed and the loaded history is expired."""
    event = OrderEvent(
        order_id=refund.order_id,
        kind=kind,
        subject_id=refund.id,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        data=data,
        created_at=utcnow(),
    )
    session.add(event)
    if kind in HISTORY_EVENTS:
        session.flush()
        session.expire(refund, ["history_events"])
    return event


def check_move(refund: Refund, target: RefundStatus, action: str) -> None:
    """Raise InvalidTransition unless the refund may move to `target`. `action`
    completes "it cannot be ...", as in "accepted"."""
    if not can_move(refund.status, target):
        allowed = sorted(
            str(move) for move in ALLOWED_MOVES[RefundStatus(refund.status)]
        )
        raise InvalidTransition(refund.id, refund.status, action, allowed)


def move_status(
    session: Session,
    refund: Refund,
    target: RefundStatus,
    actor: str,
    *,
    action: str,
    data: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Move the locked refund to `target` and record who did it and when."""
    check_move(refund, target, action)
    previous = refund.status
    refund.status = target
    refund.updated_at = now or utcnow()
    record_refund_event(
        session,
        refund,
        RefundEvent.STATUS_CHANGED,
        actor,
        from_state=previous,
        to_state=target,
        data=data,
    )
    log.info(
        "refund_status_changed",
        order_id=refund.order_id,
        refund_id=refund.id,
        from_status=previous,
        to_status=str(target),
        actor=actor,
    )


def emit_refund_webhook(
    session: Session, order: Order, event_type: str, refund: Refund
) -> None:
    """Queue the refund webhook `event_type` with the refund as the API shows it."""
    emit_event(
        session, order.project_id, event_type, refund_body(refund), order_id=order.id
    )


def _is_shipped(session: Session, order_id: str, line_item: int) -> bool:
    query = select(Package.line_items).where(
        Package.order_id == order_id, Package.kind == PackageKind.OUTBOUND
    )
    return any(line_item in indexes for indexes in session.scalars(query))


def _insert_once(session: Session, refund: Refund) -> None:
    """Insert the request, or raise RefundAlreadyRequested with the one a concurrent
    request inserted first (the partial unique index rejects the second)."""
    try:
        with session.begin_nested():
            session.add(refund)
    except IntegrityError as exc:
        winner = find_active_refund(session, refund.order_id, refund.line_item)
        log.info(
            "refund_request_raced",
            order_id=refund.order_id,
            line_item=refund.line_item,
            winner_id=winner.id if winner else None,
        )
        if winner is None:
            raise Conflict(
                "Another refund request for this line item was being written at the "
                "same time. Retry the request.",
                code="refund_request_conflict",
            ) from exc
        raise RefundAlreadyRequested(refund.line_item, refund_body(winner)) from exc
