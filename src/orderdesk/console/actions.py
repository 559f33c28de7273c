"""The changes an operator makes from the console, each made by the service of the
feature that owns it. The console adds only the row locks and its own lookups."""

from __future__ import annotations

from sqlalchemy.orm import Session

from orderdesk.auth.models import ApiKey
from orderdesk.auth.services import (
    create_api_key,
    get_or_create_project,
    parse_scopes,
    revoke_api_key,
)
from orderdesk.config import Settings
from orderdesk.errors import Conflict, InvalidInput, NotFound
from orderdesk.jobs.models import Job
from orderdesk.jobs.services import retry_job
from orderdesk.orders.access import is_uuid, order_not_found
from orderdesk.orders.models import Order
from orderdesk.refunds import review
from orderdesk.refunds.models import Refund
from orderdesk.refunds.services import get_refund
from orderdesk.shipping.rollup import lock_order
from orderdesk.webhooks.exceptions import DeliveryNotFound, EndpointNotFound
from orderdesk.webhooks.models import WebhookDelivery
from orderdesk.webhooks.services import get_delivery, require_endpoint, resend_delivery

MAX_KEY_NAME_LENGTH = 100


def _lock_refund(
    session: Session, order_id: str, refund_id: str
) -> tuple[Order, Refund]:
    """Lock the order, then its refund, in the order the refund services expect."""
    if not is_uuid(order_id) or session.get(Order, order_id) is None:
        raise order_not_found(order_id)
    order = lock_order(session, order_id)
    return order, get_refund(session, order, refund_id, for_update=True)


def accept_refund(
    session: Session, order_id: str, refund_id: str, actor: str
) -> Refund:
    order, refund = _lock_refund(session, order_id, refund_id)
    review.accept_refund(session, order, refund, actor=actor)
    return refund


def reject_refund(
    session: Session, order_id: str, refund_id: str, reason: str, actor: str
) -> Refund:
    order, refund = _lock_refund(session, order_id, refund_id)
    review.reject_refund(session, order, refund, reason, actor=actor)
    return refund


def receive_return(
    session: Session, order_id: str, refund_id: str, actor: str
) -> Refund:
    order, refund = _lock_refund(session, order_id, refund_id)
    review.receive_return(session, order, refund, actor=actor, source="console")
    return refund


def resend_webhook(
    session: Session, endpoint_id: str, delivery_id: str, actor: str
) -> WebhookDelivery:
    """Resend a delivered or failed delivery of an endpoint of any project."""
    from orderdesk.console.queries import get_endpoint

    found = get_endpoint(session, endpoint_id)
    if found is None:
        raise EndpointNotFound(endpoint_id)
    endpoint = require_endpoint(session, found.project_id, endpoint_id)
    delivery = get_delivery(session, endpoint, delivery_id, for_update=True)
    if delivery is None:
        raise DeliveryNotFound(delivery_id, endpoint.id)
    resend_delivery(session, delivery, actor)
    return delivery


def retry_failed_job(session: Session, job_id: str) -> Job:
    """Queue a failed job again. Only failed jobs: a queued or running one would
    run twice."""
    job = session.get(Job, int(job_id)) if job_id.isdigit() else None
    if job is None:
        raise NotFound(f"No job {job_id[:20]!r} exists.", code="job_not_found")
    if job.status != "failed":
        raise Conflict(
            f"Job {job.id} is {job.status}, not failed, so it is not retried.",
            code="job_not_failed",
        )
    retry_job(session, job.id)
    return job


def create_key(
    session: Session,
    settings: Settings,
    project_name: str,
    scopes: list[str],
    name: str,
) -> tuple[ApiKey, str]:
    """Create a key of this deployment's environment; the value is returned once."""
    label = name.strip() or None
    if label is not None and len(label) > MAX_KEY_NAME_LENGTH:
        raise InvalidInput(
            f"The key name has {len(label)} characters; use at most "
            f"{MAX_KEY_NAME_LENGTH}."
        )
    checked = parse_scopes(scopes)
    project = get_or_create_project(session, settings, project_name)
    return create_api_key(session, project, settings.environment, checked, label)


def revoke_key(session: Session, key_id: str) -> ApiKey:
    if not is_uuid(key_id):
        raise NotFound(f"No API key has the id {key_id[:40]!r}.")
    return revoke_api_key(session, key_id)
