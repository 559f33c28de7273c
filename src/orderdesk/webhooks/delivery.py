"""Deliver one webhook attempt: sign, POST, record, and schedule the next step.

Each attempt is one `webhook.deliver` job, identified by its delivery, resend number
and attempt number. The job reads what to send, ends its transaction, makes the
request with no transaction open, and then records the attempt and the next job in
a new transaction. A worker killed during the request has recorded nothing, so the
delivery stays pending and the job runs again when its lease expires: the receiver
may get the message twice, with the same svix-id, but never zero times.

Events of one order reach one endpoint in the order they were emitted. A delivery in
its first sequence waits while an earlier first-sequence delivery for the same
endpoint and order is pending. When that one is delivered or fails for good, the next
one is woken. Resends stay out of this order, because they repeat an old event on
request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orderdesk import __version__
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.registry import RetryLater
from orderdesk.jobs.services import enqueue
from orderdesk.webhooks.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from orderdesk.webhooks.signing import signed_headers
from orderdesk.webhooks.urls import (
    BlockedAddress,
    check_public_async,
    pin,
    private_urls_allowed,
)

log = structlog.get_logger(__name__)

JOB_KIND = "webhook.deliver"
# Waits after each failed attempt; the attempt after the last wait is the final one.
RETRY_DELAYS_SECONDS: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_ATTEMPTS = len(RETRY_DELAYS_SECONDS) + 1
DEFAULT_TIMEOUT_SECONDS = 15.0
MAX_RESPONSE_BYTES = 2048
MAX_ERROR_LENGTH = 500
# Runs of the job when it raises (a database error, a bug). A failed HTTP request
# does not raise: it is recorded as an attempt.
JOB_MAX_ATTEMPTS = 20
USER_AGENT = f"orderdesk-webhooks/{__version__}"


def timeout_seconds(settings: Any) -> float:
    """Return the time limit of one attempt, connection and response included."""
    return float(getattr(settings, "webhook_timeout_seconds", DEFAULT_TIMEOUT_SECONDS))


def retry_scale(settings: Any) -> float:
    """Return the factor applied to every retry delay (1.0 in production)."""
    return float(getattr(settings, "webhook_retry_scale", 1.0))


def retry_delay(settings: Any, attempts_made: int) -> float | None:
    """Return the wait in seconds before the next attempt, or None after the last."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    return RETRY_DELAYS_SECONDS[attempts_made - 1] * retry_scale(settings)


def job_key(delivery: WebhookDelivery) -> str:
    """Return the dedupe key of the job for the delivery's next attempt."""
    return (
        f"{JOB_KIND}:{delivery.delivery_id}:{delivery.resend_count}"
        f":{delivery.attempt_count + 1}"
    )


def enqueue_attempt(
    session: Session, delivery: WebhookDelivery, run_at: datetime
) -> Job:
    """Add the job of the delivery's next attempt, in the caller's transaction."""
    return enqueue(
        session,
        JOB_KIND,
        {
            "delivery": delivery.delivery_id,
            "resend": delivery.resend_count,
            "attempt": delivery.attempt_count + 1,
        },
        run_at=run_at,
        dedupe_key=job_key(delivery),
        max_attempts=JOB_MAX_ATTEMPTS,
    )


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """Return the secrets that sign now: the current one, then the previous one
    while its grace period after a rotation lasts."""
    active = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        active.append(endpoint.previous_secret)
    return active


@dataclass(frozen=True)
class AttemptPlan:
    """Everything one attempt sends, read before the request."""

    delivery_id: str
    endpoint_id: str
    resend_number: int
    attempt_number: int
    url: str
    message_id: str
    body: bytes
    secrets: list[str]
    timeout: float
    # In production the request goes only to a checked public address.
    pin_public_address: bool


@dataclass
class AttemptResult:
    attempted_at: datetime
    duration_ms: int = 0
    status_code: int | None = None
    error: str | None = None
    response: bytearray = field(default_factory=bytearray)

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def response_text(self) -> str | None:
        if self.status_code is None:
            return None
        # Bytes that do not decode are dropped, so the text never takes more bytes
        # than were read. NUL goes too, because PostgreSQL text cannot contain it.
        text = bytes(self.response[:MAX_RESPONSE_BYTES]).decode("utf-8", "ignore")
        return text.replace("\x00", "")


