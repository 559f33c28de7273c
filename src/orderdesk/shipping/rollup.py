"""Roll package statuses up to line items and the order.

A line item's delivery status is `failed` when an outbound package holding it was
returned to the sender, `completed` when every outbound package holding it is
delivered, and `in-progress` otherwise once the order is paid. `delivered_at` is the
latest delivery among those packages: the return window starts there. A line item
that becomes `failed` gets a full refund with no return (see `refunds.automatic`).
The order's phase is `completed` when every line item is completed or failed. Return
parcels never count here.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from orderdesk.db.base import utcnow
from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.orders.statuses import DeliveryStatus, PaymentState, Phase
from orderdesk.shipping.models import Package
from orderdesk.shipping.statuses import PackageKind, PackageStatus

DONE = frozenset({DeliveryStatus.COMPLETED, DeliveryStatus.FAILED})


def lock_order(session: Session, order_id: str) -> Order:
    """Lock the order row (FOR UPDATE on PostgreSQL) and reload it and its line items.

    Every writer of packages takes this lock first, so two events for packages of one
    order cannot both roll up from a view that misses the other.
    """
    query = (
        select(Order)
        .where(Order.id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one()


def roll_up_delivery(session: Session, order: Order, actor: str) -> list[LineItem]:
    """Recompute every line item's delivery status and the order's phase from the
    outbound packages, recording an event for each change. Returns the line items
    whose status changed. The caller holds the order lock."""
    if order.payment_state != PaymentState.COMPLETED:
        return []
    holders: dict[int, list[Package]] = defaultdict(list)
    packages = session.scalars(
        select(Package).where(
            Package.order_id == order.id, Package.kind == PackageKind.OUTBOUND
        )
    )
    for package in packages:
        for index in package.line_items:
            holders[index].append(package)

    now = utcnow()
    changed = []
    for item in order.line_items:
        status, delivered_at = line_item_delivery(holders[item.index])
        if item.delivery_status != status:
            session.add(
                OrderEvent(
                    order_id=order.id,
                    kind="line_item.delivery_status_changed",
                    subject_id=item.id,
                    from_state=item.delivery_status,
                    to_state=status,
                    actor=actor,
                    data={"lineItem": item.index},
                )
            )
            item.delivery_status = status
            changed.append(item)
        item.delivered_at = delivered_at
    if changed:
        order.updated_at = now
    _roll_up_phase(session, order, actor, now)
    # The webhooks carry the order as it is after this roll-up.
    _notify_delivery(session, order, changed)
    failed = [item for item in changed if item.delivery_status == DeliveryStatus.FAILED]
    if failed:
        # Imported here because refunds imports shipping for its return parcels.
        from orderdesk.refunds.automatic import refund_failed_deliveries

        refund_failed_deliveries(session, order, failed, actor)
    return changed


def _notify_delivery(session: Session, order: Order, changed: list[LineItem]) -> None:
    """Emit orders.delivery.completed when line items completed in this roll-up and
    orders.delivery.failed when some failed: at most one of each, carrying the
    order, whose line items show which."""
    from orderdesk.webhooks import events, notify

    statuses = {item.delivery_status for item in changed}
    if DeliveryStatus.COMPLETED in statuses:
        notify.order_event(session, order, events.ORDERS_DELIVERY_COMPLETED, None)
    if DeliveryStatus.FAILED in statuses:
        notify.order_event(session, order, events.ORDERS_DELIVERY_FAILED, None)


def line_item_delivery(
    packages: list[Package],
) -> tuple[DeliveryStatus, datetime | None]:
    """Return the delivery status of a line item held by these outbound packages and,
    when completed, the latest delivery time."""
    statuses = {package.status for package in packages}
    if PackageStatus.RETURNED_TO_SENDER in statuses:
        return DeliveryStatus.FAILED, None
    if packages and statuses == {PackageStatus.DELIVERED}:
        times = [package.status_at for package in packages if package.status_at]
        return DeliveryStatus.COMPLETED, max(times) if times else None
    return DeliveryStatus.IN_PROGRESS, None


def _roll_up_phase(session: Session, order: Order, actor: str, now: datetime) -> None:
    if order.phase not in (Phase.DELIVERY, Phase.COMPLETED):
        return
    done = all(item.delivery_status in DONE for item in order.line_items)
    phase = Phase.COMPLETED if done else Phase.DELIVERY
    if order.phase == phase:
        return
    session.add(
        OrderEvent(
            order_id=order.id,
            kind="order.phase_changed",
            from_state=order.phase,
            to_state=phase,
            actor=actor,
        )
    )
    order.phase = phase
    order.updated_at = now
