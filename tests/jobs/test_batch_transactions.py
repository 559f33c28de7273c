"""How a worker's batch uses the database: one connection, claimed rows not read
again, done marks written with the next commit, rows handed to a follow-up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.registry import HANDLERS, JobContext
from orderdesk.jobs.services import enqueue, get_handed_over, hand_over
from orderdesk.jobs.worker import Worker
from orderdesk.runtime import Runtime

QUIET = "test.quiet"
WRITER = "test.writer"
FAILING = "test.failing"
DYING = "test.dying"
PARENT = "test.handing-parent"
CHILD = "test.handed-child"


class WorkerDied(BaseException):
    """Stands for the worker process being killed: no handler code catches it."""


class Handlers:
    """Handlers of the test kinds, recording what they saw."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.handed: list[Any] = []

    def quiet(self, context: JobContext, session: Session, payload: dict) -> None:
        # Sends something outside the database and runs no statement, like an
        # email built from handed-over rows.
        self.ran.append(payload["name"])

    def writer(self, context: JobContext, session: Session, payload: dict) -> None:
        self.ran.append(payload["name"])
        enqueue(session, QUIET, {"name": f"{payload['name']}.note"}, delay_seconds=60)

    def failing(self, context: JobContext, session: Session, payload: dict) -> None:
        self.ran.append(payload["name"])
        raise RuntimeError("the test handler failed")

    def dying(self, context: JobContext, session: Session, payload: dict) -> None:
        self.ran.append(payload["name"])
        raise WorkerDied

    def parent(self, context: JobContext, session: Session, payload: dict) -> None:
        self.ran.append(payload["name"])
        # A row that this job writes through the ORM, so it is as committed.
        note = enqueue(session, QUIET, {"name": "note"}, delay_seconds=3600)
        for number in range(2):
            name = f"{payload['name']}.{number}"
            enqueue(session, CHILD, {"name": name, "note": note.id})
        hand_over(session, note)

    def child(self, context: JobContext, session: Session, payload: dict) -> None:
        self.ran.append(payload["name"])
        self.handed.append(get_handed_over(session, Job, payload["note"]))


@pytest.fixture
def handlers() -> Iterator[Handlers]:
    recorded = Handlers()
    kinds = {
        QUIET: recorded.quiet,
        WRITER: recorded.writer,
        FAILING: recorded.failing,
        DYING: recorded.dying,
        PARENT: recorded.parent,
        CHILD: recorded.child,
    }
    HANDLERS.update(kinds)
    yield recorded
    for kind in kinds:
        HANDLERS.pop(kind)


def enqueue_now(runtime: Runtime, *jobs: tuple[str, str]) -> list[int]:
    """Enqueue (kind, name) jobs in this order, each due a moment after the last."""
    ids = []
    with runtime.session_factory() as session, session.begin():
        start = utcnow() - timedelta(seconds=10)
        for number, (kind, name) in enumerate(jobs):
            job = enqueue(
                session,
                kind,
                {"name": name},
                run_at=start + timedelta(milliseconds=number),
            )
            ids.append(job.id)
    return ids


def job_rows(runtime: Runtime, ids: list[int]) -> list[Job]:
    with runtime.session_factory() as session:
        found = session.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id))
        return list(found)


@pytest.fixture
def statements(runtime: Runtime) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(" ".join(args[2].split()))

    event.listen(runtime.engine, "before_cursor_execute", record)
    yield seen
    event.remove(runtime.engine, "before_cursor_execute", record)


def done_marks(statements: list[str]) -> list[str]:
    return [
        sql
        for sql in statements
        if sql.startswith("UPDATE jobs") and "last_error=" in sql
    ]


def test_quiet_job_done_with_next_commit(
    runtime: Runtime, handlers: Handlers, statements: list[str]
) -> None:
    ids = enqueue_now(runtime, (QUIET, "q"), (WRITER, "w"))
    statements.clear()

    assert Worker(runtime, name="batch-worker").run_once() == 2

    assert handlers.ran == ["q", "w"]
    rows = job_rows(runtime, ids)
    assert [row.status for row in rows] == ["done", "done"]
    assert [row.locked_by for row in rows] == [None, None]
    assert [row.attempts for row in rows] == [1, 1]
    # One statement marks both jobs done.
    assert len(done_marks(statements)) == 1


