"""Database-level factories: orders, line items and packages written as rows.

They skip the HTTP flow (quote, payment) so that tests of later stages start from a
known state in one call, and they use the same models as the service code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderdesk.auth.services import get_or_create_project, hash_secret, random_token
from orderdesk.config import Settings
from orderdesk.db.base import new_id, utcnow
from orderdesk.orders.models import LineItem, Order
from orderdesk.orders.statuses import DeliveryStatus, PaymentState, Phase
from orderdesk.shipping.models import Package
from orderdesk.shipping.validation import normalize_carrier

RECIPIENT = {
    "email": "buyer@example.com",
    "physicalAddress": {
        "name": "Ada Buyer",
        "line1": "1 Main St",
        "city": "New York",
        "state": "NY",
        "postalCode": "10001",
        "country": "US",
    },
}
PAYER = "0x" + "ab" * 20
TREASURY = "0x" + "cd" * 20


@dataclass
class MadeOrder:
    """An order written by a factory, with the client secret that opens it."""

    id: str
    client_secret: str
    line_item_totals: list[Decimal]


def project_id(session: Session, settings: Settings, name: str = "test-project") -> str:
    """Return the id of the named project, creating it like `make_key` does."""
    return get_or_create_project(session, settings, name).id


def line_item(
    unit_price: str = "10.00",
    quantity: int = 1,
    sales_tax: str = "0.89",
    shipping: str = "4.99",
    **fields: Any,
) -> dict[str, Any]:
    """A line item spec for `make_order`, totalling unit x quantity + tax + shipping."""
    unit = Decimal(unit_price)
    total = unit * quantity + Decimal(sales_tax) + Decimal(shipping)
    return {
        "unit_price": unit,
        "quantity": quantity,
        "sales_tax": Decimal(sales_tax),
        "shipping": Decimal(shipping),
        "total": total,
        **fields,
    }


def make_order(
    session: Session,
    project_id: str,
    line_items: list[dict[str, Any]] | None = None,
    *,
    paid: bool = False,
    currency: str = "usdc",
    created_at: datetime | None = None,
) -> MadeOrder:
    """Write an order with its line items, in the delivery phase when `paid`."""
    specs = line_items if line_items is not None else [line_item()]
    now = created_at or utcnow()
    secret = random_token(48)
    order = Order(
        id=new_id(),
        project_id=project_id,
        client_secret_hash=hash_secret(secret),
        phase=Phase.DELIVERY if paid else Phase.PAYMENT,
        locale="en-US",
        recipient=RECIPIENT,
        quote_status="valid",
        quoted_at=now,
        expires_at=now + timedelta(hours=1),
        total_amount=sum((spec["total"] for spec in specs), Decimal("0")),
        currency=currency,
        payment_method="devnet",
        treasury_address=TREASURY,
        payer_address=PAYER,
        receipt_email=None,
        payment_state=PaymentState.COMPLETED if paid else PaymentState.UNPAID,
        refunded_amount=Decimal("0"),
        created_at=now,
        updated_at=now,
    )
    if paid:
        order.payment_tx_id = "0x" + new_id().replace("-", "").ljust(64, "0")
        order.paid_from = PAYER
        order.received_amount = order.total_amount
        order.paid_at = now
    for index, spec in enumerate(specs):
        spec = dict(spec)
        order.line_items.append(
            LineItem(
                id=new_id(),
                index=index,
                locator=spec.pop("locator", f"amazon:B00TEST{index:03d}"),
                name=spec.pop("name", f"Test product {index}"),
                quote_status="valid",
                delivery_status=(
                    DeliveryStatus.IN_PROGRESS
                    if paid
                    else DeliveryStatus.AWAITING_PAYMENT
                ),
                **spec,
            )
        )
    session.add(order)
    session.flush()
    return MadeOrder(order.id, secret, [item.total for item in order.line_items])


def make_paid_order(
    session: Session,
    project_id: str,
    line_items: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> MadeOrder:
    """Write a paid order in the delivery phase, ready for shipments."""
    return make_order(session, project_id, line_items, paid=True, **kw)


def make_package(
    session: Session,
    order_id: str,
    line_items: list[int],
    *,
    status: str = "shipped",
    status_at: datetime | None = None,
    carrier: str = "UPS",
    tracking_number: str | None = None,
    kind: str = "outbound",
) -> Package:
    """Write a package row directly, with no events and no roll-up."""
    now = utcnow()
    count = session.scalar(select(func.count()).select_from(Package)) or 0
    package = Package(
        order_id=order_id,
        kind=kind,
        carrier_name=carrier,
        carrier_key=normalize_carrier(carrier)[1],
        tracking_number=tracking_number
        or f"1ZTEST{count:06d}{random_token(6).upper()}",
        line_items=line_items,
        status=status,
        status_at=status_at or (now if status != "pending" else None),
        created_at=now,
        updated_at=now,
    )
    session.add(package)
    session.flush()
    return package


def set_delivered(
    session: Session, order_id: str, index: int, delivered_at: datetime
) -> None:
    """Mark a line item delivered at `delivered_at`, as the tracking roll-up would."""
    item = session.scalars(
        select(LineItem).where(LineItem.order_id == order_id, LineItem.index == index)
    ).one()
    item.delivery_status = DeliveryStatus.COMPLETED
    item.delivered_at = delivered_at


__all__ = [
    "MadeOrder",
    "line_item",
    "make_order",
    "make_package",
    "make_paid_order",
    "project_id",
    "set_delivered",
]
