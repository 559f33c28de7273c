"""Orders, their line items and the append-only event history."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orderdesk.db.base import Base, DecimalText, UTCDateTime, new_id, utcnow


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        # Keyset pagination: newest first within a project.
        Index("ix_orders_project_created", "project_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    client_secret_hash: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(20))
    locale: Mapped[str] = mapped_column(String(35))
    # The recipient exactly as validated: {email?, walletAddress?, physicalAddress?}.
    recipient: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    quote_status: Mapped[str] = mapped_column(String(40))
    quoted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    total_amount: Mapped[Decimal] = mapped_column(DecimalText)
    currency: Mapped[str] = mapped_column(String(20))

    payment_method: Mapped[str] = mapped_column(String(40))
    # The project's treasury when the order was quoted: the address the payment goes to.
    treasury_address: Mapped[str] = mapped_column(String(42))
    payer_address: Mapped[str | None] = mapped_column(String(42))
    receipt_email: Mapped[str | None] = mapped_column(String(320))
    # Set while a payment is being checked or once it completed; unique so that one
    # transaction can pay only one order. A failed check clears it again.
    payment_tx_id: Mapped[str | None] = mapped_column(String(66), unique=True)
    payment_state: Mapped[str] = mapped_column(String(20), default="unpaid")
    paid_from: Mapped[str | None] = mapped_column(String(42))
    received_base_units: Mapped[str | None] = mapped_column(String(80))
    received_amount: Mapped[Decimal | None] = mapped_column(DecimalText)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failure_code: Mapped[str | None] = mapped_column(String(40))
    failure_message: Mapped[str | None] = mapped_column(Text)
    refunded_amount: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal("0"))

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    line_items: Mapped[list[LineItem]] = relationship(
        back_populates="order",
        order_by="LineItem.index",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class LineItem(Base):
    __tablename__ = "order_line_items"
    __table_args__ = (UniqueConstraint("order_id", "index"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    locator: Mapped[str] = mapped_column(String(600))
    quantity: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(300), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str] = mapped_column(String(1000), default="")
    quote_status: Mapped[str] = mapped_column(String(30))
    unit_price: Mapped[Decimal | None] = mapped_column(DecimalText)
    sales_tax: Mapped[Decimal | None] = mapped_column(DecimalText)
    shipping: Mapped[Decimal | None] = mapped_column(DecimalText)
    total: Mapped[Decimal | None] = mapped_column(DecimalText)
    delivery_status: Mapped[str] = mapped_column(String(20), default="awaiting-payment")
    # When the last outbound package holding this item was delivered: the return
    # window starts here.
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    order: Mapped[Order] = relationship(back_populates="line_items")


class OrderEvent(Base):
    """One recorded change of an order or of something that belongs to it."""

    __tablename__ = "order_events"
    __table_args__ = (
        # A refund's history is the events whose subject is the refund.
        Index("ix_order_events_subject", "subject_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(60))
    subject_id: Mapped[str | None] = mapped_column(String(36))
    from_state: Mapped[str | None] = mapped_column(String(40))
    to_state: Mapped[str | None] = mapped_column(String(40))
    # "api_key:<id>", "client_secret", "console:<user id>", "system" or "cli".
    actor: Mapped[str] = mapped_column(String(80))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OrderRevision(Base):
    """How many committed transactions changed the order, for reply caches.

    Raised by `orders.revision` just before each such commit. A missing row is
    revision 0. There is deliberately no foreign key to orders: checking it would
    take a share lock on the order row, which `orders.revision` explains.
    """

    __tablename__ = "order_revisions"

    order_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)


# Registers the Session listeners that keep order_revisions current.
from orderdesk.orders import revision as _revision  # noqa: E402, F401
