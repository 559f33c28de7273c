"""The lean refund path's own PostgreSQL connections: prepared statements, the
endpoint lock of its order query, statement timeouts and dropped connections.

Requests go straight to the ASGI app, on one event loop per test, so that the test
can reach the writer's connection on the loop that uses it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs
from tests.refunds.helpers import shipped_order
from tests.reliability.test_lean_refund_attacks import (
    body_of,
    key_headers,
    post,
    refund_count,
    served_lean,
    warm,
)
from tests.webhooks.conftest import create_endpoint

from orderdesk.app import create_app
from orderdesk.refunds import lean
from orderdesk.refunds.models import ACTIVE_STATUSES
from orderdesk.runtime import Runtime
from orderdesk.shipping.statuses import PackageKind
from orderdesk.webhooks.models import WebhookEndpoint


@pytest.fixture
def database_url(postgres_schema_url: str) -> str:
    return postgres_schema_url


@pytest.fixture
def one_writer(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> FastAPI:
    """An app whose lean path has a single PostgreSQL connection."""
    monkeypatch.setattr(lean, "POSTGRES_WRITERS", 1)
    return create_app(runtime=runtime)


def only_writer(app: FastAPI) -> lean.PostgresRefundWriter:
    [writer] = app.state.refund_writers.postgres.idle.all
    return writer  # type: ignore[no-any-return]


def backend_pid(writer: lean.PostgresRefundWriter) -> int:
    connection = writer._connection
    assert connection is not None, "the writer has no open connection"
    return connection.info.backend_pid


async def request_refund(app: FastAPI, order_id: str, key: str) -> tuple[int, bool]:
    """Request a refund of line item 0, and return the status and whether the
    lean path served it."""
    before = served_lean(app)
    reply = await post(app, order_id, key_headers(key), body_of(0))
    return reply.status, served_lean(app) > before


def test_inserts_are_prepared_and_order_query_is_not(
    one_writer: FastAPI, api_key: str, runtime: Runtime
) -> None:
    """psycopg (3.3) prepares a statement once a connection has run it
    prepare_threshold times, 5 by default, so seven requests leave the inserts
    prepared. The orders query is planned on every run, because a prepared plan
    made while `refunds` is small scans that table for every request later."""
    app = one_writer
    orders = [shipped_order(runtime, items=1, delivered_days_ago=1) for _ in range(7)]

    async def attack() -> tuple[list[tuple[int, bool]], list[str]]:
        await warm(app)
        replies = [await request_refund(app, order.id, api_key) for order in orders]
        connection = only_writer(app)._connection
        assert connection is not None
        cursor = await connection.execute(
            "SELECT statement FROM pg_prepared_statements"
        )
        prepared = [statement for (statement,) in await cursor.fetchall()]
        await app.state.refund_writers.close()
        return replies, prepared

    replies, prepared = asyncio.run(attack())
    assert replies == [(201, True)] * len(orders)
    orders_query = lean._POSTGRES_ORDERS.split(" FROM unnest(")[0]
    assert not any(statement.startswith(orders_query[:60]) for statement in prepared), (
        prepared
    )
    assert any(statement.startswith("WITH refund AS") for statement in prepared)
    assert any(
        statement.startswith("INSERT INTO order_revisions") for statement in prepared
    )


def test_dropped_connection_is_replaced(
    one_writer: FastAPI, api_key: str, runtime: Runtime
) -> None:
    """The server ends the writer's connection between two requests. The next
    request goes to the router, and the one after it is served lean again on a
    new connection."""
    app = one_writer
    orders = [shipped_order(runtime, items=1, delivered_days_ago=1) for _ in range(3)]

    async def attack() -> tuple[list[tuple[int, bool]], int, int]:
        await warm(app)
        first = await request_refund(app, orders[0].id, api_key)
        dropped = backend_pid(only_writer(app))
        terminate(runtime, dropped)
        with capture_logs() as events:
            second = await request_refund(app, orders[1].id, api_key)
        assert any(e["event"] == "lean_refund_check_failed" for e in events), events
        third = await request_refund(app, orders[2].id, api_key)
        replacement = backend_pid(only_writer(app))
        await app.state.refund_writers.close()
        return [first, second, third], dropped, replacement

    replies, dropped, replacement = asyncio.run(attack())
    assert replies == [(201, True), (201, False), (201, True)]
    assert replacement != dropped
    assert all(refund_count(runtime, order.id) == 1 for order in orders)


def terminate(runtime: Runtime, pid: int) -> None:
    """End one server process and wait until it is gone."""
    with runtime.engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 10
        alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        while connection.execute(alive, {"pid": pid}).scalar_one():
            assert time.monotonic() < deadline, f"process {pid} is still running"
            time.sleep(0.01)


class TestStatementTimeout:
    LOCK_SECONDS = 1.0

    @pytest.fixture(autouse=True)
    def short_timeout(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(lean, "POSTGRES_STATEMENT_TIMEOUT_MS", 200)

    def test_locked_insert_goes_to_the_router(
        self, api_key: str, runtime: Runtime
    ) -> None:
        """The refund insert waits for a table lock longer than the statement
        timeout. The lean path rolls back, and the router, which has no statement
        timeout, waits for the lock and writes the refund."""
        app = create_app(runtime=runtime)
        order = shipped_order(runtime, items=1, delivered_days_ago=1)
        locker = runtime.engine.connect()
        transaction = locker.begin()

        async def attack() -> tuple[tuple[int, bool], list[dict[str, Any]], float]:
            await warm(app)
            locker.execute(text("LOCK TABLE orders IN EXCLUSIVE MODE"))
            releaser = threading.Timer(self.LOCK_SECONDS, transaction.rollback)
            started = time.monotonic()
            releaser.start()
            try:
                with capture_logs() as events:
                    reply = await request_refund(app, order.id, api_key)
            finally:
                releaser.join()
            elapsed = time.monotonic() - started
            await app.state.refund_writers.close()
            return reply, events, elapsed

        try:
            reply, events, elapsed = asyncio.run(attack())
        finally:
            locker.close()
        assert reply == (201, False)
        failures = [e for e in events if e["event"] == "lean_refund_write_failed"]
        assert len(failures) == 1, events
        assert "QueryCanceled" in failures[0]["error"]
        assert elapsed >= self.LOCK_SECONDS
        assert refund_count(runtime, order.id) == 1


def test_order_query_locks_endpoints(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    """The order query locks the project's endpoints FOR KEY SHARE, as
    `emit_event` does, so an endpoint cannot be deleted until the transaction
    ends."""
    order = shipped_order(runtime, items=1, delivered_days_ago=1)
    create_endpoint(client, api_key, "https://hooks.example.com/a", ["*"])
    with runtime.session_factory() as session:
        endpoint_id = session.scalar(select(WebhookEndpoint.id))
    parameters = (str(PackageKind.OUTBOUND), [order.id], [0], *ACTIVE_STATUSES)
    with runtime.engine.connect() as reader, runtime.engine.connect() as deleter:
        row = reader.exec_driver_sql(lean._POSTGRES_ORDERS, parameters).one()
        assert row[14] == [[endpoint_id, ["*"]]]
        deleter.execute(text("SET lock_timeout = '100ms'"))
        with pytest.raises(OperationalError) as raised:
            deleter.execute(
                text("DELETE FROM webhook_endpoints WHERE id = :id"),
                {"id": endpoint_id},
            )
        assert isinstance(raised.value.orig, psycopg.errors.LockNotAvailable)
        deleter.rollback()
        reader.rollback()
