"""Catalog products: the only source of prices."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from orderdesk.db.base import Base, DecimalText, UTCDateTime, new_id, utcnow


class Product(Base):
    __tablename__ = "catalog_products"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Normalised locator: "amazon:<ASIN>" or "shopify:<product URL>:<variant id>".
    locator: Mapped[str] = mapped_column(String(600), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str] = mapped_column(String(1000), default="")
    price: Mapped[Decimal] = mapped_column(DecimalText)
    # Shipping charged per unit, in USD.
    shipping: Mapped[Decimal] = mapped_column(DecimalText)
    stock: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )
