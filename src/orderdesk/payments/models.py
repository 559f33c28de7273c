"""Chain-side records: the devnet journal and per-address nonces."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from orderdesk.db.base import Base, UTCDateTime, utcnow


class DevnetJournalEntry(Base):
    """One state-changing step of the embedded devnet, replayed in id order.

    `kind` is one of:
    - "tx": `raw` is a signed transaction added to the pending block;
    - "mine": the pending block was mined;
    - "time": `value` is the new clock offset in seconds;
    - "snapshot" / "revert": `value` is the snapshot id taken or reverted to;
    - "automine": `value` is 1 when auto-mining was switched on, 0 when off.

    `timestamp` (Unix seconds) is the pending block's timestamp when a "tx" or "mine"
    step ran, so a replay builds blocks with the same hashes.
    """

    __tablename__ = "devnet_journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(10))
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[int | None] = mapped_column(BigInteger)
    timestamp: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AddressNonce(Base):
    """The next nonce of an address the service signs for, locked while allocating."""

    __tablename__ = "address_nonces"

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(Integer)
