"""The lean read path answers exactly as the router does, byte for byte.

Two apps share one runtime (one database): `create_app` as it is, and the same app
with LeanReadMiddleware taken out. Every request goes to both, and status, headers
(apart from the request id) and body bytes must be equal. A request is counted as
answered by the lean path when it ran no SQLAlchemy statement: the lean path reads
on a DBAPI connection of its own, and the router always runs ORM queries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from tests import factories
from tests.conftest import KeyMaker
from tests.reliability.test_limits import (  # noqa: F401 - fixture
    RedisServer,
    redis_server,
)
from tests.shipping.helpers import hours_ago, new_paid_order, post_event, shipped

from orderdesk.app import create_app
from orderdesk.auth.services import key_cache, revoke_api_key
from orderdesk.db.base import utcnow
from orderdesk.fastpath import LeanReadMiddleware
from orderdesk.orders.models import Order
from orderdesk.runtime import Runtime

UNSTABLE = "/api/unstable/orders"
ORDERS = "/api/2022-06-09/orders"
MISSING = "00000000-0000-4000-8000-000000000000"


def paths(order_id: str) -> dict[str, str]:
    return {
        "tracking": f"{UNSTABLE}/{order_id}/tracking",
        "refunds": f"{UNSTABLE}/{order_id}/refunds",
        "order": f"{ORDERS}/{order_id}",
    }


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    statements: int


@dataclass
class Pair:
    """The app with the lean path and the same app without it."""

    lean: TestClient
    normal: TestClient
    runtime: Runtime

    def get(self, client: TestClient, path: str, headers: dict[str, str]) -> Reply:
        with count_statements(self.runtime) as statements:
            response = client.get(path, headers=headers)
        kept = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name != "x-request-id"
        ]
        return Reply(response.status_code, kept, response.content, len(statements))

    def compare(self, path: str, headers: dict[str, str]) -> tuple[Reply, Reply]:
        """Send the request to both apps and check that the replies are equal."""
        normal = self.get(self.normal, path, headers)
        lean = self.get(self.lean, path, headers)
        assert lean.status == normal.status, (path, lean.body, normal.body)
        assert lean.headers == normal.headers, path
        assert lean.body == normal.body, path
        return lean, normal


@contextmanager
def count_statements(runtime: Runtime) -> Iterator[list[str]]:
    statements: list[str] = []

    def before_execute(*args: Any) -> None:
        statements.append(args[2])

    event.listen(runtime.engine, "before_cursor_execute", before_execute)
    try:
        yield statements
    finally:
        event.remove(runtime.engine, "before_cursor_execute", before_execute)


def without_lean_path(runtime: Runtime) -> FastAPI:
    app = create_app(runtime=runtime)
    app.user_middleware = [
        middleware
        for middleware in app.user_middleware
        if middleware.cls is not LeanReadMiddleware
    ]
    return app


@pytest.fixture
def pair(app: FastAPI, runtime: Runtime) -> Iterator[Pair]:
    normal_app = without_lean_path(runtime)
    with (
        TestClient(app, raise_server_exceptions=False) as lean,
        TestClient(normal_app, raise_server_exceptions=False) as normal,
    ):
        yield Pair(lean, normal, runtime)


def shipped_order_with_refund(
    client: TestClient, key: str, runtime: Runtime
) -> factories.MadeOrder:
    """A paid order with a delivered package, a moving one and a refund request."""
    order = new_paid_order(runtime, items=2)
    first = shipped(client, key, order.id, [0], number="1ZLEAN0001")
    second = shipped(client, key, order.id, [1], carrier="USPS", number="9400LEAN1")
    post_event(client, key, order.id, first["packageId"], "delivered", hours_ago(1))
    post_event(client, key, order.id, second["packageId"], "shipped", hours_ago(3))
    response = client.post(
        f"{UNSTABLE}/{order.id}/refunds",
        json={"lineItem": 0, "reason": "Arrived broken ✓"},
        headers={"X-API-KEY": key},
    )
    assert response.status_code == 201, response.text
    return order


def test_success_bytes_equal(pair: Pair, api_key: str, runtime: Runtime) -> None:
    order = shipped_order_with_refund(pair.lean, api_key, runtime)
    key = {"X-API-KEY": api_key}
    secret = {"Authorization": order.client_secret}
    for path in paths(order.id).values():
        # The first read builds the reply through the router and caches it.
        first, _ = pair.compare(path, key)
        assert first.status == 200
        assert first.statements > 0
        for headers in (key, secret):
            lean, normal = pair.compare(path, headers)
            assert lean.status == 200
            assert lean.statements == 0, path
            assert normal.statements > 0


def test_error_bytes_equal(
    pair: Pair, api_key: str, make_key: KeyMaker, runtime: Runtime
) -> None:
    order = shipped_order_with_refund(pair.lean, api_key, runtime)
    other_project = make_key("orders.read", project="other-project")
    no_read_scope = make_key("orders.update")
    revoked = make_key("orders.read")
    wrong_environment = "sk_staging_" + "a" * 32
    unknown = "sk_development_" + "b" * 32
    # Requests with each key put it in the key cache of both apps.
    for value in (api_key, other_project, no_read_scope, revoked):
        for path in paths(order.id).values():
            pair.compare(path, {"X-API-KEY": value})
    with runtime.session_factory() as session, session.begin():
        revoke_api_key(session, revoked)
    for path in paths(order.id).values():
        # Caches the key as revoked in both apps.
        pair.compare(path, {"X-API-KEY": revoked})

    cases: list[tuple[str, dict[str, str], int, str, bool]] = [
        ("no credentials", {}, 401, "unauthorized", True),
        ("empty key", {"X-API-KEY": ""}, 401, "unauthorized", True),
        ("blank key", {"X-API-KEY": "   "}, 401, "unauthorized", True),
        ("malformed key", {"X-API-KEY": "sk_nope"}, 401, "unauthorized", True),
        (
            "other environment",
            {"X-API-KEY": wrong_environment},
            401,
            "environment_mismatch",
            True,
        ),
        ("unknown key", {"X-API-KEY": unknown}, 401, "unauthorized", False),
        ("revoked key", {"X-API-KEY": revoked}, 401, "key_revoked", True),
        ("no read scope", {"X-API-KEY": no_read_scope}, 403, "missing_scope", True),
        (
            "other project",
            {"X-API-KEY": other_project},
            404,
            "order_not_found",
            True,
        ),
        (
            "wrong secret",
            {"Authorization": "not-the-secret"},
            401,
            "invalid_client_secret",
            True,
        ),
    ]
    for name, headers, status, code, lean_answers in cases:
        for path in paths(order.id).values():
            lean, _ = pair.compare(path, headers)
            assert lean.status == status, name
            assert code in lean.body.decode(), name
            assert (lean.statements == 0) is lean_answers, (name, path)

    for path in paths(MISSING).values():
        lean, _ = pair.compare(path, {"X-API-KEY": api_key})
        assert lean.status == 404
        assert lean.statements == 0
        lean, _ = pair.compare(path, {"Authorization": order.client_secret})
        assert lean.status == 401
        assert lean.statements == 0


def test_router_cases_bytes_equal(pair: Pair, api_key: str, runtime: Runtime) -> None:
    """Requests that the lean path hands to the router unchanged."""
    order = shipped_order_with_refund(pair.lean, api_key, runtime)
    key = {"X-API-KEY": api_key}
    for path in paths(order.id).values():
        pair.compare(path, key)
    cases = [
        f"{UNSTABLE}/not-a-uuid/tracking",
        f"{ORDERS}/{order.id.upper()}",
        f"{UNSTABLE}/{order.id}/refunds?lineItem=0",
        f"{UNSTABLE}/{order.id}/refunds?lineItem=7",
        f"{UNSTABLE}/{order.id}/refunds?lineItem=01",
        f"{UNSTABLE}/{order.id}/tracking/",
        f"{ORDERS}/{order.id}/",
    ]
    for path in cases:
        lean, _ = pair.compare(path, key)
        assert lean.status in (200, 400, 404), path
    head_lean = pair.lean.head(paths(order.id)["tracking"], headers=key)
    head_normal = pair.normal.head(paths(order.id)["tracking"], headers=key)
    assert head_lean.status_code == head_normal.status_code
    assert head_lean.content == head_normal.content


def test_unpaid_order_built_each_time(
    pair: Pair, api_key: str, runtime: Runtime
) -> None:
    # The quote expires in two seconds: a cached body would stay "valid".
    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        made = factories.make_order(session, owner, [factories.line_item()])
        order = session.get_one(Order, made.id)
        order.expires_at = utcnow() + timedelta(seconds=2)
        expires_at = order.expires_at
    path = paths(made.id)["order"]
    key = {"X-API-KEY": api_key}
    before, _ = pair.compare(path, key)
    assert b'"status":"valid"' in before.body
    again = pair.get(pair.lean, path, key)
    assert again.statements > 0
    while utcnow() < expires_at + timedelta(milliseconds=100):
        again = pair.get(pair.lean, path, key)
    assert b'"status":"expired"' in again.body
    assert b'"phase":"quote"' in again.body
    after, _ = pair.compare(path, key)
    assert after.body == again.body


def test_rate_limit_bytes_equal(
    settings_overrides: dict[str, object], api_key: str, runtime: Runtime
) -> None:
    runtime.settings.rate_limit_reads_per_minute = 4
    lean_app = create_app(runtime=runtime)
    normal_app = without_lean_path(runtime)
    with (
        TestClient(lean_app, raise_server_exceptions=False) as lean,
        TestClient(normal_app, raise_server_exceptions=False) as normal,
    ):
        pair = Pair(lean, normal, runtime)
        order = new_paid_order(runtime)
        path = paths(order.id)["tracking"]
        for _ in range(4):
            reply, _ = pair.compare(path, {"X-API-KEY": api_key})
            assert reply.status == 200
        for headers in ({"X-API-KEY": api_key}, {"Authorization": order.client_secret}):
            reply, _ = pair.compare(path, headers)
            assert reply.status == 429
            assert dict(reply.headers)["retry-after"] in ("59", "60")
            assert reply.statements == 0


def test_request_id_and_metrics(pair: Pair, api_key: str, runtime: Runtime) -> None:
    order = new_paid_order(runtime)
    path = paths(order.id)["tracking"]
    key = {"X-API-KEY": api_key}
    # The first read puts the key in the key cache, the second the reply.
    pair.lean.get(path, headers=key)
    pair.lean.get(path, headers=key)
    with count_statements(runtime) as statements:
        response = pair.lean.get(path, headers={**key, "X-Request-ID": "poll-42"})
    assert statements == []
    assert response.headers["x-request-id"] == "poll-42"
    metrics = pair.lean.get("/metrics").text
    label = (
        'orderdesk_http_requests_total{method="GET",'
        'route="/api/unstable/orders/{orderId}/tracking",status="200"} 3.0'
    )
    assert label in metrics


def test_expired_key_looked_up_once(
    app: FastAPI, api_key: str, runtime: Runtime
) -> None:
    """Requests in flight when a key's cache entry expires share one lookup."""
    order = new_paid_order(runtime)
    path = paths(order.id)["tracking"]
    headers = {"X-API-KEY": api_key}

    async def read_many(count: int) -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            replies = await asyncio.gather(
                *(client.get(path, headers=headers) for _ in range(count))
            )
        return [reply.status_code for reply in replies]

    # Learn the route, cache the key and then the reply.
    assert asyncio.run(read_many(1)) == [200]
    assert asyncio.run(read_many(1)) == [200]
    key_cache.clear()
    with count_statements(runtime) as statements:
        statuses = asyncio.run(read_many(20))
    assert statuses == [200] * 20
    key_queries = [sql for sql in statements if "FROM api_keys" in sql]
    assert len(key_queries) == 1
    # The replies came from the cache: the router would have read the packages.
    assert not [sql for sql in statements if "FROM packages" in sql]


def test_redis_rate_limit_on_lean_path(
    redis_server: RedisServer,  # noqa: F811 - the fixture imported above
    api_key: str,
    runtime: Runtime,
) -> None:
    """With the counter in Redis, cached reads still count and get 429 past it."""
    runtime.settings.redis_url = redis_server.url
    runtime.settings.rate_limit_reads_per_minute = 3
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as lean:
        order = new_paid_order(runtime)
        path = paths(order.id)["tracking"]
        headers = {"X-API-KEY": api_key}
        statuses = []
        for _ in range(3):
            statuses.append(lean.get(path, headers=headers).status_code)
        with count_statements(runtime) as statements:
            limited = lean.get(path, headers=headers)
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert statements == []
