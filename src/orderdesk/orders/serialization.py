"""Shape orders as the API returns them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from orderdesk.db.base import utcnow
from orderdesk.orders.models import LineItem, Order
from orderdesk.orders.statuses import (
    LineItemQuoteStatus,
    PaymentState,
    PaymentStatus,
    Phase,
    QuoteStatus,
)
from orderdesk.payments.amounts import format_amount, to_base_units
from orderdesk.timefmt import iso

log = structlog.get_logger(__name__)


def money(amount: Decimal, currency: str) -> dict[str, str]:
    return {"amount": format_amount(amount), "currency": currency}


def is_expired(order: Order, now: datetime) -> bool:
    """Return whether an unpaid order's quote has run out. A payment stops the clock."""
    return order.payment_state == PaymentState.UNPAID and now >= order.expires_at


def effective_quote_status(order: Order, now: datetime) -> str:
    if order.quote_status == QuoteStatus.VALID and is_expired(order, now):
        return QuoteStatus.EXPIRED
    return order.quote_status


def order_email(order: Order) -> str | None:
    """The address that order mail (receipts, return labels) goes to."""
    return (order.recipient or {}).get("email") or order.receipt_email


def serialize_order(
    order: Order, chains: Any = None, now: datetime | None = None
) -> dict[str, Any]:
    now = now or utcnow()
    quote_status = effective_quote_status(order, now)
    expired = quote_status == QuoteStatus.EXPIRED
    phase = order.phase
    if order.payment_state == PaymentState.UNPAID:
        phase = Phase.PAYMENT if quote_status == QuoteStatus.VALID else Phase.QUOTE
    return {
        "orderId": order.id,
        "phase": str(phase),
        "locale": order.locale,
        "lineItems": [_line_item(order, item, expired) for item in order.line_items],
        "quote": {
            "status": str(quote_status),
            "quotedAt": iso(order.quoted_at),
            "expiresAt": iso(order.expires_at),
            "totalPrice": money(order.total_amount, order.currency),
        },
        "payment": _payment(order, str(quote_status), chains),
        "createdAt": iso(order.created_at),
        "updatedAt": iso(order.updated_at),
    }


def _line_item(order: Order, item: LineItem, expired: bool) -> dict[str, Any]:
    status = item.quote_status
    if expired and status == LineItemQuoteStatus.VALID:
        status = LineItemQuoteStatus.EXPIRED
    quote: dict[str, Any] = {"status": str(status)}
    if item.unit_price is not None:
        charges: dict[str, Any] = {"unit": money(item.unit_price, order.currency)}
        if item.sales_tax is not None:
            charges["salesTax"] = money(item.sales_tax, order.currency)
        if item.shipping is not None:
            charges["shipping"] = money(item.shipping, order.currency)
        quote["charges"] = charges
        if item.total is not None:
            quote["totalPrice"] = money(item.total, order.currency)
    return {
        "chain": order.payment_method,
        "quantity": item.quantity,
        "productLocator": item.locator,
        "metadata": {
            "name": item.name,
            "description": item.description,
            "imageUrl": item.image_url,
        },
        "quote": quote,
        "delivery": {
            "status": item.delivery_status,
            "recipient": order.recipient,
        },
    }


def _payment(order: Order, quote_status: str, chains: Any) -> dict[str, Any]:
    payment: dict[str, Any] = {
        "method": order.payment_method,
        "currency": order.currency,
    }
    if order.receipt_email:
        payment["receiptEmail"] = order.receipt_email
    if order.payment_state == PaymentState.COMPLETED:
        payment["status"] = PaymentStatus.COMPLETED
        payment["received"] = {
            "amount": format_amount(order.received_amount or Decimal("0")),
            "currency": order.currency,
            "txId": order.payment_tx_id,
            "chain": order.payment_method,
        }
    elif order.payment_state == PaymentState.IN_PROGRESS:
        payment["status"] = PaymentStatus.IN_PROGRESS
    else:
        payment["status"] = _unpaid_status(order, quote_status, chains, payment)
    if order.refunded_amount:
        payment["refunded"] = money(order.refunded_amount, order.currency)
    if order.failure_code and order.payment_state != PaymentState.COMPLETED:
        payment["failureReason"] = {
            "code": order.failure_code,
            "message": order.failure_message,
        }
    return payment


def _unpaid_status(
    order: Order, quote_status: str, chains: Any, payment: dict[str, Any]
) -> str:
    if quote_status != QuoteStatus.VALID:
        return PaymentStatus.REQUIRES_QUOTE
    if not order_email(order):
        return PaymentStatus.REQUIRES_EMAIL
    if not order.payer_address:
        return PaymentStatus.REQUIRES_CRYPTO_PAYER_ADDRESS
    chain = chains.get(order.payment_method) if chains is not None else None
    if chain is None:
        return PaymentStatus.AWAITING_PAYMENT
    try:
        from orderdesk.payments.preparation import build_preparation, token_balance

        token = chain.tokens[order.currency]
        required = to_base_units(order.total_amount, token.decimals)
        if token_balance(chain, token, order.payer_address) < required:
            return PaymentStatus.CRYPTO_PAYER_INSUFFICIENT_FUNDS
        payment["preparation"] = build_preparation(
            chain, token, order.payer_address, order.treasury_address, required
        )
    except Exception as exc:  # noqa: BLE001 - the order still shows without it
        # The chain node may be down; the buyer can still pay with a transfer they
        # build themselves, so the order is returned without the preparation.
        log.warning("payment_preparation_failed", order_id=order.id, error=repr(exc))
    return PaymentStatus.AWAITING_PAYMENT