def run_attempt(session: Session, settings: Any, payload: dict[str, Any]) -> None:
    """Make the attempt named by a job payload, if it is still due."""
    plan = plan_attempt(session, settings, payload)
    if plan is None:
        return
    # End the worker's transaction before the request, because a transaction held
    # open for up to the timeout would block every other writer of a SQLite database.
    session.commit()
    result = send(plan)
    record_attempt(session, settings, plan, result)


def plan_attempt(
    session: Session, settings: Any, payload: dict[str, Any]
) -> AttemptPlan | None:
    """Return what to send, or None when the job is stale.

    Raises RetryLater while an earlier delivery of the same order is pending.
    """
    delivery = session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.delivery_id == payload["delivery"]
        )
    )
    if delivery is None or not _is_current(
        delivery, payload["resend"], payload["attempt"]
    ):
        log.info("webhook_attempt_skipped", delivery_id=payload["delivery"])
        return None
    now = utcnow()
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        raise RetryLater(
            (delivery.next_attempt_at - now).total_seconds(), "not due yet"
        )
    _wait_for_earlier(session, settings, delivery, now)
    endpoint = delivery.endpoint
    return AttemptPlan(
        delivery_id=delivery.delivery_id,
        endpoint_id=endpoint.id,
        resend_number=delivery.resend_count,
        attempt_number=delivery.attempt_count + 1,
        url=endpoint.url,
        message_id=delivery.message_id,
        body=delivery.body.encode(),
        secrets=signing_secrets(endpoint, now),
        timeout=timeout_seconds(settings),
        pin_public_address=not private_urls_allowed(settings),
    )


def _is_current(delivery: WebhookDelivery, resend: int, attempt: int) -> bool:
    return (
        delivery.status == DeliveryStatus.PENDING
        and delivery.resend_count == resend
        and delivery.attempt_count == attempt - 1
    )


def _wait_for_earlier(
    session: Session, settings: Any, delivery: WebhookDelivery, now: datetime
) -> None:
    if delivery.order_id is None or delivery.resend_count != 0:
        return
    # The earliest pending one is the one making progress, because nothing before it
    # blocks it.
    # NOTE: while an endpoint is down, each event of an order waits for the full
    # retry schedule of the one before it, so later events can wait for days.
    earliest = session.scalar(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == delivery.endpoint_id,
            WebhookDelivery.order_id == delivery.order_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.resend_count == 0,
            WebhookDelivery.id < delivery.id,
        )
        .order_by(WebhookDelivery.id)
        .limit(1)
    )
    if earliest is None:
        return
    # Sleep until that delivery's next attempt, unless finishing it wakes the next
    # one sooner. While it is being attempted, check again after one poll interval.
    wait = float(getattr(settings, "worker_poll_seconds", 1.0))
    if earliest.next_attempt_at is not None and earliest.next_attempt_at > now:
        wait += (earliest.next_attempt_at - now).total_seconds()
    raise RetryLater(wait, f"waiting for delivery {earliest.delivery_id} of the order")


def send(plan: AttemptPlan) -> AttemptResult:
    """POST the signed message once and return what happened. Network and HTTP
    failures, and any other exception, are returned in the result, not raised."""
    result = AttemptResult(attempted_at=utcnow())
    started = time.monotonic()
    try:
        _run_without_waiting(_post(plan, result))
    except (TimeoutError, httpx.TimeoutException):
        # A 2xx status line counts even when the body that follows is cut off.
        if not result.succeeded:
            result.error = f"timed out after {plan.timeout:g} s"
    except BlockedAddress as exc:
        result.error = str(exc)
    except httpx.HTTPError as exc:
        result.error = _describe(exc)
    except Exception as exc:
        # Recorded as a failed attempt, so that the delivery still follows its
        # schedule and ends, instead of failing the job over and over.
        log.exception("webhook_attempt_error", delivery_id=plan.delivery_id)
        result.error = f"{type(exc).__name__}: {exc}"
    result.duration_ms = round((time.monotonic() - started) * 1000)
    if result.error is not None:
        result.error = result.error[:MAX_ERROR_LENGTH]
    return result


