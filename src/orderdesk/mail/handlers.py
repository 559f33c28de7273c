"""The `mail.send` job, and `send_message` for sending a built message directly.

Delivery is at least once: a job that sent its message but failed to commit runs
again and sends it again. The repeat carries the same Message-ID, Date and body,
so a receiver that deduplicates by Message-ID can drop it, and the file backend
overwrites the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, lazyload

from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.registry import JobContext, handler
from orderdesk.jobs.services import get_handed_over
from orderdesk.labels.providers import reprint_return_label
from orderdesk.mail.backends import MailDeliveryError, mail_backend
from orderdesk.mail.messages import (
    MailContentError,
    MailKind,
    RefundMail,
    build_refund_message,
    message_domain,
)
from orderdesk.orders.models import LineItem, Order
from orderdesk.orders.serialization import order_email
from orderdesk.refunds.models import Refund

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _ReturnedItem:
    name: str
    quantity: int


def send_message(
    settings: Any, message: EmailMessage, *, kind: str | None = None
) -> None:
    """Send a message with the configured backend, adding a Message-ID if missing.

    Raises MailDeliveryError when the SMTP server is unreachable or rejects the
    message. Logs the Message-ID, kind and recipient domains, never addresses or
    credentials.
    """
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain=message_domain(settings))
    backend = mail_backend(settings)
    fields = {
        "message_id": str(message["Message-ID"]),
        "kind": kind,
        "recipient_domain": _recipient_domains(message),
        "backend": backend.name,
    }
    try:
        backend.send(message)
    except MailDeliveryError as exc:
        log.warning("mail_send_failed", error=str(exc), **fields)
        raise
    log.info("mail_sent", **fields)


@handler("mail.send")
def send_refund_mail(
    context: JobContext, session: Session, payload: dict[str, Any]
) -> None:
    """Send the email of one refund event: payload `{"refund_id", "kind"}`.

    The message is dated when the job was enqueued, so every attempt builds the same
    message. An order without an email address is skipped with a warning.
    """
    refund_id, kind = _parse_payload(payload)
    settings = context.runtime.settings
    refund, order = _refund_and_order(session, refund_id, context.job_id)
    to_email = order_email(order)
    if not to_email:
        log.warning(
            "mail_skipped_no_recipient",
            refund_id=refund_id,
            kind=kind,
            job_id=context.job_id,
        )
        return
    mail = _refund_mail(kind, refund, order, to_email, settings)
    job = session.get(Job, context.job_id)
    date = job.created_at if job is not None else utcnow()
    message = build_refund_message(mail, settings, date=date)
    send_message(settings, message, kind=kind)


def _refund_and_order(
    session: Session, refund_id: str, job_id: int
) -> tuple[Refund, Order]:
    """Return the rows that the label job handed over, or else load the refund and
    its order with the line items in one query. The email shows no history, so the
    refund's events are not loaded."""
    refund = get_handed_over(session, Refund, refund_id)
    if refund is not None:
        order = get_handed_over(session, Order, refund.order_id)
        if order is not None:
            return refund, order
    query = (
        select(Refund, Order)
        .outerjoin(Order, Order.id == Refund.order_id)
        .where(Refund.id == refund_id)
        .options(lazyload(Refund.history_events), joinedload(Order.line_items))
    )
    row = session.execute(query).unique().first()
    if row is None:
        raise LookupError(f"refund {refund_id} of mail.send job {job_id} is not found")
    refund, order = row
    if order is None:
        raise LookupError(f"order {refund.order_id} of refund {refund_id} is not found")
    return refund, order


def _parse_payload(payload: dict[str, Any]) -> tuple[str, MailKind]:
    refund_id = payload.get("refund_id")
    if not isinstance(refund_id, str) or not refund_id:
        raise ValueError(
            f"mail.send payload needs a refund_id string, got {refund_id!r}"
        )
    kind = payload.get("kind")
    try:
        return refund_id, MailKind(str(kind))
    except ValueError:
        kinds = ", ".join(member.value for member in MailKind)
        raise ValueError(f"mail.send kind {kind!r} is not one of {kinds}") from None


def _refund_mail(
    kind: MailKind, refund: Refund, order: Order, to_email: str, settings: Any
) -> RefundMail:
    item = _returned_item(order, refund)
    physical = (order.recipient or {}).get("physicalAddress") or {}
    extra: dict[str, Any] = {}
    if kind is MailKind.REFUND_ACCEPTED:
        extra = _label_fields(refund, order, item, settings)
    elif kind is MailKind.REFUND_REJECTED:
        extra = {"rejection_reason": refund.rejection_reason}
    else:
        # The payout goes to the address the payment came from.
        extra = {
            "payout_tx_id": refund.payout_tx_id,
            "payout_chain": refund.payout_chain or order.payment_method,
            "payout_address": order.paid_from or order.payer_address,
        }
    return RefundMail(
        kind=kind,
        refund_id=refund.id,
        order_id=order.id,
        to_email=to_email,
        to_name=physical.get("name"),
        item_name=item.name,
        quantity=item.quantity,
        amount=refund.amount,
        currency=refund.currency,
        **extra,
    )


def _label_fields(
    refund: Refund, order: Order, item: _ReturnedItem, settings: Any
) -> dict[str, Any]:
    """Carrier, tracking number and the label PDF, rebuilt from the refund's fields."""
    carrier = refund.return_carrier
    tracking_number = refund.return_tracking_number
    if not carrier or not tracking_number:
        raise MailContentError(
            f"Refund {refund.id} has no return label yet (carrier {carrier!r}, "
            f"tracking number {tracking_number!r}), so its acceptance email cannot "
            "be sent."
        )
    pdf = reprint_return_label(
        refund.id, carrier, tracking_number, order.recipient, item, settings
    )
    return {"carrier": carrier, "tracking_number": tracking_number, "label_pdf": pdf}


def _returned_item(order: Order, refund: Refund) -> _ReturnedItem:
    line: LineItem | None = next(
        (line for line in order.line_items if line.index == refund.line_item), None
    )
    if line is None:
        raise LookupError(
            f"order {order.id} has no line item {refund.line_item}, which refund "
            f"{refund.id} names"
        )
    return _ReturnedItem(name=line.name or line.locator, quantity=line.quantity)


def _recipient_domains(message: EmailMessage) -> str:
    headers = [
        str(value)
        for name in ("To", "Cc", "Bcc")
        for value in message.get_all(name, [])
    ]
    domains = sorted(
        {address.rpartition("@")[2].lower() for _, address in getaddresses(headers)}
    )
    return ",".join(domain for domain in domains if domain)
