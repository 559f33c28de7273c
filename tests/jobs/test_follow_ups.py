"""Jobs that a running job enqueues, claimed by its worker and run right after it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from orderdesk.jobs.models import Job
from orderdesk.jobs.registry import HANDLERS, JobContext
from orderdesk.jobs.services import enqueue
from orderdesk.jobs.worker import Worker
from orderdesk.runtime import Runtime

PARENT = "test.parent"
CHILD = "test.child"


class Recorded:
    """Handlers of the two test kinds that record the order in which jobs ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, Any]] = []
        self.children_per_parent = 1
        self.child_delay_seconds = 0.0
        self.fail_parent = False
        self.on_parent: Any = None

    def parent(self, context: JobContext, session: Session, payload: dict) -> None:
        self.ran.append((PARENT, payload["name"]))
        for number in range(self.children_per_parent):
            enqueue(
                session,
                CHILD,
                {"name": f"{payload['name']}.{number}"},
                delay_seconds=self.child_delay_seconds,
            )
        if self.on_parent is not None:
            self.on_parent()
        if self.fail_parent:
            raise RuntimeError("the parent job failed after enqueuing")

    def child(self, context: JobContext, session: Session, payload: dict) -> None:
        self.ran.append((CHILD, payload["name"]))


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    handlers = Recorded()
    HANDLERS[PARENT] = handlers.parent
    HANDLERS[CHILD] = handlers.child
    yield handlers
    HANDLERS.pop(PARENT)
    HANDLERS.pop(CHILD)


def enqueue_parents(runtime: Runtime, *names: str) -> None:
    with runtime.session_factory() as session, session.begin():
        for name in names:
            enqueue(session, PARENT, {"name": name})


def jobs_of(runtime: Runtime, kind: str) -> list[Job]:
    with runtime.session_factory() as session:
        return list(
            session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id))
        )


def test_follow_up_runs_after_its_job(runtime: Runtime, recorded: Recorded) -> None:
    enqueue_parents(runtime, "a", "b")
    ran = Worker(runtime, name="follow-up-worker").run_once()
    assert ran == 4
    # Each child runs right after its parent, before the next claimed job.
    assert recorded.ran == [
        (PARENT, "a"),
        (CHILD, "a.0"),
        (PARENT, "b"),
        (CHILD, "b.0"),
    ]
    children = jobs_of(runtime, CHILD)
    assert [job.status for job in children] == ["done", "done"]
    assert [job.attempts for job in children] == [1, 1]
    assert [job.locked_by for job in children] == [None, None]


def test_delayed_job_is_not_claimed(runtime: Runtime, recorded: Recorded) -> None:
    recorded.child_delay_seconds = 3600
    enqueue_parents(runtime, "a")
    ran = Worker(runtime, name="follow-up-worker").run_once()
    assert ran == 1
    [child] = jobs_of(runtime, CHILD)
    assert child.status == "queued"
    assert child.locked_by is None
    assert child.attempts == 0


def test_follow_up_is_not_run_by_another_worker(
    runtime: Runtime, recorded: Recorded
) -> None:
    enqueue_parents(runtime, "a")
    first = Worker(runtime, name="first-worker")
    second = Worker(runtime, name="second-worker")
    [parent_id] = first._claim()
    follow_ups = first._run(parent_id, follow_ups_max=1)
    assert len(follow_ups) == 1
    # The child is committed claimed by the first worker, so a poll skips it.
    assert second.run_once() == 0
    [child] = jobs_of(runtime, CHILD)
    assert child.status == "running"
    assert child.locked_by == "first-worker"
    first._run(follow_ups[0])
    assert recorded.ran == [(PARENT, "a"), (CHILD, "a.0")]
    assert [job.status for job in jobs_of(runtime, CHILD)] == ["done"]


def test_failed_job_leaves_no_follow_up(runtime: Runtime, recorded: Recorded) -> None:
    recorded.fail_parent = True
    enqueue_parents(runtime, "a")
    assert Worker(runtime, name="follow-up-worker").run_once() == 1
    assert jobs_of(runtime, CHILD) == []
    [parent] = jobs_of(runtime, PARENT)
    assert parent.status == "queued"
    assert parent.locked_by is None


def test_follow_ups_are_capped_at_batch(runtime: Runtime, recorded: Recorded) -> None:
    recorded.children_per_parent = 3
    enqueue_parents(runtime, "a")
    assert Worker(runtime, name="follow-up-worker", batch=2).run_once() == 3
    children = jobs_of(runtime, CHILD)
    assert [job.status for job in children] == ["done", "done", "queued"]
    assert children[2].locked_by is None


def test_stopping_worker_releases_follow_ups(
    runtime: Runtime, recorded: Recorded
) -> None:
    worker = Worker(runtime, name="follow-up-worker")
    recorded.on_parent = worker.stop
    enqueue_parents(runtime, "a")
    assert worker.run_once() == 1
    [child] = jobs_of(runtime, CHILD)
    assert child.status == "queued"
    assert child.locked_by is None
    assert child.attempts == 0
    assert recorded.ran == [(PARENT, "a")]


def test_request_enqueue_is_not_claimed(runtime: Runtime) -> None:
    with runtime.session_factory() as session, session.begin():
        job = enqueue(session, CHILD, {"name": "from a request"})
    assert job.status == "queued"
    assert job.locked_by is None
