"""The job handler that makes webhook delivery attempts."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from orderdesk.jobs.registry import JobContext, handler
from orderdesk.webhooks.delivery import JOB_KIND, run_attempt


@handler(JOB_KIND)
def deliver_webhook(
    context: JobContext, session: Session, payload: dict[str, Any]
) -> None:
    """Make one delivery attempt. The handler commits the job's transaction before
    the HTTP request, so no database lock is held during the request."""
    run_attempt(session, context.runtime.settings, payload)
