"""Create, quote, edit and list orders. Services never commit."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from orderdesk.auth.models import Project
from orderdesk.auth.services import KeyPrincipal, hash_secret, random_token
from orderdesk.catalog.locators import parse_locator
from orderdesk.catalog.pricing import line_charges, sales_tax_rate
from orderdesk.catalog.services import find_products
from orderdesk.config import Settings
from orderdesk.db.base import new_id, utcnow
from orderdesk.errors import Conflict, InvalidInput
from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.orders.schemas import (
    LineItemIn,
    OrderCreate,
    OrderUpdate,
    PaymentIn,
    RecipientIn,
)
from orderdesk.orders.statuses import (
    LineItemQuoteStatus,
    PaymentState,
    Phase,
    QuoteStatus,
)
from orderdesk.webhooks import events, notify

DEFAULT_PAGE_SIZE = 30
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class PaymentTarget:
    """A validated payment method: a configured chain and one of its tokens."""

    chain: str
    currency: str


def resolve_payment_method(chains: Any, payment: PaymentIn) -> PaymentTarget:
    """Check that the method names a configured chain and the currency its token."""
    names = chains.names() if chains is not None else []
    chain = chains.get(payment.method) if chains is not None else None
    if chain is None:
        raise InvalidInput(
            f"payment.method {payment.method!r} is not a configured chain. "
            f"Supported: {', '.join(names) or 'none'}.",
            code="unsupported_payment_method",
            details=[{"field": "payment.method", "message": f"use one of {names}"}],
        )
    currency = payment.currency.lower()
    if currency not in chain.tokens:
        supported = sorted(chain.tokens)
        raise InvalidInput(
            f"payment.currency {payment.currency!r} is not configured on "
            f"{payment.method}. "
            f"Supported: {', '.join(supported)}.",
            code="unsupported_currency",
            details=[
                {"field": "payment.currency", "message": f"use one of {supported}"}
            ],
        )
    return PaymentTarget(payment.method, currency)


def record_event(
    session: Session,
    order: Order,
    kind: str,
    actor: str,
    *,
    subject_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    data: dict[str, Any] | None = None,
) -> OrderEvent:
    event = OrderEvent(
        order_id=order.id,
        kind=kind,
        subject_id=subject_id,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        data=data,
    )
    session.add(event)
    return event


def create_order(
    session: Session,
    settings: Settings,
    chains: Any,
    principal: KeyPrincipal,
    body: OrderCreate,
) -> tuple[Order, str | None]:
    """Create an order (or, for state "draft", price one without storing it).

    Returns the order and its client secret, which is None for a draft.
    """
    target = resolve_payment_method(chains, body.payment)
    project = session.get(Project, principal.project_id)
    if project is None:  # pragma: no cover - keys always belong to a project
        raise InvalidInput("The API key's project no longer exists.")
    secret = random_token(48)
    now = utcnow()
    order = Order(
        id=new_id(),
        project_id=project.id,
        client_secret_hash=hash_secret(secret),
        locale=body.locale,
        treasury_address=project.treasury_address,
        payment_state=PaymentState.UNPAID,
        refunded_amount=Decimal("0"),
        created_at=now,
        updated_at=now,
    )
    _apply_payment(order, body.payment, target)
    order.recipient = body.recipient.to_json() if body.recipient else None
    order.line_items = [
        _new_line_item(index, item, target.chain)
        for index, item in enumerate(body.items())
    ]
    _check_recipient(body.recipient)
    price_order(session, settings, order, now)
    if body.state == "draft":
        return order, None
    session.add(order)
    session.flush()
    record_event(
        session, order, "order.created", principal.actor, to_state=order.quote_status
    )
    notify.order_event(session, order, events.ORDERS_QUOTE_CREATED, chains)
    return order, secret


def _new_line_item(index: int, item: LineItemIn, chain: str) -> LineItem:
    try:
        locator = parse_locator(item.product_locator)
    except InvalidInput as exc:
        exc.details = [
            {"field": f"lineItems.{index}.productLocator", "message": exc.message}
        ]
        raise
    return LineItem(
        id=new_id(),
        index=index,
        locator=locator.key,
        quantity=item.quantity,
        quote_status=LineItemQuoteStatus.ITEM_UNAVAILABLE,
        delivery_status="awaiting-payment",
    )


def _check_recipient(recipient: RecipientIn | None) -> None:
    address = recipient.physical_address if recipient else None
    if address is None:
        return
    try:
        address.check_us_formats()
    except ValueError as exc:
        field = "state" if "state" in str(exc) else "postalCode"
        raise InvalidInput(
            f"recipient.physicalAddress {exc}.",
            details=[
                {"field": f"recipient.physicalAddress.{field}", "message": str(exc)}
            ],
        ) from exc


def _apply_payment(order: Order, payment: PaymentIn, target: PaymentTarget) -> None:
    order.payment_method = target.chain
    order.currency = target.currency
    order.payer_address = payment.payer_address
    order.receipt_email = payment.receipt_email


def price_order(
    session: Session, settings: Settings, order: Order, now: datetime
) -> None:
    """Price every line item from the catalog and set the quote status and expiry."""
    products = find_products(session, [item.locator for item in order.line_items])
    recipient = order.recipient or {}
    address = recipient.get("physicalAddress") or {}
    address_complete = _address_complete(address)
    rate = sales_tax_rate(
        settings.tax_rate_table, address.get("country", ""), address.get("state")
    )
    total = Decimal("0")
    available = 0
    for item in order.line_items:
        product = products.get(item.locator)
        if product is None or product.stock < item.quantity:
            item.quote_status = LineItemQuoteStatus.ITEM_UNAVAILABLE
            item.unit_price = item.sales_tax = item.shipping = item.total = None
            if product is not None:
                _copy_metadata(item, product)
            continue
        available += 1
        _copy_metadata(item, product)
        charges = line_charges(product.price, product.shipping, item.quantity, rate)
        item.unit_price = charges.unit
        item.shipping = charges.shipping
        if recipient and address_complete:
            item.quote_status = LineItemQuoteStatus.VALID
            item.sales_tax = charges.sales_tax
            item.total = charges.total
        else:
            item.quote_status = LineItemQuoteStatus.REQUIRES_RECIPIENT
            item.sales_tax = None
            item.total = charges.total - charges.sales_tax
        total += item.total
    order.total_amount = total
    order.quoted_at = now
    order.expires_at = now + timedelta(seconds=settings.quote_ttl_seconds)
    if available == 0:
        order.quote_status = QuoteStatus.ALL_LINE_ITEMS_UNAVAILABLE
    elif not recipient:
        order.quote_status = QuoteStatus.REQUIRES_RECIPIENT
    elif not address_complete:
        order.quote_status = QuoteStatus.REQUIRES_PHYSICAL_ADDRESS
    else:
        order.quote_status = QuoteStatus.VALID
    order.phase = (
        Phase.PAYMENT if order.quote_status == QuoteStatus.VALID else Phase.QUOTE
    )


def _address_complete(address: dict[str, Any]) -> bool:
    required = ["name", "line1", "city", "postalCode", "country"]
    if address.get("country") == "US":
        required.append("state")
    return all(address.get(field) for field in required)


def _copy_metadata(item: LineItem, product: Any) -> None:
    item.name = product.name
    item.description = product.description
    item.image_url = product.image_url


def update_order(
    session: Session,
    settings: Settings,
    chains: Any,
    order: Order,
    body: OrderUpdate,
    actor: str,
) -> Order:
    """Apply a PATCH and re-quote. Only allowed before a payment was submitted."""
    if order.payment_state != PaymentState.UNPAID:
        raise Conflict(
            f"Order {order.id} already has a payment ({order.payment_state}), so it "
            "can no longer be edited. Create a new order instead.",
            code="order_already_paid",
        )
    fields = body.model_fields_set
    if "payment" in fields:
        if body.payment is None:
            raise InvalidInput(
                "payment cannot be null; send the whole payment object.",
                details=[{"field": "payment", "message": "must be an object"}],
            )
        _apply_payment(
            order, body.payment, resolve_payment_method(chains, body.payment)
        )
    if "recipient" in fields:
        _check_recipient(body.recipient)
        order.recipient = body.recipient.to_json() if body.recipient else None
    if "locale" in fields:
        if body.locale is None:
            raise InvalidInput(
                "locale cannot be null.",
                details=[{"field": "locale", "message": "must be a string"}],
            )
        order.locale = body.locale
    now = utcnow()
    order.failure_code = order.failure_message = None
    price_order(session, settings, order, now)
    order.updated_at = now
    record_event(
        session,
        order,
        "order.updated",
        actor,
        to_state=order.quote_status,
        data={"fields": sorted(fields)},
    )
    notify.order_event(session, order, events.ORDERS_QUOTE_UPDATED, chains)
    return order


def reject_line_items_edit(raw: bytes) -> None:
    """Give a clear error for lineItems in a PATCH before the strict model does."""
    try:
        data = json.loads(raw)
    except ValueError:
        return
    if isinstance(data, dict) and "lineItems" in data:
        raise InvalidInput(
            "lineItems cannot be changed after an order is created. "
            "Create a new order.",
            code="line_items_immutable",
            details=[{"field": "lineItems", "message": "cannot be edited"}],
        )


@dataclass
class OrderPage:
    orders: list[Order]
    next_cursor: str | None
    previous_cursor: str | None


def list_orders(
    session: Session, project_id: str, limit: int, cursor: str | None
) -> OrderPage:
    """Return one page of a project's orders, newest first, by keyset pagination."""
    direction, position = ("next", None) if cursor is None else _decode_cursor(cursor)
    query = select(Order).where(Order.project_id == project_id)
    if position is not None:
        created, order_id = position
        if direction == "next":
            query = query.where(
                or_(
                    Order.created_at < created,
                    and_(Order.created_at == created, Order.id < order_id),
                )
            )
        else:
            query = query.where(
                or_(
                    Order.created_at > created,
                    and_(Order.created_at == created, Order.id > order_id),
                )
            )
    if direction == "next":
        query = query.order_by(Order.created_at.desc(), Order.id.desc())
    else:
        query = query.order_by(Order.created_at.asc(), Order.id.asc())
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    if direction == "prev":
        rows.reverse()
    if not rows:
        return OrderPage([], None, None)
    has_next = more if direction == "next" else position is not None
    has_previous = (position is not None) if direction == "next" else more
    return OrderPage(
        rows,
        _encode_cursor("next", rows[-1]) if has_next else None,
        _encode_cursor("prev", rows[0]) if has_previous else None,
    )


def _encode_cursor(direction: str, order: Order) -> str:
    raw = json.dumps([direction, order.created_at.isoformat(), order.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, tuple[datetime, str]]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        direction, created, order_id = json.loads(base64.urlsafe_b64decode(padded))
        if direction not in ("next", "prev") or not isinstance(order_id, str):
            raise ValueError(direction)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError(created)
        return direction, (moment, order_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "cursor is not a cursor this API returned. Pass nextCursor or "
            "previousCursor from an earlier page, or omit it for the first page.",
            code="invalid_cursor",
            details=[{"field": "cursor", "message": "unknown cursor"}],
        ) from exc
