"""Models of the API's replies: snake_case attributes over the camelCase wire names.

Every model keeps fields it does not declare (`extra="allow"`), so a field that a
newer server adds never breaks parsing. Such a field is an attribute under its wire
name. Status values are plain strings for the same reason, and the docstrings list
the values the API documents. Amounts are `Decimal` and times are timezone-aware
`datetime` values. `model_dump(by_alias=True)` returns the wire shape.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of the reply models: camelCase aliases, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, alias_generator=to_camel
    )


class Money(ApiModel):
    amount: Decimal
    currency: str


# Orders


class PhysicalAddress(ApiModel):
    name: str | None = None
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Recipient(ApiModel):
    email: str | None = None
    wallet_address: str | None = None
    physical_address: PhysicalAddress | None = None


class LineItemMetadata(ApiModel):
    name: str | None = None
    description: str | None = None
    image_url: str | None = None


class Charges(ApiModel):
    unit: Money
    sales_tax: Money | None = None
    shipping: Money | None = None


class LineItemQuote(ApiModel):
    """`status`: valid, item-unavailable, expired or requires-recipient."""

    status: str
    charges: Charges | None = None
    total_price: Money | None = None


class LineItemDelivery(ApiModel):
    """`status`: awaiting-payment, in-progress, completed or failed."""

    status: str
    recipient: Recipient | None = None


class LineItem(ApiModel):
    chain: str | None = None
    quantity: int
    product_locator: str | None = None
    metadata: LineItemMetadata = Field(default_factory=LineItemMetadata)
    quote: LineItemQuote
    delivery: LineItemDelivery | None = None


class Quote(ApiModel):
    """`status`: valid, expired, requires-recipient, requires-physical-address or
    all-line-items-unavailable."""

    status: str
    quoted_at: datetime | None = None
    expires_at: datetime | None = None
    total_price: Money | None = None


class PaymentPreparation(ApiModel):
    """The unsigned EIP-1559 token transfer for the payer to sign and send."""

    chain: str
    payer_address: str
    serialized_transaction: str


class PaymentReceived(Money):
    tx_id: str | None = None
    chain: str | None = None


class FailureReason(ApiModel):
    """`code`: tx-id-not-found, tx-failed, wrong-token, wrong-recipient, wrong-payer,
    insufficient-funds or tx-already-used."""

    code: str
    message: str | None = None


class Payment(ApiModel):
    """`status`: requires-quote, requires-crypto-payer-address, requires-email,
    crypto-payer-insufficient-funds, awaiting-payment, in-progress or completed."""

    status: str
    method: str
    currency: str
    receipt_email: str | None = None
    preparation: PaymentPreparation | None = None
    received: PaymentReceived | None = None
    refunded: Money | None = None
    failure_reason: FailureReason | None = None


class OrderFields(ApiModel):
    """The fields of a stored order and of a draft. `phase`: quote, payment,
    delivery or completed."""

    phase: str
    locale: str | None = None
    line_items: list[LineItem]
    quote: Quote
    payment: Payment
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Order(OrderFields):
    order_id: str


class OrderPreview(OrderFields):
    """A draft: priced like an order, but not stored, so it has no id."""

    order_id: None = None


class CreatedOrder(ApiModel):
    """The reply of create. `client_secret` authorises calls for this one order, so
    a buyer's browser can use it in place of an API key."""

    client_secret: str
    order: Order


class DraftOrder(ApiModel):
    """The reply of create with `state="draft"`: a preview with no secret."""

    client_secret: None = None
    order: OrderPreview


class OrderPage(ApiModel):
    """One page of orders, newest first. Pass `next_cursor` to get the next page."""

    data: list[Order]
    next_cursor: str | None = None
    previous_cursor: str | None = None


# Tracking


class TimeRange(ApiModel):
    """A delivery estimate; a bound is None when the carrier gave none."""

    lower_bound: datetime | None = None
    upper_bound: datetime | None = None


class PackageTracking(ApiModel):
    carrier_name: str
    carrier_tracking_number: str


class TrackingEvent(ApiModel):
    """`status`: one of the package statuses listed on `Package`."""

    status: str
    occurred_at: datetime
    description: str | None = None
    location: str | None = None


class Package(ApiModel):
    """One parcel. `status`: pending, shipped, out-for-delivery, delivery-attempted,
    available-for-pickup, delivered, exception or returned-to-sender. `kind`:
    outbound, or return for a refund's return parcel. `line_items` lists indexes
    into the order's line items."""

    package_id: str | None = None
    kind: str | None = None
    status: str
    package_tracking: PackageTracking
    delivery_time_range: TimeRange = Field(default_factory=TimeRange)
    line_items: list[int] = Field(default_factory=list)
    tracking_url: str | None = None
    refund_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    events: list[TrackingEvent] = Field(default_factory=list)


# Refunds


class ReturnLabel(ApiModel):
    carrier_name: str | None = None
    carrier_tracking_number: str | None = None


class Payout(ApiModel):
    """The transfer that pays a refund back. `tx_id` is None until it is signed."""

    status: str | None = None
    tx_id: str | None = None
    chain: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    message: str | None = None


class RefundHistoryEntry(ApiModel):
    status: str
    at: datetime | None = None
    actor: str | None = None


class Refund(ApiModel):
    """`status`: refund-request-initiated, refund-request-accepted,
    refund-request-rejected or refund-request-completed."""

    order_id: str
    line_item: int
    reason: str | None = None
    status: str
    refund_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    amount: Money | None = None
    origin: str | None = None
    rejection_reason: str | None = None
    return_label: ReturnLabel | None = None
    return_received_at: datetime | None = None
    payout: Payout | None = None
    history: list[RefundHistoryEntry] = Field(default_factory=list)


# Webhooks


class WebhookEndpoint(ApiModel):
    """A registered receiver. `secret` (`whsec_...`) is set only in the replies of
    create and rotate_secret, the only times the server shows it."""

    id: str
    url: str
    events: list[str]
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    previous_secret_expires_at: datetime | None = None
    secret: str | None = None


class DeliveryAttempt(ApiModel):
    attempted_at: datetime | None = None
    resend_number: int | None = None
    attempt_number: int | None = None
    url: str | None = None
    succeeded: bool | None = None
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    response_body: str | None = None


class Delivery(ApiModel):
    """One event sent to one endpoint. `status`: pending, delivered or failed.
    `payload` is the `{type, timestamp, data}` body the endpoint receives."""

    delivery_id: str
    endpoint_id: str | None = None
    message_id: str | None = None
    event_type: str | None = None
    order_id: str | None = None
    status: str
    payload: dict[str, Any] = Field(default_factory=dict)
    resend_count: int | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    attempts: list[DeliveryAttempt] = Field(default_factory=list)


class DeliveryPage(ApiModel):
    """One page of deliveries, newest first."""

    data: list[Delivery]
    next_cursor: str | None = None
    previous_cursor: str | None = None
