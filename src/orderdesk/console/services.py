"""Console users and logins: create users, check passwords, lock out guessing.

Lockout counts `ConsoleLoginAttempt` rows. Each attempt is written and committed
before its password is checked and deleted when it succeeds, so concurrent guesses
count against each other and at most the configured number of them run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from orderdesk.config import Settings
from orderdesk.console.models import ConsoleLoginAttempt, ConsoleUser, Role
from orderdesk.console.passwords import (
    check_password_strength,
    hash_password,
    needs_rehash,
    verify_password,
)
from orderdesk.console.security import end_user_sessions
from orderdesk.db.base import utcnow
from orderdesk.errors import Conflict, InvalidInput, NotFound, OrderDeskError

log = structlog.get_logger(__name__)

MAX_EMAIL_LENGTH = 320
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class LoginLocked(OrderDeskError):
    status_code = 429
    code = "login_locked"

    def __init__(self, retry_after: int) -> None:
        minutes = max(1, math.ceil(retry_after / 60))
        super().__init__(
            "Too many failed logins for this account or from this address. "
            f"Try again in {minutes} minute(s).",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


# Users


def normalize_email(value: str) -> str:
    """Return the email trimmed and lower-cased, raising InvalidInput when it is not
    an address."""
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        raise InvalidInput(
            f"{value[:80]!r} is not an email address such as ops@example.com.",
            code="invalid_email",
        )
    return email


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        roles = ", ".join(role.value for role in Role)
        raise InvalidInput(
            f"Role {value!r} is not a console role. Use one of: {roles}.",
            code="invalid_role",
        ) from None


def get_user_by_email(session: Session, email: str) -> ConsoleUser | None:
    return session.scalar(select(ConsoleUser).where(ConsoleUser.email == email))


def create_user(session: Session, email: str, role: str, password: str) -> ConsoleUser:
    """Create a console user, raising InvalidInput for a bad email, role or weak
    password and Conflict when the email is taken."""
    address = normalize_email(email)
    user_role = parse_role(role)
    check_password_strength(password, address)
    if get_user_by_email(session, address) is not None:
        raise Conflict(
            f"A console user {address} already exists. Use: orderdesk users "
            "set-password to change its password.",
            code="console_user_exists",
        )
    now = utcnow()
    user = ConsoleUser(
        email=address,
        password_hash=hash_password(password),
        role=user_role,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    session.flush()
    log.info("console_user_created", user_id=user.id, role=str(user_role))
    return user


def set_password(session: Session, email: str, password: str) -> ConsoleUser:
    """Change a user's password and end every session of that user."""
    address = normalize_email(email)
    user = get_user_by_email(session, address)
    if user is None:
        raise NotFound(
            f"No console user {address} exists. Create it with: orderdesk users "
            "create.",
            code="console_user_not_found",
        )
    check_password_strength(password, address)
    user.password_hash = hash_password(password)
    user.updated_at = utcnow()
    ended = end_user_sessions(session, user.id)
    log.info("console_password_changed", user_id=user.id, sessions_ended=ended)
    return user


def list_users(session: Session) -> list[ConsoleUser]:
    return list(session.scalars(select(ConsoleUser).order_by(ConsoleUser.email)))


# Logins


@dataclass(frozen=True)
class LoginAttempt:
    """A counted login attempt whose password is still to be checked."""

    id: int
    email: str
    ip: str


def start_login(
    session: Session,
    settings: Settings,
    email: str,
    ip: str,
    now: datetime | None = None,
) -> LoginAttempt:
    """Count a login attempt, raising LoginLocked when the email or the IP address
    has reached its failure limit within the lockout window.

    The caller commits before checking the password, so that concurrent attempts
    see each other. An attempt made while locked is not counted, so the lock ends
    on time even while guessing goes on.
    """
    now = now or utcnow()
    delete_old_attempts(session, settings, now)
    address = email.strip().lower()[:MAX_EMAIL_LENGTH]
    attempt = ConsoleLoginAttempt(email=address, ip=ip[:45], attempted_at=now)
    session.add(attempt)
    session.flush()
    window = timedelta(minutes=settings.console_lockout_minutes)
    since = now - window
    waits = [
        _lock_wait(
            session,
            ConsoleLoginAttempt.email == address,
            settings.console_lockout_email_failures,
            since,
            window,
            now,
        ),
        _lock_wait(
            session,
            ConsoleLoginAttempt.ip == attempt.ip,
            settings.console_lockout_ip_failures,
            since,
            window,
            now,
        ),
    ]
    wait = max(waits)
    if wait > 0:
        session.delete(attempt)
        session.flush()
        log.warning("console_login_locked", email=address, ip=attempt.ip, wait=wait)
        raise LoginLocked(wait)
    return LoginAttempt(attempt.id, address, attempt.ip)


def _lock_wait(
    session: Session,
    condition: object,
    limit: int,
    since: datetime,
    window: timedelta,
    now: datetime,
) -> int:
    """Return the seconds until fewer than `limit` earlier attempts fall in the
    window, or 0 when fewer already do. The newest row is the current attempt."""
    times = list(
        session.scalars(
            select(ConsoleLoginAttempt.attempted_at)
            .where(condition, ConsoleLoginAttempt.attempted_at > since)  # type: ignore[arg-type]
            .order_by(ConsoleLoginAttempt.attempted_at, ConsoleLoginAttempt.id)
        )
    )
    earlier = len(times) - 1
    if earlier < limit:
        return 0
    # The lock lifts once `earlier - limit + 1` of the oldest attempts have aged out.
    unlocks_at = times[earlier - limit] + window
    return max(1, math.ceil((unlocks_at - now).total_seconds()))


def finish_login(
    session: Session, attempt: LoginAttempt, password: str
) -> ConsoleUser | None:
    """Check the password of a counted attempt. On success, forget the email's
    failures and return the user; on failure keep the attempt as a failure."""
    user = get_user_by_email(session, attempt.email)
    matched = verify_password(user.password_hash if user else None, password)
    if user is None or not matched:
        log.info("console_login_failed", email=attempt.email, ip=attempt.ip)
        return None
    session.execute(
        delete(ConsoleLoginAttempt).where(
            (ConsoleLoginAttempt.id == attempt.id)
            | (ConsoleLoginAttempt.email == attempt.email)
        )
    )
    now = utcnow()
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = now
    log.info("console_login", user_id=user.id, ip=attempt.ip)
    return user


def delete_old_attempts(
    session: Session, settings: Settings, now: datetime | None = None
) -> None:
    """Delete attempts older than the lockout window; they no longer count."""
    cutoff = (now or utcnow()) - timedelta(minutes=settings.console_lockout_minutes)
    session.execute(
        delete(ConsoleLoginAttempt).where(ConsoleLoginAttempt.attempted_at <= cutoff)
    )
