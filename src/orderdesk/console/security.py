"""Console sessions, CSRF tokens, signed cookies and the headers of every page.

Sessions are rows in `console_sessions`: the cookie holds a random token, the row
holds its HMAC under the console session secret. A row ends at `expires_at`, after
`console_session_idle_minutes` without a request, at logout and when the user's
password changes, and deleting it ends the session in every process at once.

Each session row also holds a random CSRF token, which every form sends back and
`check_csrf` compares (the synchronizer token pattern). The login form has no session
yet, so it carries an HMAC of a random pre-login cookie instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from fastapi import Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from orderdesk.config import Settings
from orderdesk.console.models import ConsoleSession, ConsoleUser
from orderdesk.db.base import utcnow

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
# A request within this long of the last one does not rewrite last_seen_at, so most
# page views are read-only.
TOUCH_INTERVAL = timedelta(minutes=1)
MIN_SECRET_BYTES = 32
FLASH_MAX_CHARS = 600


class ConsoleSecretError(RuntimeError):
    pass


# The secret


def load_session_secret(settings: Settings) -> bytes:
    """Return the console session secret from the settings or its file.

    In development, when neither is set, a random secret is created in
    data_dir/console-session.key with mode 0600. Other environments must set one.
    """
    return _load_secret(
        settings.console_session_secret,
        settings.console_session_secret_file,
        settings.environment,
        settings.data_dir,
    )


@lru_cache(maxsize=16)
def _load_secret(
    value: str | None, path: Path | None, environment: str, data_dir: Path
) -> bytes:
    if value:
        secret = value.encode()
        source = "ORDERDESK_CONSOLE_SESSION_SECRET"
    else:
        if path is None:
            if environment != "development":
                raise ConsoleSecretError(
                    "No console session secret is configured. Set "
                    "ORDERDESK_CONSOLE_SESSION_SECRET_FILE to a file of at least 32 "
                    "random bytes readable only by the service's user."
                )
            path = data_dir / "console-session.key"
            if not path.exists():
                _create_secret_file(path)
        _check_permissions(path)
        secret = path.read_bytes().strip()
        source = str(path)
    if len(secret) < MIN_SECRET_BYTES:
        raise ConsoleSecretError(
            f"The console session secret in {source} is shorter than "
            f"{MIN_SECRET_BYTES} bytes. Generate one with: openssl rand -hex 32"
        )
    return secret


def _create_secret_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")


def _check_permissions(path: Path) -> None:
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConsoleSecretError(
            f"The console session secret file {path} is readable by other users; "
            f"run: chmod 600 {path}"
        )


def keyed_hash(secret: bytes, purpose: str, value: str) -> str:
    """HMAC-SHA256 of `value` for one `purpose`, so a hash made for one use never
    passes as another."""
    message = f"{purpose}\x00{value}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


# Cookies


def cookie_name(settings: Settings, base: str) -> str:
    """Return the cookie's name. Outside development it has the __Host- prefix, which
    browsers accept only on a Secure cookie with Path=/ and no Domain."""
    if settings.environment == "development":
        return base
    return f"__Host-{base}"


def session_cookie(settings: Settings) -> str:
    return cookie_name(settings, "orderdesk_console")


def login_cookie(settings: Settings) -> str:
    return cookie_name(settings, "orderdesk_console_login")


def flash_cookie(settings: Settings) -> str:
    return cookie_name(settings, "orderdesk_console_flash")


def set_cookie(
    response: Response,
    settings: Settings,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    same_site: str = "lax",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=settings.environment != "development",
        samesite=same_site,  # type: ignore[arg-type]
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(
        name,
        path="/",
        httponly=True,
        secure=settings.environment != "development",
        samesite="lax",
    )


# Sessions


def create_session(
    session: Session,
    settings: Settings,
    user: ConsoleUser,
    *,
    ip: str | None,
    user_agent: str | None,
    now: datetime | None = None,
) -> tuple[ConsoleSession, str]:
    """Store a new session for `user` and return it with the cookie token."""
    now = now or utcnow()
    delete_expired_sessions(session, settings, now)
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        user_id=user.id,
        token_hash=keyed_hash(load_session_secret(settings), "session", token),
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=settings.console_session_hours),
        last_seen_at=now,
        ip=ip,
        user_agent=(user_agent or "")[:300] or None,
    )
    session.add(row)
    session.flush()
    return row, token


def find_session(
    session: Session, settings: Settings, token: str, now: datetime | None = None
) -> ConsoleSession | None:
    """Return the live session of this cookie token, or None when there is none or
    it has expired or been idle too long."""
    if not token or len(token) > 100:
        return None
    now = now or utcnow()
    token_hash = keyed_hash(load_session_secret(settings), "session", token)
    row = session.scalar(
        select(ConsoleSession).where(ConsoleSession.token_hash == token_hash)
    )
    if row is None or not is_live(row, settings, now):
        return None
    return row


def is_live(row: ConsoleSession, settings: Settings, now: datetime) -> bool:
    idle_limit = timedelta(minutes=settings.console_session_idle_minutes)
    return now < row.expires_at and now < row.last_seen_at + idle_limit


def needs_touch(row: ConsoleSession, now: datetime) -> bool:
    return now - row.last_seen_at >= TOUCH_INTERVAL


def touch_session(session: Session, session_id: str, now: datetime) -> None:
    row = session.get(ConsoleSession, session_id)
    if row is not None:
        row.last_seen_at = now


def end_session(session: Session, session_id: str) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))


def end_user_sessions(session: Session, user_id: str) -> int:
    result = session.execute(
        delete(ConsoleSession).where(ConsoleSession.user_id == user_id)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def delete_expired_sessions(
    session: Session, settings: Settings, now: datetime | None = None
) -> None:
    now = now or utcnow()
    idle_cutoff = now - timedelta(minutes=settings.console_session_idle_minutes)
    session.execute(
        delete(ConsoleSession).where(
            (ConsoleSession.expires_at <= now)
            | (ConsoleSession.last_seen_at <= idle_cutoff)
        )
    )


# CSRF


def csrf_matches(expected: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(expected.encode(), (sent or "").encode())


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_form_token(settings: Settings, nonce: str) -> str:
    return keyed_hash(load_session_secret(settings), "login-form", nonce)


def login_token_matches(
    settings: Settings, nonce: str | None, sent: str | None
) -> bool:
    if not nonce or len(nonce) > 100:
        return False
    return csrf_matches(login_form_token(settings, nonce), sent)


# Flash messages: one message carried across a redirect in a signed cookie.


def encode_flash(settings: Settings, kind: str, text: str) -> str:
    payload = json.dumps([kind, text[:FLASH_MAX_CHARS]], separators=(",", ":"))
    data = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    return f"{data}.{keyed_hash(load_session_secret(settings), 'flash', data)}"


def decode_flash(settings: Settings, value: str | None) -> tuple[str, str] | None:
    """Return (kind, text) of a flash cookie, or None when it is absent or forged."""
    if not value or "." not in value or len(value) > 4000:
        return None
    data, signature = value.rsplit(".", 1)
    expected = keyed_hash(load_session_secret(settings), "flash", data)
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        padded = data + "=" * (-len(data) % 4)
        kind, text = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        return None
    if kind not in ("notice", "error") or not isinstance(text, str):
        return None
    return kind, text
