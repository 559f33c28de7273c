"""SIGTERM stops a process gracefully: what it started, it finishes.

The worker finishes the delivery it is sending and hands the rest of its batch back to
the queue. `serve` completes the requests in flight before it exits, and its in-process
worker finishes its job too. The slow step is a webhook receiver that keeps the request
open until the test releases it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import TEST_SECRET, free_port
from tests.webhooks.conftest import (
    HANG,
    WEBHOOKS,
    Received,
    Receiver,
    create_endpoint,
    deliveries,
    emit,
)

from orderdesk.config import Settings
from orderdesk.jobs.models import Job
from orderdesk.runtime import Runtime
from orderdesk.webhooks import events
from orderdesk.webhooks.delivery import JOB_KIND
from orderdesk.webhooks.models import WebhookEndpoint

# How long the test keeps the slow step waiting after SIGTERM, to see that the process
# does not exit before it is done.
HOLD_SECONDS = 1.5


class Processes:
    """orderdesk processes on the test's database, stopped at the end of the test."""

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

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"process-{len(self.started)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "orderdesk.cli", *args],
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
            for path in sorted(self.tmp_path.glob("process-*.log"))
        )

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(settings, tmp_path)
    yield started
    started.stop_all()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s\n{logs()}")
        time.sleep(0.05)


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], logs: Callable[[], str]
) -> None:
    def listening() -> bool:
        assert process.poll() is None, f"the server exited early\n{logs()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    wait_until(listening, 60, f"a server on port {port}", logs)


def jobs(runtime: Runtime) -> list[Job]:
    with runtime.session_factory() as session:
        query = select(Job).where(Job.kind == JOB_KIND).order_by(Job.id)
        return list(session.scalars(query))


def hold_first_request(receiver: Receiver) -> None:
    def behaviour(_request: Received) -> str | int:
        return HANG if len(receiver.requests) == 1 else 200

    receiver.behaviour = behaviour


def test_worker_finishes_job_releases_rest(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    receiver: Receiver,
    processes: Processes,
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    hold_first_request(receiver)
    # Three orders, so that the three deliveries do not wait for each other.
    for order in ("o-1", "o-2", "o-3"):
        emit(
            runtime, events.ORDERS_PAYMENT_SUCCEEDED, {"orderId": order}, order_id=order
        )

    worker = processes.start("worker")
    wait_until(receiver.hanging.is_set, 60, "the first delivery", processes.logs)
    # One batch claimed all three.
    assert all(job.status == "running" for job in jobs(runtime))

    worker.send_signal(signal.SIGTERM)
    time.sleep(HOLD_SECONDS)
    assert worker.poll() is None, "the worker exited with its delivery unfinished"
    receiver.release.set()
    assert worker.wait(timeout=30) == 0, processes.logs()

    assert len(receiver.requests) == 1
    finished, *handed_back = jobs(runtime)
    assert finished.status == "done"
    for job in handed_back:
        assert job.status == "queued"
        assert job.locked_by is None
        assert job.attempts == 0
    assert sorted(row.status for row in deliveries(runtime)) == [
        "delivered",
        "pending",
        "pending",
    ]

    # The next worker sends the other two at once, not after the old claim's lease.
    processes.start("worker")
    wait_until(
        lambda: all(row.status == "delivered" for row in deliveries(runtime)),
        20,
        "the deliveries handed back",
        processes.logs,
    )
    assert len(receiver.requests) == 3
    assert len({request.message_id for request in receiver.requests}) == 3


def test_serve_completes_requests_in_flight(
    api_key: str, runtime: Runtime, processes: Processes
) -> None:
    port = free_port()
    server = processes.start("serve", "--no-worker", "--port", str(port))
    wait_for_port(port, server, processes.logs)

    body = json.dumps(
        {"url": "https://hooks.example.com/in-flight", "events": ["*"]}
    ).encode()
    head = (
        f"POST {WEBHOOKS} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"X-API-KEY: {api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    # The request is in flight: its head has arrived, half of its body has not.
    connection.sendall(head + body[:10])
    time.sleep(0.5)

    server.send_signal(signal.SIGTERM)
    time.sleep(HOLD_SECONDS)
    assert server.poll() is None, "the server exited with a request in flight"
    with pytest.raises(OSError):
        # It accepts no new connection meanwhile.
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    connection.sendall(body[10:])
    reply = b""
    while chunk := connection.recv(65536):
        reply += chunk
    connection.close()
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 201 Created", reply
    assert server.wait(timeout=30) == 0, processes.logs()

    with runtime.session_factory() as session:
        urls = list(session.scalars(select(WebhookEndpoint.url)))
    assert urls == ["https://hooks.example.com/in-flight"]


def test_serve_worker_finishes_job(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    receiver: Receiver,
    processes: Processes,
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    hold_first_request(receiver)
    emit(runtime, events.ORDERS_PAYMENT_SUCCEEDED, {"orderId": "o-1"}, order_id="o-1")

    port = free_port()
    server = processes.start("serve", "--port", str(port))
    wait_until(receiver.hanging.is_set, 60, "the delivery", processes.logs)

    server.send_signal(signal.SIGTERM)
    time.sleep(HOLD_SECONDS)
    assert server.poll() is None, "the server exited with its worker mid-job"
    receiver.release.set()
    assert server.wait(timeout=30) == 0, processes.logs()

    [job] = jobs(runtime)
    assert job.status == "done"
    [row] = deliveries(runtime)
    assert row.status == "delivered"
    assert len(receiver.requests) == 1
