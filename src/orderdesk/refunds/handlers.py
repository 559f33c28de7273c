"""Job handlers of refunds: issue a return label, pay a refund out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session

from orderdesk.db.base import utcnow
from orderdesk.jobs.registry import JobContext, RetryLater, handler
from orderdesk.refunds import payouts, returns, review

log = structlog.get_logger(__name__)


@handler(review.LABEL_JOB)
def issue_return_label_job(
    context: JobContext, session: Session, payload: dict[str, Any]
) -> None:
    """Payload `{"refund_id"}`: issue the label if the accept request did not.

    A failing provider raises, so the worker retries with backoff.
    """
    refund_id = _refund_id(context, payload)
    if refund_id is None:
        return
    try:
        returns.issue_return_label_in_job(
            session, context.runtime.settings, refund_id, actor="system"
        )
    except returns.LabelClaimed as claimed:
        raise RetryLater(
            _seconds_until(claimed.until), "another process is issuing the label"
        ) from claimed


@handler(review.PAYOUT_JOB)
def pay_out_refund_job(
    context: JobContext, session: Session, payload: dict[str, Any]
) -> None:
    """Payload `{"refund_id"}`: send the refund's payout and follow it until it is
    confirmed, retrying later while it waits for funds or confirmations."""
    refund_id = _refund_id(context, payload)
    if refund_id is None:
        return
    payouts.run_payout(session, context.runtime, refund_id)


def _refund_id(context: JobContext, payload: dict[str, Any]) -> str | None:
    refund_id = payload.get("refund_id")
    if not isinstance(refund_id, str) or not refund_id:
        log.error("refund_job_invalid", job_id=context.job_id, payload=payload)
        return None
    return refund_id


def _seconds_until(moment: datetime) -> float:
    return max(1.0, (moment - utcnow()).total_seconds())
