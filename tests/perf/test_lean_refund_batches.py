"""Group commit in the lean refund path: concurrent requests share a transaction,
and each one still ends as it would alone.

Requests go straight to the ASGI app on one event loop, so that they are in
flight together, as under load.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from tests.refunds.helpers import shipped_order
from tests.reliability.test_lean_refund_attacks import (
    Reply,
    body_of,
    key_headers,
    post,
    refund_count,
    revision_of,
    served_lean,
    warm,
)

from orderdesk.orders.models import OrderEvent
from orderdesk.refunds import lean
from orderdesk.refunds.models import Refund
from orderdesk.runtime import Runtime


def count_commits(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> list[int]:
    """Count the lean path's commits: each one appends to the returned list."""
    commits: list[int] = []
    if runtime.engine.dialect.name == "sqlite":
        commit = lean.RefundWriter.commit

        def counted(self: lean.RefundWriter) -> None:
            commit(self)
            commits.append(1)

        monkeypatch.setattr(lean.RefundWriter, "commit", counted)
        return commits
    execute = lean.PostgresRefundWriter._execute

    async def counted_execute(
        self: lean.PostgresRefundWriter, statements: list[tuple[str, tuple[Any, ...]]]
    ) -> None:
        await execute(self, statements)
        if statements[-1][0] == "COMMIT":
            commits.append(1)

    monkeypatch.setattr(lean.PostgresRefundWriter, "_execute", counted_execute)
    return commits


