"""Orders, packages, refunds, webhook deliveries and jobs for the console pages.

Rows are written by the factories and by the features' own services, so the pages
read what the service would have stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from tests import factories

from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.services import enqueue
from orderdesk.mail.backends import FileBackend
from orderdesk.orders.models import Order
from orderdesk.orders.serialization import serialize_order
from orderdesk.refunds import services as refund_services
from orderdesk.runtime import Runtime
from orderdesk.shipping import services as shipping
from orderdesk.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookEndpoint
from orderdesk.webhooks.services import emit_event
from orderdesk.webhooks.signing import generate_secret

SCRIPT = "<script>window.pwned = 1; alert('pwned')</script>"
IMAGE = '<img src=x onerror="window.pwned = 2">'
HOSTILE_REASON = f"Arrived broken {SCRIPT} {IMAGE}"
HOSTILE_EVENT = f"Left at door {SCRIPT}"


@dataclass
class Seeded:
    order_id: str
    tracking_number: str
    refund_ids: list[str]
    endpoint_id: str = ""
    delivery_id: str = ""
    job_id: int = 0
    other_order_ids: list[str] = field(default_factory=list)


def ago(**delta: float) -> datetime:
    value = datetime.now(UTC) - timedelta(**delta)
    return value.replace(microsecond=0)


def shipped_order(
    runtime: Runtime,
    tracking_number: str,
    *,
    items: int = 2,
    email: str = "buyer@example.com",
    name: str = "Ada Buyer",
    created_at: datetime | None = None,
    event_description: str = "Departed facility",
) -> str:
    """A paid order whose line items are in one UPS package with two events."""
    specs = [
        factories.line_item(
            unit_price=f"{19 + 10 * index}.00",
            quantity=index + 1,
            name=["Trail running shoes", "Merino wool socks", "Water bottle"][
                index % 3
            ],
        )
        for index in range(items)
    ]
    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        paid = factories.make_paid_order(
            session, owner, specs, created_at=created_at or ago(days=2)
        )
        order = session.get_one(Order, paid.id)
        recipient = dict(order.recipient or {})
        recipient["email"] = email
        recipient["physicalAddress"] = {**recipient["physicalAddress"], "name": name}
        order.recipient = recipient
        package = shipping.record_package(
            session,
            order,
            "UPS",
            tracking_number,
            list(range(items)),
            delivery_time_range=shipping.TimeRange(ago(hours=-24), ago(hours=-48)),
        )
        shipping.record_tracking_event(
            session, package, "shipped", ago(hours=30), "Picked up", "Reno, NV"
        )
        shipping.record_tracking_event(
            session,
            package,
            "out-for-delivery",
            ago(hours=2),
            event_description,
            "Brooklyn, NY",
        )
    return paid.id


def request_refunds(
    runtime: Runtime, order_id: str, reasons: list[str], *, hours_ago: float = 1
) -> list[str]:
    """Request one refund per reason, for line items 0, 1, ... in that order."""
    ids = []
    with runtime.session_factory() as session, session.begin():
        order = session.get_one(Order, order_id)
        for index, reason in enumerate(reasons):
            refund = refund_services.create_refund_request(
                session,
                order,
                index,
                reason,
                return_window=timedelta(days=30),
                actor="client_secret",
                now=utcnow() - timedelta(hours=hours_ago) + timedelta(minutes=index),
            )
            ids.append(refund.id)
    return ids


def failed_delivery(runtime: Runtime, order_id: str) -> tuple[str, str]:
    """An endpoint and a delivery of one of its events that failed every attempt."""
    with runtime.session_factory() as session, session.begin():
        order = session.get_one(Order, order_id)
        now = utcnow()
        endpoint = WebhookEndpoint(
            project_id=order.project_id,
            url="https://hooks.example.com/orderdesk",
            events=["*"],
            description="Storefront order sync",
            secret=generate_secret(),
            created_by="test",
            created_at=now,
            updated_at=now,
        )
        session.add(endpoint)
        session.flush()
        (delivery,) = emit_event(
            session,
            order.project_id,
            "orders.payment.succeeded",
            serialize_order(order),
            order_id=order.id,
        )
        for number in (1, 2, 3):
            session.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    resend_number=0,
                    attempt_number=number,
                    url=endpoint.url,
                    attempted_at=now - timedelta(minutes=40 - number * 10),
                    duration_ms=120 + number,
                    succeeded=False,
                    status_code=503,
                    error=None,
                    response_body="Service Unavailable",
                )
            )
        delivery.status = DeliveryStatus.FAILED
        delivery.attempt_count = 3
        delivery.next_attempt_at = None
        # Its first attempt's job ran out too.
        for job in session.query(Job).filter(Job.kind == "webhook.deliver"):
            job.status = "done"
        return endpoint.id, delivery.delivery_id


def failed_job(runtime: Runtime) -> int:
    with runtime.session_factory() as session, session.begin():
        job = enqueue(session, "mail.send", {"refund_id": "0" * 36, "kind": "x"})
        job.status = "failed"
        job.attempts = job.max_attempts
        job.last_error = "SMTPRecipientsRefused (550): <buyer@example.com> unknown"
        return job.id


def write_mail(directory: Path, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "orderdesk <orders@orderdesk.localhost>"
    message["To"] = "buyer@example.com"
    message["Subject"] = subject
    message["Message-ID"] = f"<{abs(hash(subject))}@orderdesk.localhost>"
    message.set_content(body)
    message.add_attachment(
        b"%PDF-1.4 label", maintype="application", subtype="pdf", filename="label.pdf"
    )
    FileBackend(directory).send(message)


def seed(runtime: Runtime) -> Seeded:
    """The data the page tests and screenshots use."""
    order_id = shipped_order(
        runtime, "1Z999AA10123456784", event_description=HOSTILE_EVENT
    )
    refund_ids = request_refunds(
        runtime, order_id, [HOSTILE_REASON, "The socks are the wrong size."]
    )
    others = [
        shipped_order(
            runtime,
            f"1ZOTHER{index:04d}X",
            items=1,
            email=f"shopper{index}@example.org",
            name=f"Shopper {index}",
            created_at=ago(days=3, hours=index),
        )
        for index in range(3)
    ]
    endpoint_id, delivery_id = failed_delivery(runtime, order_id)
    job_id = failed_job(runtime)
    return Seeded(
        order_id,
        "1Z999AA10123456784",
        refund_ids,
        endpoint_id,
        delivery_id,
        job_id,
        others,
    )
