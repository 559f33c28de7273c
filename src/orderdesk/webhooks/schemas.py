"""Wire shapes of the webhook endpoints API: strict request bodies and reply bodies.

The request models check JSON types and cap each string and list as sent. The
services check URLs, event types and lengths, so callers without HTTP get the same
rules.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from orderdesk.timefmt import iso
from orderdesk.webhooks.events import EVENT_TYPES
from orderdesk.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# The services apply the same maxima with their own messages.
Url = Annotated[str, StringConstraints(max_length=2048)]
Description = Annotated[str, StringConstraints(max_length=500)]
# Event types are at most 25 characters long; 100 leaves room for new ones.
EventType = Annotated[str, StringConstraints(max_length=100)]
# Every event type once, or "*" alone.
EventList = Annotated[list[EventType], Field(max_length=len(EVENT_TYPES))]


class EndpointCreate(StrictBody):
    url: Url
    events: EventList
    description: Description | None = None


class EndpointUpdate(StrictBody):
    """A partial update: only the fields present change, and `description: null`
    clears the description."""

    url: Url | None = None
    events: EventList | None = None
    description: Description | None = None


class EmptyBody(StrictBody):
    """The body of actions that take no input: absent, or `{}`."""


def endpoint_body(
    endpoint: WebhookEndpoint, *, secret: str | None = None
) -> dict[str, Any]:
    """Return the endpoint as the API shows it. The secret appears only when given,
    which the routes do only in the replies that create it."""
    body: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "createdAt": iso(endpoint.created_at),
        "updatedAt": iso(endpoint.updated_at),
        "previousSecretExpiresAt": iso(endpoint.previous_secret_expires_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def attempt_body(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "attemptedAt": iso(attempt.attempted_at),
        "resendNumber": attempt.resend_number,
        "attemptNumber": attempt.attempt_number,
        "url": attempt.url,
        "succeeded": attempt.succeeded,
        "statusCode": attempt.status_code,
        "error": attempt.error,
        "durationMs": attempt.duration_ms,
        "responseBody": attempt.response_body,
    }


def delivery_body(delivery: WebhookDelivery) -> dict[str, Any]:
    """Return the delivery with its payload and every attempt, oldest attempt first."""
    return {
        "deliveryId": delivery.delivery_id,
        "endpointId": delivery.endpoint_id,
        "messageId": delivery.message_id,
        "eventType": delivery.event_type,
        "orderId": delivery.order_id,
        "status": delivery.status,
        "payload": json.loads(delivery.body),
        "resendCount": delivery.resend_count,
        "nextAttemptAt": iso(delivery.next_attempt_at),
        "deliveredAt": iso(delivery.delivered_at),
        "createdAt": iso(delivery.created_at),
        "updatedAt": iso(delivery.updated_at),
        "attempts": [attempt_body(attempt) for attempt in delivery.attempts],
    }