def _run_without_waiting(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run `coroutine` in a new event loop, like asyncio.run, but without waiting
    for executor threads at the end: a DNS lookup that outlives the timeout must not
    hold the attempt past it."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coroutine)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _post(plan: AttemptPlan, result: AttemptResult) -> None:
    # One limit for the whole attempt: httpx's own timeout applies to each read,
    # so a receiver sending a byte at a time would otherwise never be cut off.
    async with asyncio.timeout(plan.timeout):
        url = plan.url
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            # Raw bytes are kept, so ask for no compression.
            "accept-encoding": "identity",
            **signed_headers(
                plan.secrets, plan.message_id, int(time.time()), plan.body
            ),
        }
        extensions: dict[str, Any] = {}
        if plan.pin_public_address:
            pinned = pin(url, await check_public_async(url))
            url = pinned.url
            headers.update(pinned.headers)
            extensions = pinned.extensions
        async with (
            httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(plan.timeout),
                # Proxy variables would send the request through another host,
                # past the address check.
                trust_env=False,
            ) as client,
            client.stream(
                "POST", url, content=plan.body, headers=headers, extensions=extensions
            ) as response,
        ):
            result.status_code = response.status_code
            if response.is_redirect:
                location = response.headers.get("location", "")[:200]
                result.error = f"redirect to {location!r} not followed"
            async for chunk in response.aiter_raw():
                result.response.extend(chunk)
                if len(result.response) >= MAX_RESPONSE_BYTES:
                    break


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {exc}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"invalid HTTP response or connection closed: {exc}"
    return f"{type(exc).__name__}: {exc}"


def record_attempt(
    session: Session, settings: Any, plan: AttemptPlan, result: AttemptResult
) -> None:
    """Store the attempt and move the delivery on: delivered, failed, or retried."""
    delivery = session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.delivery_id == plan.delivery_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if delivery is None:
        log.info("webhook_attempt_orphaned", delivery_id=plan.delivery_id)
        return
    delivery.attempts.append(
        WebhookAttempt(
            resend_number=plan.resend_number,
            attempt_number=plan.attempt_number,
            url=plan.url,
            attempted_at=result.attempted_at,
            duration_ms=result.duration_ms,
            succeeded=result.succeeded,
            status_code=result.status_code,
            error=result.error,
            response_body=result.response_text(),
        )
    )
    _log_attempt(plan, result)
    if not _is_current(delivery, plan.resend_number, plan.attempt_number):
        # Another job made this same attempt at the same time; it moved the state.
        return
    _advance(session, settings, delivery, result.succeeded)


def _advance(
    session: Session, settings: Any, delivery: WebhookDelivery, succeeded: bool
) -> None:
    now = utcnow()
    delivery.attempt_count += 1
    delivery.updated_at = now
    if succeeded:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        _wake_next(session, delivery, now)
        return
    delay = retry_delay(settings, delivery.attempt_count)
    if delay is None:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        log.warning(
            "webhook_delivery_failed",
            delivery_id=delivery.delivery_id,
            endpoint_id=delivery.endpoint_id,
            attempts=delivery.attempt_count,
        )
        _wake_next(session, delivery, now)
        return
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    enqueue_attempt(session, delivery, delivery.next_attempt_at)


def _wake_next(session: Session, delivery: WebhookDelivery, now: datetime) -> None:
    """Make the next waiting delivery of the same order and endpoint due now."""
    if delivery.order_id is None or delivery.resend_count != 0:
        return
    following = session.scalar(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == delivery.endpoint_id,
            WebhookDelivery.order_id == delivery.order_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.resend_count == 0,
            WebhookDelivery.id > delivery.id,
        )
        .order_by(WebhookDelivery.id)
        .limit(1)
    )
    if following is None:
        return
    session.execute(
        update(Job)
        .where(Job.dedupe_key == job_key(following), Job.status == "queued")
        .values(run_at=now, updated_at=now)
    )
    session.info["jobs_enqueued"] = True


def _log_attempt(plan: AttemptPlan, result: AttemptResult) -> None:
    log.info(
        "webhook_attempt",
        delivery_id=plan.delivery_id,
        endpoint_id=plan.endpoint_id,
        resend_number=plan.resend_number,
        attempt_number=plan.attempt_number,
        status_code=result.status_code,
        succeeded=result.succeeded,
        duration_ms=result.duration_ms,
        error=result.error,
    )
