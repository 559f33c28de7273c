"""Enqueue outbox jobs inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job

NOTIFY_CHANNEL = "orderdesk_jobs"


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    delay_seconds: float = 0,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = 10,
) -> Job:
    """Add a job that commits or rolls back with the caller's change.

    With a dedupe_key, an existing job of that key is returned instead of a second.
    """
    if dedupe_key is not None:
        existing = session.scalar(select(Job).where(Job.dedupe_key == dedupe_key))
        if existing is not None:
            return existing
    job = Job(
        kind=kind,
        payload=payload,
        run_at=run_at or utcnow() + timedelta(seconds=delay_seconds),
        dedupe_key=dedupe_key,
        max_attempts=max_attempts,
    )
    session.add(job)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Delivered to listening workers only when this transaction commits.
        session.execute(
            text("SELECT pg_notify(:channel, :kind)"),
            {"channel": NOTIFY_CHANNEL, "kind": kind},
        )
    session.info["jobs_enqueued"] = True
    return job


def find_jobs(
    session: Session, *, status: str | None = None, kind: str | None = None
) -> list[Job]:
    query = select(Job).order_by(Job.id)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    return list(session.scalars(query))


def retry_job(session: Session, job_id: int) -> Job | None:
    job = session.get(Job, job_id)
    if job is None:
        return None
    job.status = "queued"
    job.run_at = utcnow()
    job.max_attempts = max(job.max_attempts, job.attempts + 1)
    job.updated_at = utcnow()
    return job
