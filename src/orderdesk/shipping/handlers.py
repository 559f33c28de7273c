"""Job handlers of fulfilment: start a paid order's fulfilment, advance a simulated
package by one step. Both are idempotent, as every job handler must be."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.orm import Session

from orderdesk.jobs.registry import JobContext, handler
from orderdesk.shipping import fulfilment

log = structlog.get_logger(__name__)


@handler("fulfilment.start")
def start_fulfilment_job(
    context: JobContext, session: Session, payload: dict[str, Any]
) -> None:
    """Payload `{"order_id": ...}`, enqueued when the order's payment completes."""
    order_id = payload.get("order_id")
    if not isinstance(order_id, str):
        log.error("fulfilment_job_invalid", job_id=context.job_id, payload=payload)
        return
    fulfilment.start_fulfilment(session, order_id, context.runtime.settings)


@handler(fulfilment.ADVANCE_JOB)
def advance_simulated_job(
    context: JobContext, session: Session, payload: dict[str, Any]
) -> None:
    """Payload `{"package_id": ..., "step": n}`: record step n of the simulation."""
    package_id, step = payload.get("package_id"), payload.get("step")
    if not isinstance(package_id, str) or type(step) is not int:
        log.error("fulfilment_job_invalid", job_id=context.job_id, payload=payload)
        return
    fulfilment.advance_simulated(session, package_id, step, context.runtime.settings)
