"""A worker process killed in the middle of a delivery loses no event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests.conftest import TEST_SECRET
from tests.webhooks.conftest import (
    HANG,
    Received,
    Receiver,
    create_endpoint,
    deliveries,
    emit,
)

from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.runtime import Runtime
from orderdesk.webhooks import events
from orderdesk.webhooks.delivery import JOB_KIND
from orderdesk.webhooks.models import WebhookAttempt, WebhookEndpoint


class WorkerProcesses:
    """`python -m orderdesk.cli worker` processes on the test's database."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.env = {
            **os.environ,
            "ORDERDESK_DATABASE_URL": settings.database_url,
            "ORDERDESK_TREASURY_SECRET": TEST_SECRET,
            "ORDERDESK_DATA_DIR": str(tmp_path / "var"),
            "ORDERDESK_MAIL_DIR": str(tmp_path / "mail"),
            "ORDERDESK_DEVNET": "false",
            "ORDERDESK_WORKER_POLL_SECONDS": "0.05",
        }
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"worker-{len(self.started)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "orderdesk.cli", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.started.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self.tmp_path.glob("worker-*.log"))
        )

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(settings, tmp_path)
    yield processes
    processes.stop_all()


def wait_until(condition, timeout: float, what: str, logs=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s\n{logs()}")
        time.sleep(0.05)


def test_killed_worker_loses_nothing(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    receiver: Receiver,
    workers: WorkerProcesses,
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]

    def behaviour(request: Received) -> str | int:
        # The first request is held open until the worker sending it is dead.
        return HANG if len(receiver.requests) == 1 else 200

    receiver.behaviour = behaviour
    emit(runtime, events.ORDERS_PAYMENT_SUCCEEDED, {"orderId": "o-1"}, order_id="o-1")
    first = workers.start()
    wait_until(receiver.hanging.is_set, 60, "the first request", workers.logs)

    # While the receiver holds the request, the worker holds no database lock.
    started = time.monotonic()
    with runtime.session_factory() as session, session.begin():
        session.execute(update(WebhookEndpoint).values(description="written meanwhile"))
    assert time.monotonic() - started < 5

    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    receiver.release.set()
    [row] = deliveries(runtime)
    assert row.status == "pending"
    assert row.attempt_count == 0
    with runtime.session_factory() as session, session.begin():
        assert session.scalars(select(WebhookAttempt)).all() == []
        [job] = session.scalars(select(Job).where(Job.kind == JOB_KIND)).all()
        assert job.status == "running"
        assert job.locked_until is not None
        assert job.locked_until > utcnow()
        # Let the dead worker's lease run out now rather than in LEASE_SECONDS.
        job.locked_until = utcnow() - timedelta(seconds=1)

    workers.start()
    wait_until(
        lambda: deliveries(runtime)[0].status == "delivered",
        60,
        "the delivery by the second worker",
        workers.logs,
    )

    assert len(receiver.requests) == 2
    held, delivered = receiver.requests
    assert held.message_id == delivered.message_id
    assert held.body == delivered.body
    assert delivered.verified_by == [endpoint["secret"]]
    with runtime.session_factory() as session:
        [attempt] = session.scalars(select(WebhookAttempt)).all()
        assert attempt.succeeded is True
        assert attempt.attempt_number == 1
        [job] = session.scalars(select(Job).where(Job.kind == JOB_KIND)).all()
        assert job.status == "done"
