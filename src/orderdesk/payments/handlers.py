"""Job handlers of payments: re-check an in-progress payment until it settles."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from orderdesk.jobs.registry import JobContext, RetryLater, handler
from orderdesk.orders.models import Order
from orderdesk.orders.statuses import PaymentState
from orderdesk.payments import services
from orderdesk.payments.exceptions import ChainUnavailable
from orderdesk.payments.verification import Outcome

log = structlog.get_logger(__name__)


@handler(services.RECHECK_JOB)
def recheck_payment(
    context: JobContext, session: Session, payload: dict[str, Any]
) -> None:
    """Payload `{"order_id", "tx_id"}`. Retries later while the check is pending or
    the node is unreachable; stops once the order no longer awaits this txId."""
    order_id, tx_id = payload.get("order_id"), payload.get("tx_id")
    if not isinstance(order_id, str) or not isinstance(tx_id, str):
        log.error("payment_recheck_invalid", job_id=context.job_id, payload=payload)
        return
    chains = context.runtime.chains
    delay = context.runtime.settings.payment_recheck_seconds
    order = session.scalar(select(Order).where(Order.id == order_id))
    if (
        order is None
        or order.payment_state != PaymentState.IN_PROGRESS
        or order.payment_tx_id != tx_id
    ):
        return
    try:
        pending = services.pending_check(order, chains, seen_before=True)
        # End the read before asking the node, so no transaction stays open meanwhile.
        session.rollback()
        check = services.run_check(chains, pending)
    except ChainUnavailable as exc:
        log.warning("payment_recheck_deferred", order_id=order_id, error=exc.reason)
        raise RetryLater(delay, f"chain unavailable: {exc.reason}") from exc
    services.apply_check(session, chains, pending, check)
    if check.outcome == Outcome.PENDING:
        raise RetryLater(
            delay, f"waiting for {pending.tx_id} ({check.confirmations} confirmations)"
        )
