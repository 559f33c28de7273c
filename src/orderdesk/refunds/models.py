"""Refund requests, their payout transactions and request idempotency records."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    and_,
    text,
)
from sqlalchemy.orm import Mapped, foreign, mapped_column, relationship

from orderdesk.db.base import Base, DecimalText, UTCDateTime, new_id, utcnow
from orderdesk.orders.models import OrderEvent

# Statuses that block a new request for the same line item.
ACTIVE_STATUSES = (
    "refund-request-initiated",
    "refund-request-accepted",
    "refund-request-completed",
)
_ACTIVE_SQL = "status IN ({})".format(
    ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
)
# Payout transaction states that may still move tokens (`TransactionState` without
# "dead"). At most one such transaction exists per refund.
LIVE_PAYOUT_STATES = ("signed", "sent", "confirmed")
_LIVE_PAYOUT_SQL = "status IN ({})".format(
    ", ".join(f"'{state}'" for state in LIVE_PAYOUT_STATES)
)
# The OrderEvent kinds that set a refund's status, shown as its history.
HISTORY_EVENT_KINDS = ("refund.requested", "refund.created", "refund.status_changed")


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
    # While this is in the future, one process has the claim to request this refund's
    # label from the provider, and no other process requests it meanwhile.
    label_claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    return_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The payout as the API shows it (`PayoutStatus`). The transactions themselves
    # are Payout rows.
    payout_status: Mapped[str | None] = mapped_column(String(40))
    payout_message: Mapped[str | None] = mapped_column(Text)
    payout_chain: Mapped[str | None] = mapped_column(String(40))
    payout_tx_id: Mapped[str | None] = mapped_column(String(66))
    # Failed funding checks in a row, for the retry backoff.
    payout_retries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    history_events: Mapped[list[OrderEvent]] = relationship(
        OrderEvent,
        primaryjoin=lambda: and_(
            foreign(OrderEvent.subject_id) == Refund.id,
            OrderEvent.kind.in_(HISTORY_EVENT_KINDS),
        ),
        order_by=lambda: OrderEvent.id,
        viewonly=True,
        lazy="selectin",
    )


class Payout(Base):
    """One signed token transfer paying out a refund.

    The row, with the raw transaction and its hash, is committed before the
    transaction is broadcast, so a retry finds it and looks it up instead of signing
    another transfer.
    """

    __tablename__ = "refund_payouts"
    __table_args__ = (
        # One transaction that may still move tokens per refund.
        Index(
            "uq_refund_payouts_live",
            "refund_id",
            unique=True,
            sqlite_where=text(_LIVE_PAYOUT_SQL),
            postgresql_where=text(_LIVE_PAYOUT_SQL),
        ),
        # A nonce is allocated once per treasury address.
        UniqueConstraint("chain", "from_address", "nonce"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    refund_id: Mapped[str] = mapped_column(ForeignKey("refunds.id"), index=True)
    # 1 for the first transaction; a new one is signed only after the last is dead.
    attempt: Mapped[int] = mapped_column(Integer)
    chain: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(20))
    token_address: Mapped[str] = mapped_column(String(42))
    amount: Mapped[Decimal] = mapped_column(DecimalText)
    # The amount in the token's base units, as decimal text (a uint256 may not fit
    # a database integer).
    base_units: Mapped[str] = mapped_column(String(80))
    from_address: Mapped[str] = mapped_column(String(42))
    to_address: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    raw_transaction: Mapped[bytes] = mapped_column(LargeBinary)
    # `TransactionState`: signed, sent, confirmed or dead.
    status: Mapped[str] = mapped_column(String(10))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    # Why the transaction is dead, or the node's last rejection of it.
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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
