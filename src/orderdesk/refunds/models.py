"""Refund requests and request idempotency records."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from orderdesk.db.base import Base, DecimalText, UTCDateTime, new_id, utcnow

# Statuses that block a new request for the same line item.
ACTIVE_STATUSES = (
    "refund-request-initiated",
    "refund-request-accepted",
    "refund-request-completed",
)
_ACTIVE_SQL = "status IN ({})".format(
    ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
)


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        # At most one active request per line item, enforced by the database so that
        # concurrent requests cannot both pass a read-then-write check.
        Index(
            "uq_refunds_active_line_item",
            "order_id",
            "line_item",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
        Index("ix_refunds_order", "order_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    line_item: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(40))
    amount: Mapped[Decimal] = mapped_column(DecimalText)
    currency: Mapped[str] = mapped_column(String(20))
    # "buyer" for a request, "delivery-failed" for an automatic refund with no return.
    origin: Mapped[str] = mapped_column(String(20), default="buyer")
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    return_carrier: Mapped[str | None] = mapped_column(String(60))
    return_tracking_number: Mapped[str | None] = mapped_column(String(60))
    return_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyRecord(Base):
    """The first response to a request made with an Idempotency-Key, kept 24 hours."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Whose key it is: "project:<id>" or "order:<id>" for a client secret.
    principal: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(255))
    # sha256 of method, path and body, to tell a replay from a reuse.
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, index=True
    )
