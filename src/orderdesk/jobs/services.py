"""Enqueue outbox jobs inside the caller's transaction."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job

NOTIFY_CHANNEL = "orderdesk_jobs"
# The session.info key of the FollowUpClaim of the job that the session runs.
FOLLOW_UP_CLAIM = "orderdesk_follow_up_claim"
# The session.info key of the rows handed over to the job that the session runs, by
# identity key (see hand_over). The session's identity map keeps clean rows only
# while something else refers to them.
HANDED_OVER = "orderdesk_handed_over"

Row = TypeVar("Row")


@dataclass
class FollowUpClaim:
    """A worker's claim on the jobs, due at once, that its running job enqueues.

    The worker sets it in the job's session. `enqueue` then creates up to `limit`
    such jobs already claimed by the worker, in the same transaction, and the
    worker runs them right after the job commits. That saves a claim query each,
    and the follow-up finds the job's rows in the worker's caches (for example the
    rendered label that the acceptance email attaches). A job enqueued under a
    claim runs like one claimed by a poll: if the worker dies, its lease expires
    and another worker runs it.
    """

    worker: str
    locked_until: datetime
    limit: int
    # The claimed jobs as created, which the worker runs without reading them again,
    # and their ids, which stay known after a rollback.
    jobs: list[Job] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    # ORM objects that the running job hands to its first follow-up (see hand_over).
    handed_over: list[Any] = field(default_factory=list)


def hand_over(session: Session, *rows: Any) -> None:
    """Let the first follow-up job that the running job enqueued read these rows as
    this job commits them, instead of loading them again.

    Pass only rows that the job has locked and loaded with every attribute that a
    follow-up reads (an unloaded one is loaded on access). The worker puts them into
    the follow-up's session only when the job has committed and the follow-up is
    the next job it runs. Outside a worker's job this does nothing.
    """
    claim: FollowUpClaim | None = session.info.get(FOLLOW_UP_CLAIM)
    if claim is not None and claim.jobs:
        claim.handed_over.extend(rows)


def get_handed_over(session: Session, entity: type[Row], ident: Any) -> Row | None:
    """Return the row of `entity` with primary key `ident` that the job which
    enqueued the running job handed over, or None."""
    handed_over: dict[Any, Any] = session.info.get(HANDED_OVER, {})
    return handed_over.get(identity_key(entity, ident))


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
    Inside a job that a worker runs, a job due at once may be created claimed by
    that worker (see FollowUpClaim).
    """
    now = utcnow()
    job = Job(
        kind=kind,
        payload=payload,
        run_at=run_at or now + timedelta(seconds=delay_seconds),
        dedupe_key=dedupe_key,
        max_attempts=max_attempts,
        status="queued",
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    claim = _claim_follow_up(session, job, now)
    if dedupe_key is None:
        session.add(job)
        session.flush()
    else:
        inserted = _insert_unless_deduplicated(session, job)
        if inserted is None:
            existing = session.scalar(select(Job).where(Job.dedupe_key == dedupe_key))
            if existing is not None:
                return existing
            # The job of that key was deleted since the insert found it. A plain
            # insert now adds the job, or fails on the unique index.
            session.add(job)
            session.flush()
        else:
            job = inserted
    if claim is not None:
        claim.jobs.append(job)
        claim.job_ids.append(job.id)
    elif _dialect_name(session) == "postgresql":
        # Delivered to listening workers only when this transaction commits.
        session.execute(
            text("SELECT pg_notify(:channel, :kind)"),
            {"channel": NOTIFY_CHANNEL, "kind": kind},
        )
    session.info["jobs_enqueued"] = True
    return job


def _insert_unless_deduplicated(session: Session, job: Job) -> Job | None:
    """Insert the transient `job` unless a job of its dedupe key exists, in one
    statement. Return the inserted row as a Job of the session, or None.

    ON CONFLICT DO NOTHING also waits for a transaction that is inserting the same
    key and then inserts nothing, where a SELECT before an INSERT would fail on
    the unique index.
    """
    values = {
        column.key: getattr(job, column.key)
        for column in Job.__table__.columns
        if column.key != "id"
    }
    statement = _insert_unless_deduplicated_statement(_dialect_name(session))
    # NOTE: the ORM leaves None values out of such an INSERT, so a column left
    # None would get its column default. `enqueue` sets every column that has one.
    return session.scalars(statement, values).first()


@functools.cache
def _insert_unless_deduplicated_statement(dialect_name: str) -> Insert:
    """Build the insert of `_insert_unless_deduplicated`. Its values are execution
    parameters, so it is built and compiled once per dialect."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (
        dialect.insert(Job)
        .on_conflict_do_nothing(index_elements=[Job.dedupe_key])
        .returning(Job)
    )


def _dialect_name(session: Session) -> str:
    return session.get_bind().dialect.name


def _claim_follow_up(session: Session, job: Job, now: datetime) -> FollowUpClaim | None:
    """Mark the new `job` claimed by the worker whose job runs in `session`, if it
    is due now and the claim has room. Return the claim that took it, or None."""
    claim: FollowUpClaim | None = session.info.get(FOLLOW_UP_CLAIM)
    if claim is None or job.run_at > now or len(claim.job_ids) >= claim.limit:
        return None
    job.status = "running"
    job.locked_by = claim.worker
    job.locked_until = claim.locked_until
    job.attempts = 1
    job.updated_at = now
    return claim


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
