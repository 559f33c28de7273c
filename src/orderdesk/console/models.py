"""Console users, their login sessions and the login attempts that lockout counts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orderdesk.db.base import Base, UTCDateTime, new_id, utcnow


class Role(StrEnum):
    # Reads every page and changes nothing.
    VIEWER = "viewer"
    # Also reviews refunds, resends webhooks, retries jobs and manages API keys.
    OPERATOR = "operator"


class ConsoleUser(Base):
    __tablename__ = "console_users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Stored lower-cased, so logins match whatever case the operator types.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # An argon2id hash in the PHC string format, parameters included.
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """A logged-in browser. The cookie carries a random token; only its keyed hash
    is stored, so a copy of the table opens no session."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("console_users.id", ondelete="CASCADE"), index=True
    )
    # HMAC-SHA256 of the cookie token under the console session secret, hex.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The synchronizer token every form of this session must send back.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))

    user: Mapped[ConsoleUser] = relationship(lazy="joined")


class ConsoleLoginAttempt(Base):
    """One login attempt, written before the password is checked and deleted when it
    succeeds, so the rows within the lockout window are the failures."""

    __tablename__ = "console_login_attempts"
    __table_args__ = (
        Index("ix_console_login_attempts_email", "email", "attempted_at"),
        Index("ix_console_login_attempts_ip", "ip", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str] = mapped_column(String(45))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