def fail_first_commit(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> None:
    """Make the lean path's first commit fail after rolling its batch back."""
    failed: list[bool] = []
    if runtime.engine.dialect.name == "sqlite":
        commit = lean.RefundWriter.commit

        def failing(self: lean.RefundWriter) -> None:
            if failed:
                commit(self)
                return
            failed.append(True)
            self.rollback()
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(lean.RefundWriter, "commit", failing)
        return
    execute = lean.PostgresRefundWriter._execute

    async def failing_execute(
        self: lean.PostgresRefundWriter, statements: list[tuple[str, tuple[Any, ...]]]
    ) -> None:
        if statements[-1][0] != "COMMIT" or failed:
            await execute(self, statements)
            return
        failed.append(True)
        # The rows are written, and then COMMIT fails.
        await execute(self, statements[:-1])
        raise psycopg.errors.DiskFull("could not extend file")

    monkeypatch.setattr(lean.PostgresRefundWriter, "_execute", failing_execute)


async def post_all(
    app: FastAPI, key: str, order_ids: list[str]
) -> tuple[list[Reply], int]:
    """Send a refund request of line item 0 for each order, all at once. Returns
    the replies and how many of them the lean path served."""
    await warm(app)
    before = served_lean(app)
    sent = (post(app, order_id, key_headers(key), body_of(0)) for order_id in order_ids)
    replies = list(await asyncio.gather(*sent))
    return replies, served_lean(app) - before


def test_concurrent_requests_share_commits(
    app: FastAPI,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    orders = [shipped_order(runtime, items=1, delivered_days_ago=1) for _ in range(24)]
    order_ids = [order.id for order in orders]
    before = {order_id: revision_of(runtime, order_id) for order_id in order_ids}
    commits = count_commits(monkeypatch, runtime)

    replies, served = asyncio.run(post_all(app, api_key, order_ids))

    assert [reply.status for reply in replies] == [201] * len(orders)
    assert served == len(orders)
    assert 0 < len(commits) < len(orders), commits
    with runtime.session_factory() as session:
        for order_id, reply in zip(order_ids, replies, strict=True):
            body = reply.json()
            refund = session.scalar(select(Refund).where(Refund.order_id == order_id))
            assert refund is not None, order_id
            # Each reply names its own order's refund, not another of the batch.
            assert body["refundId"] == refund.id
            history = session.scalars(
                select(OrderEvent).where(OrderEvent.subject_id == refund.id)
            ).all()
            assert [event.kind for event in history] == ["refund.requested"]
    after = {order_id: revision_of(runtime, order_id) for order_id in order_ids}
    assert after == {order_id: before[order_id] + 1 for order_id in order_ids}


def test_refused_request_leaves_its_batch_alone(
    app: FastAPI, api_key: str, runtime: Runtime
) -> None:
    """One request of the batch is past its return window, so the router refuses
    it. The others are written by the batch."""
    good = [shipped_order(runtime, items=1, delivered_days_ago=1) for _ in range(5)]
    late = shipped_order(runtime, items=1, delivered_days_ago=400)
    order_ids = [good[0].id, good[1].id, late.id, *[order.id for order in good[2:]]]

    replies, served = asyncio.run(post_all(app, api_key, order_ids))

    statuses = {
        order_id: reply.status
        for order_id, reply in zip(order_ids, replies, strict=True)
    }
    assert statuses.pop(late.id) == 409, replies[2].body
    assert replies[2].json()["code"] == "return_window_expired"
    assert set(statuses.values()) == {201}
    assert served == len(good)
    assert refund_count(runtime, late.id) == 0
    assert all(refund_count(runtime, order.id) == 1 for order in good)


def test_failed_commit_sends_batch_to_router(
    app: FastAPI,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch's commit fails. Nothing of it is written, so each of its requests
    is decided by the router: one refund per order, none twice."""
    orders = [shipped_order(runtime, items=1, delivered_days_ago=1) for _ in range(8)]
    order_ids = [order.id for order in orders]
    fail_first_commit(monkeypatch, runtime)

    replies, served = asyncio.run(post_all(app, api_key, order_ids))

    assert [reply.status for reply in replies] == [201] * len(orders)
    assert all(refund_count(runtime, order_id) == 1 for order_id in order_ids)
    assert served < len(orders)


def test_cancelled_request_is_not_written(api_key: str, runtime: Runtime) -> None:
    """A request whose task is cancelled while it waits for its batch is left
    out of the batch."""
    order = shipped_order(runtime, items=1, delivered_days_ago=1)
    writers = lean.RefundWriters(runtime.engine)
    batches: Any = writers.sqlite if writers.is_sqlite else writers.postgres

    async def cancel_one() -> None:
        request = lean._Request(order.id, 0, "It broke.", _principal(runtime))
        waiting = asyncio.ensure_future(batches.submit(_State(runtime), request))
        # The submit queues the request; cancelling before the flusher takes it
        # leaves it out.
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await asyncio.sleep(0.2)
        await writers.close()

    asyncio.run(cancel_one())
    assert refund_count(runtime, order.id) == 0


class _State:
    """The app state that the batch writers read."""

    def __init__(self, runtime: Runtime) -> None:
        from orderdesk.ratelimit import RateLimiter

        self.settings = runtime.settings
        self.rate_limiter = RateLimiter(runtime.settings)


def _principal(runtime: Runtime) -> Any:
    from tests import factories

    from orderdesk.auth.services import KeyPrincipal

    with runtime.session_factory() as session:
        project_id = factories.project_id(session, runtime.settings)
    return KeyPrincipal(
        project_id=project_id, key_id="test", scopes=frozenset({"orders.update"})
    )


def test_two_line_items_of_one_order(
    app: FastAPI, api_key: str, runtime: Runtime
) -> None:
    """Two requests of one batch for two line items of the same order write both
    refunds and raise the order's revision."""
    order = shipped_order(runtime, items=2, delivered_days_ago=1)
    before = revision_of(runtime, order.id)

    async def request_both() -> list[Reply]:
        await warm(app)
        sent = (
            post(app, order.id, key_headers(api_key), body_of(index))
            for index in (0, 1)
        )
        return list(await asyncio.gather(*sent))

    replies = asyncio.run(request_both())

    assert [reply.status for reply in replies] == [201, 201]
    assert {reply.json()["lineItem"] for reply in replies} == {0, 1}
    assert refund_count(runtime, order.id) == 2
    assert revision_of(runtime, order.id) > before
