"""Review of refund requests: accept, reject, mark the return received. Never commits.

Each function takes the order locked first and the refund locked after it (see
`services.get_refund(..., for_update=True)`). So concurrent reviews of one refund run
one at a time, and only the first move succeeds. The others find the new status and
get 409 invalid_transition.

Accepting enqueues the `refund.return_label` job rather than calling the label
provider here, because the provider call must not run inside the transaction (see
`refunds.returns`). Marking the return received enqueues the `refund.payout` job
once per refund (see `refunds.payouts`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session

from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.jobs.services import enqueue
from orderdesk.labels.exceptions import MissingBuyerAddress
from orderdesk.labels.providers import buyer_address
from orderdesk.mail.messages import MailKind
from orderdesk.orders.models import Order
from orderdesk.refunds import services
from orderdesk.refunds.exceptions import InvalidRefundRequest, ReturnAlreadyReceived
from orderdesk.refunds.models import Refund
from orderdesk.refunds.schemas import check_reason
from orderdesk.refunds.services import SYSTEM_ACTOR
from orderdesk.refunds.statuses import PayoutStatus, RefundEvent, RefundStatus
from orderdesk.webhooks import events as webhook_events

log = structlog.get_logger(__name__)

LABEL_JOB = "refund.return_label"
PAYOUT_JOB = "refund.payout"
MAIL_JOB = "mail.send"
# How long one process may hold the right to ask the label provider for a refund's
# label. The label job waits this long first, so the request that accepted the
# refund normally issues the label itself and the job finds nothing left to do.
LABEL_CLAIM_SECONDS = 120
# Failures of unexpected kinds that the worker counts before it gives a payout job up.
# With the worker's backoff (2**n seconds, capped at an hour) that is about 14 hours.
PAYOUT_MAX_ATTEMPTS = 25


def request_refund(
    session: Session,
    settings: Settings,
    order: Order,
    line_item: int,
    reason: str,
    *,
    actor: str,
    now: datetime | None = None,
) -> Refund:
    """Create a refund request and apply the review policy of the settings.

    A request whose amount is below `refund_auto_accept_below` is accepted at once by
    "system". One for an order without a physical address stays initiated, because
    no return label can be made for it.
    """
    refund = services.create_refund_request(
        session,
        order,
        line_item,
        reason,
        return_window=timedelta(days=settings.return_window_days),
        actor=actor,
        now=now,
    )
    threshold = settings.refund_auto_accept_below
    if threshold is None or refund.amount >= threshold:
        return refund
    try:
        accept_refund(session, order, refund, actor=SYSTEM_ACTOR, now=now)
    except MissingBuyerAddress:
        log.warning(
            "refund_auto_accept_skipped",
            order_id=order.id,
            refund_id=refund.id,
            reason="missing_physical_address",
        )
    return refund


def accept_refund(
    session: Session,
    order: Order,
    refund: Refund,
    *,
    actor: str,
    now: datetime | None = None,
) -> None:
    """Move an initiated refund to accepted and enqueue its return label.

    Raises InvalidTransition, and MissingBuyerAddress (409) when the order has no
    complete physical address to send the label from. Neither changes anything.
    """
    services.check_move(refund, RefundStatus.ACCEPTED, "accepted")
    buyer_address(order.recipient)
    services.move_status(
        session, refund, RefundStatus.ACCEPTED, actor, action="accepted", now=now
    )
    enqueue(
        session,
        LABEL_JOB,
        {"refund_id": refund.id},
        delay_seconds=LABEL_CLAIM_SECONDS,
        dedupe_key=f"{LABEL_JOB}:{refund.id}",
    )
    services.emit_refund_webhook(
        session, order, webhook_events.ORDERS_REFUND_ACCEPTED, refund
    )


def reject_refund(
    session: Session,
    order: Order,
    refund: Refund,
    reason: str,
    *,
    actor: str,
    now: datetime | None = None,
) -> None:
    """Move an initiated refund to rejected with `reason` and email the buyer.

    The reason follows the rules of a request's reason. Raises InvalidRefundRequest
    and InvalidTransition. Neither changes anything.
    """
    try:
        reason = check_reason(reason)
    except ValueError as exc:
        raise InvalidRefundRequest("reason", str(exc)) from exc
    services.move_status(
        session,
        refund,
        RefundStatus.REJECTED,
        actor,
        action="rejected",
        data={"reason": reason},
        now=now,
    )
    refund.rejection_reason = reason
    enqueue_mail(session, refund, MailKind.REFUND_REJECTED)
    services.emit_refund_webhook(
        session, order, webhook_events.ORDERS_REFUND_REJECTED, refund
    )


def receive_return(
    session: Session,
    order: Order,
    refund: Refund,
    *,
    actor: str,
    source: str,
    now: datetime | None = None,
) -> None:
    """Record that the returned item arrived and start the payout.

    `source` is "api", "cli" or "tracking" (the return parcel was delivered). Raises
    InvalidTransition unless the refund is accepted, and ReturnAlreadyReceived when
    the payout has started already.
    """
    if refund.status != RefundStatus.ACCEPTED:
        # Raises: only an accepted refund moves on towards completed.
        services.check_move(refund, RefundStatus.COMPLETED, "marked as returned")
    if refund.return_received_at is not None:
        raise ReturnAlreadyReceived(refund.id, refund.return_received_at)
    now = now or utcnow()
    refund.return_received_at = now
    refund.updated_at = now
    services.record_refund_event(
        session, refund, RefundEvent.RETURN_RECEIVED, actor, data={"source": source}
    )
    schedule_payout(session, order, refund)
    log.info(
        "refund_return_received",
        order_id=order.id,
        refund_id=refund.id,
        source=source,
        actor=actor,
    )


def schedule_payout(session: Session, order: Order, refund: Refund) -> None:
    """Enqueue the refund's payout job. Its dedupe key is unique in the jobs table, so
    the job exists at most once per refund."""
    refund.payout_status = PayoutStatus.SCHEDULED
    refund.payout_chain = order.payment_method
    refund.payout_message = None
    enqueue(
        session,
        PAYOUT_JOB,
        {"refund_id": refund.id},
        dedupe_key=f"{PAYOUT_JOB}:{refund.id}",
        max_attempts=PAYOUT_MAX_ATTEMPTS,
    )


def enqueue_mail(session: Session, refund: Refund, kind: MailKind) -> None:
    """Enqueue the refund's email of `kind`, once per refund and kind (by the job's
    unique dedupe key)."""
    enqueue(
        session,
        MAIL_JOB,
        {"refund_id": refund.id, "kind": str(kind)},
        dedupe_key=f"{MAIL_JOB}:{kind}:{refund.id}",
    )
