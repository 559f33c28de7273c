"""Packages of an order and the carrier events that move them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orderdesk.db.base import Base, UTCDateTime, new_id, utcnow


class Package(Base):
    __tablename__ = "packages"
    __table_args__ = (
        # One package per carrier and tracking number, whatever the carrier's spelling.
        UniqueConstraint("carrier_key", "tracking_number"),
        Index("ix_packages_order", "order_id", "created_at"),
        Index("ix_packages_tracking_number", "tracking_number"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    # "outbound", or "return" for the parcel a buyer sends back for a refund.
    kind: Mapped[str] = mapped_column(String(10), default="outbound")
    refund_id: Mapped[str | None] = mapped_column(String(36))
    carrier_name: Mapped[str] = mapped_column(String(60))
    # The carrier's code from `carriers.names.carrier_code`: "UPS", "ups" and
    # "United Parcel Service" are all "ups", so they count as one carrier.
    carrier_key: Mapped[str] = mapped_column(String(60))
    # Upper-case with every space removed, so lookups from carrier feeds match.
    tracking_number: Mapped[str] = mapped_column(String(60))
    tracking_url: Mapped[str | None] = mapped_column(String(1000))
    line_items: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(30), default="pending")
    # When the event that set the current status happened.
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lower_bound: Mapped[datetime | None] = mapped_column(UTCDateTime)
    upper_bound: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the estimate above was given, so an older estimate never replaces it.
    estimate_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    events: Mapped[list[TrackingEvent]] = relationship(
        order_by="(TrackingEvent.occurred_at, TrackingEvent.id)",
        lazy="selectin",
        cascade="all, delete-orphan",
    )


class TrackingEvent(Base):
    __tablename__ = "tracking_events"
    __table_args__ = (UniqueConstraint("package_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    package_id: Mapped[str] = mapped_column(
        ForeignKey("packages.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(30))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    description: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(300))
    # Identifies the same carrier event across resends: the provider's event id when
    # there is one, otherwise a hash of status, time, description and location.
    dedupe_key: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(30), default="api")
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
