"""Projects and their API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from orderdesk.db.base import Base, UTCDateTime, new_id, utcnow


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # The index from which the treasury key is derived; never the key itself.
    treasury_index: Mapped[int] = mapped_column(Integer, unique=True)
    treasury_address: Mapped[str] = mapped_column(String(42))
    fulfilment_provider: Mapped[str] = mapped_column(String(30), default="manual")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    # sha256 of the whole key. Keys carry 192 random bits, so a fast hash is enough.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The environment prefix and first random characters, to tell keys apart in lists.
    display_prefix: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(20))
    scopes: Mapped[str] = mapped_column(String(400))
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(s for s in self.scopes.split(",") if s)
