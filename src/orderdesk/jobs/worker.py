"""The worker loop: claim due jobs, run their handlers, retry with backoff."""

from __future__ import annotations

import os
import random
import socket
import threading
import traceback
from collections import deque
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, inspect, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.registry import HANDLERS, JobContext, RetryLater
from orderdesk.jobs.services import FOLLOW_UP_CLAIM, HANDED_OVER, FollowUpClaim

if TYPE_CHECKING:
    from orderdesk.runtime import Runtime

log = structlog.get_logger(__name__)

# How long a claim lasts. A worker killed mid-job leaves it claimed this long.
LEASE_SECONDS = 60
# A job claimed with more than this much of its lease left runs from the row that
# the claim returned. With less left, its row is read again, because once the
# lease expires another worker may claim the job.
UNREAD_LEASE_SECONDS = LEASE_SECONDS / 2
MAX_BACKOFF_SECONDS = 3600
# While the database is unreachable the worker tries again after this many seconds,
# doubling up to the maximum.
DATABASE_RETRY_SECONDS = 0.5
DATABASE_RETRY_MAX_SECONDS = 10.0


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter: about 2, 4, 8 ... seconds, capped at an hour."""
    base = min(MAX_BACKOFF_SECONDS, 2.0**attempt)
    return base * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not security


class Worker:
    def __init__(
        self, runtime: Runtime, *, name: str | None = None, batch: int = 10
    ) -> None:
        self.runtime = runtime
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.batch = batch
        self.stopping = threading.Event()
        # The connection that the sessions of the current batch use (see run_once).
        self._connection: Connection | None = None
        # Jobs that finished without a transaction of their own, whose done marks
        # the next transaction of this worker writes (see _run).
        self._done_unwritten: list[int] = []
        # The id of the follow-up that runs next and the rows its job handed over.
        self._handed_over: tuple[int, list[Any]] | None = None

    def run_forever(self) -> None:
        log.info("worker_started", worker=self.name)
        listener = self.runtime.job_listener()
        retry_seconds = DATABASE_RETRY_SECONDS
        try:
            while not self.stopping.is_set():
                try:
                    ran = self.run_once()
                except DBAPIError as exc:
                    # The database is down or restarting. A job cut off by it keeps
                    # its lease and runs again once the lease expires.
                    log.warning(
                        "worker_database_unavailable",
                        worker=self.name,
                        error=str(exc.orig),
                        retry_seconds=retry_seconds,
                    )
                    self.stopping.wait(retry_seconds)
                    retry_seconds = min(2 * retry_seconds, DATABASE_RETRY_MAX_SECONDS)
                    continue
                retry_seconds = DATABASE_RETRY_SECONDS
                if ran == 0:
                    listener.wait(self.runtime.settings.worker_poll_seconds)
        finally:
            listener.close()
            log.info("worker_stopped", worker=self.name)

    def stop(self) -> None:
        self.stopping.set()
        self.runtime.wake.set()

    def run_once(self) -> int:
        """Claim and run one batch of due jobs; return how many ran.

        The due jobs that the batch's jobs enqueue, up to `batch` of them, are
        claimed as they are created and run right after the job that enqueued them,
        and count in the return value. Every transaction of the batch runs on one
        connection, so the pool checks it (pre-ping) once per batch instead of once
        per transaction. Each job still commits on its own.
        """
        with self.runtime.engine.connect() as connection:
            self._connection = connection
            try:
                return self._run_batch()
            finally:
                self._connection = None

    def _run_batch(self) -> int:
        pending: deque[Job] = deque(self._claim())
        follow_ups_left = self.batch
        ran = 0
        while pending:
            if self.stopping.is_set():
                # Hand the rest of the batch back now, so that another worker does not
                # wait for their leases to run out.
                self._release([job.id for job in pending])
                break
            follow_ups = self._run(pending.popleft(), follow_ups_left)
            follow_ups_left -= len(follow_ups)
            pending.extendleft(reversed(follow_ups))
            ran += 1
        self._handed_over = None
        if self._done_unwritten:
            with self._session() as session, session.begin():
                self._write_done_marks(session, [])
            self._done_unwritten.clear()
        return ran

    def run_until_idle(self, max_rounds: int = 1000) -> int:
        """Run due jobs until none is due (for tests and the CLI); return the count."""
        total = 0
        for _ in range(max_rounds):
            ran = self.run_once()
            total += ran
            if ran == 0:
                break
        return total

    def _session(self) -> Session:
        """Open a session on the batch's connection, or on one from the pool outside
        a batch. A session on the batch's connection begins and commits its own
        transaction on it, because no other code uses that connection."""
        if self._connection is not None:
            return self.runtime.session_factory(bind=self._connection)
        return self.runtime.session_factory()

    def _claim(self) -> list[Job]:
        """Claim up to `batch` due jobs and return them as claimed, in run order."""
        with self._session() as session, session.begin():
            now = utcnow()
            query = (
                select(Job.id)
                .where(
                    Job.run_at <= now,
                    or_(
                        Job.status == "queued",
                        (Job.status == "running") & (Job.locked_until < now),
                    ),
                )
                .order_by(Job.run_at, Job.id)
                .limit(self.batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if not ids:
                return []
            # RETURNING gives the claimed rows, so no job is read again to run it.
            claimed = session.scalars(
                update(Job)
                .where(Job.id.in_(ids))
                .values(
                    status="running",
                    locked_by=self.name,
                    locked_until=now + timedelta(seconds=LEASE_SECONDS),
                    attempts=Job.attempts + 1,
                    updated_at=now,
                )
                .returning(Job),
                execution_options={"synchronize_session": False},
            ).all()
        order = {job_id: position for position, job_id in enumerate(ids)}
        return sorted(claimed, key=lambda job: order[job.id])

    def _release(self, job_ids: list[int]) -> None:
        """Return claimed jobs that this worker has not started to the queue."""
        with self._session() as session, session.begin():
            session.execute(
                update(Job)
                .where(
                    Job.id.in_(job_ids),
                    Job.locked_by == self.name,
                    Job.status == "running",
                )
                .values(
                    status="queued",
                    locked_by=None,
                    locked_until=None,
                    attempts=Job.attempts - 1,
                    updated_at=utcnow(),
                )
            )
        log.info("worker_released_jobs", worker=self.name, count=len(job_ids))

    def _run(self, claimed: int | Job, follow_ups_max: int = 0) -> list[Job]:
        """Run one claimed job, given by id or as claimed, and commit it. Return the
        follow-up jobs, at most `follow_ups_max`, that it enqueued claimed by this
        worker.

        A job whose handler leaves no transaction open on the batch's connection
        (it ran no statement, or committed its own writes) is marked done by the
        next transaction of this worker, at the latest when the batch ends. That
        saves a transaction for an email sent from rows that its label job handed
        over. If the worker dies first, the job runs again when its lease expires,
        which handlers allow (they are idempotent, and email is sent at least once
        with a stable Message-ID).
        """
        session = self._session()
        job_id = _id_of(claimed)
        claim = FollowUpClaim(
            worker=self.name,
            locked_until=utcnow() + timedelta(seconds=LEASE_SECONDS),
            limit=follow_ups_max,
        )
        try:
            job = self._claimed_job(session, claimed)
            if job is None or job.locked_by != self.name or job.status != "running":
                session.rollback()
                return []
            handler = HANDLERS.get(job.kind)
            if handler is None:
                raise LookupError(f"no handler is registered for job kind {job.kind!r}")
            context = JobContext(
                runtime=self.runtime, job_id=job.id, attempt=job.attempts
            )
            session.info[FOLLOW_UP_CLAIM] = claim
            self._merge_handed_over(session, job.id)
            handler(context, session, dict(job.payload))
            if self._connection is not None and not self._connection.in_transaction():
                self._done_unwritten.append(job.id)
            else:
                self._write_done_marks(session, [job.id])
                session.commit()
                self._done_unwritten.clear()
            if claim.jobs and claim.handed_over:
                self._handed_over = (claim.jobs[0].id, claim.handed_over)
            return claim.jobs
        except RetryLater as retry:
            session.rollback()
            self._reschedule(
                job_id, retry.delay_seconds, retry.reason, count_attempt=False
            )
        except Exception as exc:
            session.rollback()
            log.warning("job_failed_attempt", job_id=job_id, error=repr(exc))
            self._reschedule(job_id, None, _short_traceback(exc), count_attempt=True)
        finally:
            session.close()
        if claim.job_ids:
            # A handler that commits on its own (a label bought from a provider) may
            # have committed follow-ups before it failed. The others rolled back with
            # the job, and releasing them changes nothing.
            self._release(claim.job_ids)
        return []

    def _claimed_job(self, session: Session, claimed: int | Job) -> Job | None:
        """Return the job in `session`: the row as this worker claimed it, while
        most of its lease is left, or else the row as stored now."""
        if isinstance(claimed, Job):
            locked_until = claimed.locked_until
            lease_left = timedelta(seconds=UNREAD_LEASE_SECONDS)
            if locked_until is not None and locked_until - utcnow() > lease_left:
                # This worker committed the claim a moment ago, and no other worker
                # takes a job before its lease expires, so the row is as stored.
                return session.merge(claimed, load=False)
        return session.get(Job, _id_of(claimed))

    def _merge_handed_over(self, session: Session, job_id: int) -> None:
        """Put the rows that the previous job handed over into the session of
        `job_id`, if that job is the follow-up they were handed to."""
        handed_over, self._handed_over = self._handed_over, None
        if handed_over is None or handed_over[0] != job_id:
            return
        merged_rows = {}
        for row in handed_over[1]:
            # The rows are as the previous job committed them a moment ago, with
            # its locks, so they are merged without being read again.
            merged = session.merge(row, load=False)
            merged_rows[inspect(merged).identity_key] = merged
        session.info[HANDED_OVER] = merged_rows

    def _write_done_marks(self, session: Session, job_ids: list[int]) -> None:
        """Mark these jobs and the ones whose marks are unwritten done, in one
        statement of the session's transaction."""
        ids = [*job_ids, *self._done_unwritten]
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.locked_by == self.name)
            .values(
                status="done",
                locked_by=None,
                locked_until=None,
                last_error=None,
                updated_at=utcnow(),
            ),
            execution_options={"synchronize_session": False},
        )

    def _reschedule(
        self, job_id: int, delay: float | None, error: str, *, count_attempt: bool
    ) -> None:
        with self._session() as session, session.begin():
            if self._done_unwritten:
                self._write_done_marks(session, [])
            self._reschedule_in(session, job_id, delay, error, count_attempt)
        self._done_unwritten.clear()

    def _reschedule_in(
        self,
        session: Session,
        job_id: int,
        delay: float | None,
        error: str,
        count_attempt: bool,
    ) -> None:
        job = session.get(Job, job_id)
        if job is None or job.locked_by != self.name:
            return
        now = utcnow()
        job.locked_by = None
        job.locked_until = None
        job.updated_at = now
        job.last_error = error[:4000] if error else job.last_error
        if not count_attempt:
            # A planned re-check is not a failure, so it does not use up attempts.
            job.attempts = max(0, job.attempts - 1)
        if count_attempt and job.attempts >= job.max_attempts:
            job.status = "failed"
            log.error("job_failed", job_id=job_id, kind=job.kind, attempts=job.attempts)
            return
        job.status = "queued"
        wait = delay if delay is not None else backoff_seconds(job.attempts)
        job.run_at = now + timedelta(seconds=wait)


def _id_of(job: int | Job) -> int:
    return job.id if isinstance(job, Job) else job


def _short_traceback(exc: Exception) -> str:
    return "".join(traceback.format_exception(exc)[-6:])
