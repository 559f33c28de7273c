"""Chain-side records: the devnet journal and per-address nonces."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from orderdesk.db.base import Base, UTCDateTime, utcnow


class DevnetJournalEntry(Base):
    """One step of the embedded devnet's history, replayed in order at start-up."""

    __tablename__ = "devnet_journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # "tx" (a raw signed transaction), "mine" (an empty block) or "time" (a clock jump).
    kind: Mapped[str] = mapped_column(String(10))
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AddressNonce(Base):
    """The next nonce of an address the service signs for, locked while allocating."""

    __tablename__ = "address_nonces"

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(Integer)
