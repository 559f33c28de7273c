"""Webhook endpoints, event emission and delivery history. Nothing here commits.

Other features call `emit_event` in the transaction of each state change, with the
object exactly as the API returns it:

    emit_event(session, order.project_id, ORDERS_PAYMENT_SUCCEEDED,
               serialize_order(order, chains), order_id=order.id)
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderdesk.db.base import utcnow
from orderdesk.errors import InvalidInput
from orderdesk.timefmt import iso
from orderdesk.webhooks.delivery import enqueue_attempt
from orderdesk.webhooks.events import ALL_EVENTS, EVENT_TYPES, subscribes_to
from orderdesk.webhooks.exceptions import (
    DeliveryStillPending,
    EndpointNotFound,
    TooManyEndpoints,
)
from orderdesk.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from orderdesk.webhooks.signing import generate_secret
from orderdesk.webhooks.urls import (
    BlockedAddress,
    check_public,
    private_urls_allowed,
    url_problem,
)

__all__ = [
    "EVENT_TYPES",
    "DeliveryPage",
    "create_endpoint",
    "delete_endpoint",
    "emit_event",
    "get_delivery",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "require_endpoint",
    "resend_delivery",
    "rotate_secret",
    "update_endpoint",
]

log = structlog.get_logger(__name__)

MAX_ENDPOINTS_PER_PROJECT = 50
MAX_DESCRIPTION_LENGTH = 500
# After a rotation the previous secret keeps signing this long, so receivers can
# switch to the new one without dropping a message.
SECRET_GRACE = timedelta(hours=24)
DEFAULT_PAGE_SIZE = 30
MAX_PAGE_SIZE = 100


# Endpoints


def create_endpoint(
    session: Session,
    settings: Any,
    project_id: str,
    actor: str,
    *,
    url: str,
    events: list[str],
    description: str | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint and return it with its new secret."""
    check_endpoint_fields(
        settings, {"url": url, "events": events, "description": description}
    )
    count = session.scalar(
        select(func.count())
        .select_from(WebhookEndpoint)
        .where(WebhookEndpoint.project_id == project_id)
    )
    if (count or 0) >= MAX_ENDPOINTS_PER_PROJECT:
        raise TooManyEndpoints(MAX_ENDPOINTS_PER_PROJECT)
    now = utcnow()
    secret = generate_secret()
    endpoint = WebhookEndpoint(
        project_id=project_id,
        url=url,
        events=list(events),
        description=description,
        secret=secret,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    session.flush()
    log.info("webhook_endpoint_created", endpoint_id=endpoint.id, actor=actor)
    return endpoint, secret


def list_endpoints(session: Session, project_id: str) -> list[WebhookEndpoint]:
    """Return the project's endpoints, oldest first."""
    query = (
        select(WebhookEndpoint)
        .where(WebhookEndpoint.project_id == project_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return list(session.scalars(query))


def get_endpoint(
    session: Session, project_id: str, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint | None:
    """Return the project's endpoint of that id, or None (also for a malformed id).

    `for_update` locks the row against other changes but, on PostgreSQL, not
    against `emit_event`, which only needs the row to stay.
    """
    if not _is_uuid(endpoint_id):
        return None
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.project_id == project_id
    )
    if for_update:
        # FOR NO KEY UPDATE: it does not conflict with the FOR KEY SHARE of emits.
        query = query.with_for_update(key_share=True)
    return session.scalar(query)


def require_endpoint(
    session: Session, project_id: str, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint:
    """Return the endpoint like `get_endpoint`, or raise EndpointNotFound."""
    endpoint = get_endpoint(session, project_id, endpoint_id, for_update=for_update)
    if endpoint is None:
        raise EndpointNotFound(endpoint_id)
    return endpoint


def update_endpoint(
    session: Session,
    settings: Any,
    endpoint: WebhookEndpoint,
    changes: dict[str, Any],
    actor: str,
) -> WebhookEndpoint:
    """Apply `changes` (some of url, events, description). Pending deliveries go to
    the new URL from their next attempt on."""
    if not changes:
        raise InvalidInput(
            "The request body changes nothing. Send url, events or description.",
            details=[{"field": "body", "message": "Give at least one field."}],
        )
    check_endpoint_fields(settings, changes)
    for name, value in changes.items():
        setattr(endpoint, name, list(value) if name == "events" else value)
    endpoint.updated_at = utcnow()
    session.flush()
    log.info(
        "webhook_endpoint_updated",
        endpoint_id=endpoint.id,
        fields=sorted(changes),
        actor=actor,
    )
    return endpoint


def delete_endpoint(session: Session, endpoint: WebhookEndpoint, actor: str) -> None:
    """Delete the endpoint with its deliveries; their queued jobs find nothing to do."""
    session.delete(endpoint)
    session.flush()
    log.info("webhook_endpoint_deleted", endpoint_id=endpoint.id, actor=actor)


def rotate_secret(session: Session, endpoint: WebhookEndpoint, actor: str) -> str:
    """Give the endpoint a new secret and return it. The one it replaces signs too
    for SECRET_GRACE; a secret older than that stops signing at once."""
    now = utcnow()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + SECRET_GRACE
    endpoint.secret = generate_secret()
    endpoint.updated_at = now
    session.flush()
    log.info("webhook_secret_rotated", endpoint_id=endpoint.id, actor=actor)
    return endpoint.secret


def check_endpoint_fields(settings: Any, fields: dict[str, Any]) -> None:
    """Raise InvalidInput listing every invalid field among url, events, description."""
    details = []
    checks: dict[str, Callable[[Any, Any], str | None]] = {
        "url": _url_problem,
        "events": _events_problem,
    }
    for name, value in fields.items():
        if name == "description":
            problem = _description_problem(value)
        elif value is None:
            problem = "Must be given; null is not allowed."
        else:
            problem = checks[name](settings, value)
        if problem is not None:
            details.append({"field": name, "message": problem})
    if details:
        names = ", ".join(d["field"] for d in details)
        raise InvalidInput(
            f"The webhook endpoint is invalid in: {names}. Fix the fields listed in "
            "details.",
            details=details,
        )


def _url_problem(settings: Any, url: str) -> str | None:
    problem = url_problem(url)
    if problem is not None:
        return f"The URL {problem}."
    if private_urls_allowed(settings):
        return None
    try:
        check_public(url)
    except BlockedAddress as exc:
        return f"The URL is not allowed: {exc}."
    return None


def _events_problem(_settings: Any, events: list[str]) -> str | None:
    known = ", ".join(EVENT_TYPES)
    if not events:
        return f"Give at least one event type, or {ALL_EVENTS!r} for all: {known}."
    unknown = [e for e in events if e != ALL_EVENTS and e not in EVENT_TYPES]
    if unknown:
        return (
            f"Unknown event type {unknown[0]!r}. Use {ALL_EVENTS!r} or any of: {known}."
        )
    if ALL_EVENTS in events and len(events) > 1:
        return f"{ALL_EVENTS!r} already means every event type; send it alone."
    repeated = sorted({e for e in events if events.count(e) > 1})
    if repeated:
        return f"Lists {', '.join(repeated)} more than once; list each type once."
    return None


def _description_problem(description: str | None) -> str | None:
    if description is None:
        return None
    if len(description) > MAX_DESCRIPTION_LENGTH:
        return (
            f"Is {len(description)} characters long; the maximum is "
            f"{MAX_DESCRIPTION_LENGTH}."
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in description):
        return "Contains a control character; send one line of plain text."
    return None


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


# Events


def emit_event(
    session: Session,
    project_id: str,
    event_type: str,
    data: dict[str, Any] | Callable[[], dict[str, Any]],
    order_id: str | None = None,
) -> list[WebhookDelivery]:
    """Write one delivery per endpoint of the project subscribed to `event_type`,
    and the job of its first attempt, in the caller's transaction.

    `data` is the object exactly as the API returns it, or a function that builds it
    (called only when an endpoint subscribes, so unwatched events cost no
    serialisation). The body
    `{type, timestamp, data}` is frozen now: every attempt sends the same bytes.
    Deliveries that name an `order_id` reach each endpoint in emit order.
    Raises ValueError for an unknown event type and TypeError when `data` is not
    JSON (a Decimal or datetime that was not serialised).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    # FOR KEY SHARE on PostgreSQL: an endpoint deleted at the same time waits for
    # this transaction, so its new deliveries never point at a missing row.
    endpoints = session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.project_id == project_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        .with_for_update(read=True, key_share=True)
    ).all()
    matching = [e for e in endpoints if subscribes_to(e.events, event_type)]
    if not matching:
        return []
    now = utcnow()
    if callable(data):
        data = data()
    body = encode_payload(event_type, now, data)
    message_id = "msg_" + uuid.uuid4().hex
    deliveries = []
    for endpoint in matching:
        delivery = WebhookDelivery(
            endpoint_id=endpoint.id,
            project_id=project_id,
            message_id=message_id,
            event_type=event_type,
            order_id=order_id,
            body=body,
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        session.flush()
        enqueue_attempt(session, delivery, now)
        deliveries.append(delivery)
    log.info(
        "webhook_event_emitted",
        event_type=event_type,
        message_id=message_id,
        order_id=order_id,
        endpoints=len(deliveries),
    )
    return deliveries


def encode_payload(event_type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    """Return the delivery body. It is ASCII JSON, so its bytes never depend on an
    encoding, and a lone surrogate in a string cannot make it unsendable."""
    payload = {"type": event_type, "timestamp": iso(timestamp), "data": data}
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


# Deliveries


@dataclass
class DeliveryPage:
    deliveries: list[WebhookDelivery]
    next_cursor: str | None
    previous_cursor: str | None


def list_deliveries(
    session: Session,
    endpoint: WebhookEndpoint,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    status: str | None = None,
) -> DeliveryPage:
    """Return one page of the endpoint's deliveries, newest first."""
    direction, position = ("next", None) if cursor is None else _decode_cursor(cursor)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if direction == "next":
        if position is not None:
            query = query.where(WebhookDelivery.id < position)
        query = query.order_by(WebhookDelivery.id.desc())
    else:
        query = query.where(WebhookDelivery.id > position).order_by(WebhookDelivery.id)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    if direction == "prev":
        rows.reverse()
    if not rows:
        return DeliveryPage([], None, None)
    has_next = more if direction == "next" else True
    has_previous = position is not None if direction == "next" else more
    return DeliveryPage(
        rows,
        _encode_cursor("next", rows[-1].id) if has_next else None,
        _encode_cursor("prev", rows[0].id) if has_previous else None,
    )


def _encode_cursor(direction: str, row_id: int) -> str:
    raw = json.dumps([direction, row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        direction, row_id = json.loads(base64.urlsafe_b64decode(padded))
        if direction not in ("next", "prev") or type(row_id) is not int:
            raise ValueError(cursor)
        return direction, row_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "cursor is not a cursor this API returned. Pass nextCursor or "
            "previousCursor from an earlier page, or omit it for the first page.",
            code="invalid_cursor",
            details=[{"field": "cursor", "message": "unknown cursor"}],
        ) from exc


def get_delivery(
    session: Session,
    endpoint: WebhookEndpoint,
    delivery_id: str,
    *,
    for_update: bool = False,
) -> WebhookDelivery | None:
    """Return the endpoint's delivery of that id, or None (also for a malformed id)."""
    if not _is_uuid(delivery_id):
        return None
    query = select(WebhookDelivery).where(
        WebhookDelivery.delivery_id == delivery_id,
        WebhookDelivery.endpoint_id == endpoint.id,
    )
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def resend_delivery(session: Session, delivery: WebhookDelivery, actor: str) -> None:
    """Start a new attempt sequence for a delivered or failed delivery, now.

    The message keeps its svix-id and body. A resend is not held back by, and does
    not hold back, other deliveries of the same order.
    """
    if delivery.status == DeliveryStatus.PENDING:
        raise DeliveryStillPending(delivery.delivery_id)
    now = utcnow()
    delivery.status = DeliveryStatus.PENDING
    delivery.resend_count += 1
    delivery.attempt_count = 0
    delivery.next_attempt_at = now
    delivery.delivered_at = None
    delivery.updated_at = now
    session.flush()
    enqueue_attempt(session, delivery, now)
    log.info(
        "webhook_delivery_resent",
        delivery_id=delivery.delivery_id,
        resend_number=delivery.resend_count,
        actor=actor,
    )