def test_quiet_job_done_at_batch_end(runtime: Runtime, handlers: Handlers) -> None:
    [job_id] = enqueue_now(runtime, (QUIET, "q"))
    assert Worker(runtime, name="batch-worker").run_once() == 1
    [row] = job_rows(runtime, [job_id])
    assert row.status == "done"
    assert row.locked_by is None
    assert row.locked_until is None


def test_quiet_job_done_when_next_fails(runtime: Runtime, handlers: Handlers) -> None:
    ids = enqueue_now(runtime, (QUIET, "q"), (FAILING, "f"))
    Worker(runtime, name="batch-worker").run_once()
    quiet, failing = job_rows(runtime, ids)
    assert quiet.status == "done"
    assert failing.status == "queued"
    assert failing.attempts == 1
    assert failing.locked_by is None
    assert "the test handler failed" in (failing.last_error or "")


def test_dead_worker_leaves_quiet_job_held(
    runtime: Runtime, handlers: Handlers
) -> None:
    """A worker killed before the done mark is written leaves the job claimed, so it
    runs again when the lease expires (at least once)."""
    ids = enqueue_now(runtime, (QUIET, "q"), (DYING, "d"))
    with pytest.raises(WorkerDied):
        Worker(runtime, name="dying-worker").run_once()
    quiet, dying = job_rows(runtime, ids)
    assert quiet.status == "running"
    assert quiet.locked_by == "dying-worker"
    assert dying.status == "running"

    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
    HANDLERS[DYING] = handlers.quiet
    assert Worker(runtime, name="next-worker").run_once() == 2
    assert handlers.ran == ["q", "d", "q", "d"]
    assert [row.status for row in job_rows(runtime, ids)] == ["done", "done"]


def test_claimed_rows_are_not_read_again(
    runtime: Runtime, handlers: Handlers, statements: list[str]
) -> None:
    enqueue_now(runtime, (QUIET, "a"), (QUIET, "b"), (WRITER, "c"))
    statements.clear()
    assert Worker(runtime, name="batch-worker").run_once() == 3
    reads = [sql for sql in statements if sql.startswith("SELECT jobs.id, jobs.kind")]
    assert reads == []


def test_batch_uses_one_connection(runtime: Runtime, handlers: Handlers) -> None:
    enqueue_now(runtime, (WRITER, "a"), (WRITER, "b"), (QUIET, "c"))
    checkouts: list[int] = []
    test_thread = threading.get_ident()

    def on_checkout(*_args: Any) -> None:
        # The WAL checkpoint thread of a SQLite runtime checks out one of its own.
        if threading.get_ident() == test_thread:
            checkouts.append(1)

    event.listen(runtime.engine.pool, "checkout", on_checkout)
    try:
        assert Worker(runtime, name="batch-worker").run_once() == 3
    finally:
        event.remove(runtime.engine.pool, "checkout", on_checkout)
    assert len(checkouts) == 1


def test_short_lease_is_read_again(runtime: Runtime, handlers: Handlers) -> None:
    """A claimed job whose lease is nearly over may have been taken over, so the
    worker reads it again and leaves a job that another worker holds."""
    [job_id] = enqueue_now(runtime, (QUIET, "q"))
    worker = Worker(runtime, name="slow-worker")
    [claimed] = worker._claim()
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                locked_by="other-worker", locked_until=utcnow() + timedelta(hours=1)
            )
        )
    claimed.locked_until = utcnow() + timedelta(seconds=5)

    assert worker._run(claimed) == []

    assert handlers.ran == []
    [row] = job_rows(runtime, [job_id])
    assert row.status == "running"
    assert row.locked_by == "other-worker"


def test_rows_handed_to_next_follow_up(runtime: Runtime, handlers: Handlers) -> None:
    enqueue_now(runtime, (PARENT, "p"))
    assert Worker(runtime, name="batch-worker").run_once() == 3
    assert handlers.ran == ["p", "p.0", "p.1"]
    first, second = handlers.handed
    assert first is not None
    assert first.kind == QUIET
    assert first.payload == {"name": "note"}
    # Only the follow-up that runs right after the parent gets the rows.
    assert second is None


def test_rows_not_handed_outside_worker(runtime: Runtime) -> None:
    with runtime.session_factory() as session, session.begin():
        job = enqueue(session, QUIET, {"name": "outside"})
        hand_over(session, job)
        assert get_handed_over(session, Job, job.id) is None
