"""Fixtures of the webhook tests: a receiver on loopback that verifies with the
`svix` library, and a worker driven from the test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from svix.webhooks import Webhook, WebhookVerificationError
from tests import factories

from orderdesk.jobs.worker import Worker
from orderdesk.runtime import Runtime
from orderdesk.webhooks import services
from orderdesk.webhooks.models import WebhookDelivery

WEBHOOKS = "/api/unstable/webhooks"


# The receiver


@dataclass
class Received:
    """One request the receiver got, and which secrets verified it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified_by: list[str] = field(default_factory=list)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def message_id(self) -> str:
        return self.headers["svix-id"]


# What the receiver does with a request: a status, a (status, body, headers)
# triple, or HANG to keep the request open until released.
Reply = int | tuple[int, bytes, dict[str, str]] | str
HANG = "hang"


class Receiver:
    """An HTTP server on loopback that records each webhook and verifies it with
    `svix.webhooks.Webhook(secret).verify(body, headers)` for every known secret."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.requests: list[Received] = []
        self.behaviour: Callable[[Received], Reply] = lambda _request: 200
        self.release = threading.Event()
        self.hanging = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _ReceiverHandler)
        self.server.daemon_threads = True
        self.server.receiver = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def record(self, path: str, headers: dict[str, str], body: bytes) -> Received:
        received = Received(path, headers, body, time.monotonic())
        for secret in list(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            received.verified_by.append(secret)
        with self._lock:
            self.requests.append(received)
        return received

    def by_type(self, event_type: str) -> list[Received]:
        return [r for r in list(self.requests) if r.payload["type"] == event_type]

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"receiver got {len(self.requests)} requests, expected {count}"
                )
            time.sleep(0.01)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if len(body) < length:
            # The sender died mid-request (the crash tests kill workers), so there
            # is no whole request to record or to reply to.
            self.close_connection = True
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        received = receiver.record(self.path, headers, body)
        reply = receiver.behaviour(received)
        if reply == HANG:
            receiver.hanging.set()
            receiver.release.wait(60)
            reply = 200
        if isinstance(reply, int):
            reply = (reply, b'{"ok": true}', {})
        assert isinstance(reply, tuple)
        status, content, extra = reply
        try:
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.close()


# Driving the worker and reading the results


def run_jobs_until(
    runtime: Runtime, done: Callable[[], bool], timeout: float = 20
) -> None:
    """Run the worker in this thread until `done()` is true."""
    worker = Worker(runtime, name="test-worker")
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s of running jobs")
        if worker.run_once() == 0:
            time.sleep(0.005)


def deliveries(runtime: Runtime) -> list[WebhookDelivery]:
    with runtime.session_factory() as session:
        query = select(WebhookDelivery).order_by(WebhookDelivery.id)
        return list(session.scalars(query))


def all_settled(runtime: Runtime) -> Callable[[], bool]:
    def settled() -> bool:
        rows = deliveries(runtime)
        return bool(rows) and all(row.status != "pending" for row in rows)

    return settled


def project_id(runtime: Runtime, name: str = "test-project") -> str:
    with runtime.session_factory() as session, session.begin():
        return factories.project_id(session, runtime.settings, name)


def emit(
    runtime: Runtime,
    event_type: str,
    data: dict[str, Any],
    *,
    order_id: str | None = None,
    project: str = "test-project",
) -> list[str]:
    """Emit an event in its own transaction; return the new deliveries' ids."""
    owner = project_id(runtime, project)
    with runtime.session_factory() as session, session.begin():
        rows = services.emit_event(session, owner, event_type, data, order_id=order_id)
        return [row.delivery_id for row in rows]


def create_endpoint(
    client: TestClient,
    key: str,
    url: str,
    events: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = {"url": url, "events": events or ["*"], **extra}
    response = client.post(WEBHOOKS, json=body, headers={"X-API-KEY": key})
    assert response.status_code == 201, response.text
    return dict(response.json())
