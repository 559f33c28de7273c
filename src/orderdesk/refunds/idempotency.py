"""Idempotency-Key handling: replay the first response of a request sent again.

A key is 1 to 255 visible ASCII characters and is scoped to its sender: the project
for an API key, the order for a client secret. Two requests are the same when
method, path and JSON body match (the body compared as parsed JSON, so whitespace and
key order do not matter).

Only successful responses are kept, for 24 hours. An error response changes nothing,
so a retry with the same key runs the request again and sees the current state.

The key is claimed by inserting its row before the request runs, in the request's own
transaction. A concurrent request with the same key waits on the unique constraint
(PostgreSQL) or on the write lock (SQLite) and, once the first commits, replays its
response. If the first fails and rolls back, the second runs as if it were first.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orderdesk.auth.services import KeyPrincipal, Principal
from orderdesk.db.base import utcnow
from orderdesk.orders.models import Order
from orderdesk.refunds.exceptions import IdempotencyKeyReused, InvalidIdempotencyKey
from orderdesk.refunds.models import IdempotencyRecord

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
RETENTION = timedelta(hours=24)
_KEY = re.compile(r"[\x21-\x7e]{1,255}", re.ASCII)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]


def parse_key(values: list[str]) -> str | None:
    """Return the header's key, or None when absent. Raise InvalidIdempotencyKey
    unless it is sent once as 1 to 255 visible ASCII characters."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidIdempotencyKey(
            f"Send the {HEADER} header once, not {len(values)} times."
        )
    if not _KEY.fullmatch(values[0]):
        raise InvalidIdempotencyKey(
            f"The {HEADER} header must be 1 to 255 visible ASCII characters with no "
            "spaces, such as a UUID."
        )
    return values[0]


def principal_scope(principal: Principal, order: Order) -> str:
    if isinstance(principal, KeyPrincipal):
        return f"project:{principal.project_id}"
    return f"order:{order.id}"


def request_hash(method: str, path: str, raw: bytes) -> str:
    try:
        body: Any = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except ValueError:
        body = raw.decode("utf-8", "replace")
    canonical = json.dumps([method.upper(), path, body])
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(
    session: Session,
    scope: str,
    key: str,
    fingerprint: str,
    now: datetime | None = None,
) -> IdempotencyRecord | StoredResponse:
    """Claim the key for this request, or return the response to replay.

    Returns a new record to fill with `store_response` before commit, or the stored
    response of an earlier identical request. Raises IdempotencyKeyReused when the key
    came with a different request. A record older than 24 hours is replaced.
    """
    now = now or utcnow()
    existing = _get(session, scope, key)
    if existing is not None and existing.created_at <= now - RETENTION:
        # A bulk DELETE, because a concurrent request may delete the same row first,
        # and an ORM delete would then fail on finding no row.
        session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.id == existing.id)
        )
        session.expunge(existing)
        existing = None
    if existing is not None:
        return _replay(existing, key, fingerprint)

    record = IdempotencyRecord(
        principal=scope,
        key=key,
        request_hash=fingerprint,
        status_code=0,
        body={},
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(record)
    except IntegrityError:
        # Another request claimed the key first and has committed by now.
        winner = _get(session, scope, key)
        if winner is None:
            raise
        log.info("idempotency_key_raced", scope=scope)
        return _replay(winner, key, fingerprint)
    return record


def store_response(
    record: IdempotencyRecord, status_code: int, body: dict[str, Any]
) -> None:
    record.status_code = status_code
    record.body = body


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Delete records older than 24 hours and return how many were deleted."""
    cutoff = (now or utcnow()) - RETENTION
    result = session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at <= cutoff)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _get(session: Session, scope: str, key: str) -> IdempotencyRecord | None:
    query = select(IdempotencyRecord).where(
        IdempotencyRecord.principal == scope, IdempotencyRecord.key == key
    )
    return session.scalars(
        query.execution_options(populate_existing=True)
    ).one_or_none()


def _replay(record: IdempotencyRecord, key: str, fingerprint: str) -> StoredResponse:
    if record.request_hash != fingerprint:
        raise IdempotencyKeyReused(key)
    return StoredResponse(record.status_code, dict(record.body))
