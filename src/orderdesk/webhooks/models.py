"""Webhook endpoints, the deliveries of events to them and every delivery attempt."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orderdesk.db.base import Base, UTCDateTime, new_id, utcnow


class DeliveryStatus:
    """States of a delivery: pending until one attempt gets a 2xx or all have failed."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"

    ALL = (PENDING, DELIVERED, FAILED)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("ix_webhook_endpoints_project", "project_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    url: Mapped[str] = mapped_column(String(2048))
    # Event type names, or ["*"] for every type.
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(500))
    # NOTE: signing needs the secret itself, so it is stored in clear, unlike API keys.
    secret: Mapped[str] = mapped_column(String(100))
    # The secret before the last rotation. It signs too until the time below.
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        back_populates="endpoint",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class WebhookDelivery(Base):
    """One event for one endpoint: the signed message and the state of its delivery."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "message_id"),
        # Listing newest first, and finding an earlier pending delivery of one order.
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_order", "endpoint_id", "order_id", "status"),
        # Ids are never reused after a delete, so they keep the emit order.
        {"sqlite_autoincrement": True},
    )

    # Ascending in emit order. A delivery waits for pending deliveries of the same
    # endpoint and order with a smaller id.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The id shown in the API.
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    project_id: Mapped[str] = mapped_column(String(36))
    # The svix-id header: one per emitted event, the same for every endpoint and
    # every attempt, so receivers can drop duplicates.
    message_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(60))
    order_id: Mapped[str | None] = mapped_column(String(36))
    # The JSON body exactly as signed and sent, frozen when the event was emitted.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default=DeliveryStatus.PENDING)
    # 0 for the first attempt sequence, then one more for each resend.
    resend_count: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts made in the current sequence.
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    endpoint: Mapped[WebhookEndpoint] = relationship(back_populates="deliveries")
    attempts: Mapped[list[WebhookAttempt]] = relationship(
        order_by="WebhookAttempt.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )


class WebhookAttempt(Base):
    """One HTTP request of a delivery and what came back."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    resend_number: Mapped[int] = mapped_column(Integer)
    attempt_number: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    # At most the first 2048 bytes of the response body, as UTF-8 text.
    response_body: Mapped[str | None] = mapped_column(Text)
