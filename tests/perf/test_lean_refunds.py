"""The lean refund-request path writes and replies exactly as the router does.

Two apps share one runtime (one database): `create_app` as it is, and the same app
with LeanRefundMiddleware taken out. A refund that succeeds cannot be requested twice,
so each success case requests it on two orders made alike, one through each app, and
compares the replies and every row written, with ids and times put aside. A request
that fails changes nothing, so it goes to both apps for the same order, and status,
headers (apart from the request id) and body bytes must be equal. The lean app's
middleware counts the requests it served itself, which tells the two paths apart.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from structlog.testing import capture_logs
from tests import factories
from tests.conftest import KeyMaker
from tests.refunds.helpers import days_ago, shipped_order
from tests.shipping.helpers import new_paid_order, new_unpaid_order, table_counts
from tests.webhooks.conftest import create_endpoint

from orderdesk.app import create_app
from orderdesk.auth.services import revoke_api_key
from orderdesk.jobs.models import Job
from orderdesk.orders.models import OrderEvent, OrderRevision
from orderdesk.refunds import lean
from orderdesk.refunds.lean import LeanRefundMiddleware
from orderdesk.refunds.models import ACTIVE_STATUSES, Refund
from orderdesk.runtime import Runtime
from orderdesk.webhooks.models import WebhookDelivery

UNSTABLE = "/api/unstable/orders"
MISSING = "00000000-0000-4000-8000-000000000000"
REASON = "  Arrived cracked.\nPhotos attached.  "
# Columns that differ between two equal requests on two orders.
VARYING = {
    "id",
    "order_id",
    "subject_id",
    "created_at",
    "updated_at",
    "delivery_id",
    "message_id",
    "body",
    "payload",
    "dedupe_key",
    "run_at",
    "next_attempt_at",
}


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    served_lean: bool


def lean_middleware(app: FastAPI) -> LeanRefundMiddleware:
    layer: Any = app.middleware_stack
    while layer is not None:
        if isinstance(layer, LeanRefundMiddleware):
            return layer
        layer = getattr(layer, "app", None)
    raise AssertionError("the app has no LeanRefundMiddleware")


def without_lean_path(runtime: Runtime) -> FastAPI:
    app = create_app(runtime=runtime)
    app.user_middleware = [
        middleware
        for middleware in app.user_middleware
        if middleware.cls is not LeanRefundMiddleware
    ]
    return app


@dataclass
class Pair:
    """The app with the lean path and the same app without it."""

    lean: TestClient
    normal: TestClient
    lean_app: FastAPI
    runtime: Runtime

    def post(
        self,
        client: TestClient,
        order_id: str,
        content: bytes | None,
        headers: dict[str, str],
    ) -> Reply:
        before = lean_middleware(self.lean_app).served
        response = client.post(
            f"{UNSTABLE}/{order_id}/refunds", content=content, headers=headers
        )
        headers_kept = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name != "x-request-id"
        ]
        served = lean_middleware(self.lean_app).served > before
        return Reply(response.status_code, headers_kept, response.content, served)

    def compare_failure(
        self, order_id: str, content: bytes | None, headers: dict[str, str]
    ) -> Reply:
        """Send a request that fails to both apps; both replies must be equal and
        nothing may change."""
        counts = table_counts(self.runtime)
        normal = self.post(self.normal, order_id, content, headers)
        lean_reply = self.post(self.lean, order_id, content, headers)
        assert normal.status >= 400, normal.body
        assert normal.status != 500, normal.body
        assert (lean_reply.status, lean_reply.headers, lean_reply.body) == (
            normal.status,
            normal.headers,
            normal.body,
        )
        assert not lean_reply.served_lean
        assert table_counts(self.runtime) == counts
        return lean_reply


@pytest.fixture
def pair(app: FastAPI, runtime: Runtime) -> Iterator[Pair]:
    normal_app = without_lean_path(runtime)
    with (
        TestClient(app, raise_server_exceptions=False) as lean_client,
        TestClient(normal_app, raise_server_exceptions=False) as normal,
    ):
        # The lean path serves nothing until the router has matched the route
        # once, so that its requests carry the same route in logs and metrics.
        warm = lean_client.post(f"{UNSTABLE}/{MISSING}/refunds", json={})
        assert warm.status_code == 401
        yield Pair(lean_client, normal, app, runtime)


def json_body(line_item: Any, reason: Any = REASON) -> bytes:
    import json

    return json.dumps({"lineItem": line_item, "reason": reason}).encode()


def key_headers(key: str, **extra: str) -> dict[str, str]:
    return {"X-API-KEY": key, "Content-Type": "application/json", **extra}


def rows_of(runtime: Runtime, order_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row a refund request writes for the order, without varying columns."""
    with runtime.session_factory() as session:
        refunds = list(
            session.scalars(select(Refund).where(Refund.order_id == order_id))
        )
        events = list(
            session.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id))
        )
        deliveries = list(
            session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.order_id == order_id)
            )
        )
        delivery_ids = {delivery.delivery_id for delivery in deliveries}
        jobs = [
            job
            for job in session.scalars(select(Job).order_by(Job.id))
            if job.payload.get("delivery") in delivery_ids
        ]
        revision = session.get(OrderRevision, order_id)
        return {
            "refunds": [_columns(row) for row in refunds],
            "events": [_columns(row) for row in events],
            "deliveries": [_columns(row) for row in deliveries],
            "delivery_bodies": [_body_shape(row.body) for row in deliveries],
            "jobs": [_columns(row) for row in jobs],
            "job_payloads": [sorted(job.payload) for job in jobs],
            "revision": [{"revision": revision.revision if revision else 0}],
        }


def _columns(row: Any) -> dict[str, Any]:
    table = row.__table__
    return {
        column.name: getattr(row, column.key)
        for column in table.columns
        if column.name not in VARYING
    }


def _body_shape(body: str) -> Any:
    import json

    payload = json.loads(body)
    return {**payload, "timestamp": None, "data": normalised(payload["data"])}


def normalised(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply with the values that differ between two orders put aside."""
    return {
        **reply,
        "orderId": None,
        "refundId": None,
        "createdAt": None,
        "updatedAt": None,
        "history": [{**entry, "at": None} for entry in reply["history"]],
    }


def twin_orders(runtime: Runtime, **kw: Any) -> tuple[factories.MadeOrder, ...]:
    line_items = [
        factories.line_item("5.00"),
        factories.line_item("12.50", quantity=3, sales_tax="2.34", shipping="5.00"),
    ]
    return tuple(
        shipped_order(runtime, line_items=line_items, delivered_days_ago=2, **kw)
        for _ in range(2)
    )


def compare_success(
    pair: Pair, content: bytes, headers_of: Any, orders: tuple[Any, ...]
) -> dict[str, Any]:
    first, second = orders
    normal = pair.post(pair.normal, first.id, content, headers_of(first))
    lean_reply = pair.post(pair.lean, second.id, content, headers_of(second))
    assert normal.status == 201, normal.body
    assert lean_reply.status == 201, lean_reply.body
    assert lean_reply.served_lean
    assert lean_reply.headers[1:] == normal.headers[1:]  # content-length may differ
    import json

    normal_body = json.loads(normal.body)
    lean_body = json.loads(lean_reply.body)
    assert normalised(lean_body) == normalised(normal_body)
    assert lean_body["orderId"] == second.id
    assert lean_body["history"][0]["at"] >= lean_body["createdAt"]
    assert rows_of(pair.runtime, second.id) == rows_of(pair.runtime, first.id)
    return dict(lean_body)


def test_key_request_is_served_lean_and_matches_router(
    pair: Pair, api_key: str, runtime: Runtime
) -> None:
    reply = compare_success(
        pair, json_body(1), lambda _order: key_headers(api_key), twin_orders(runtime)
    )
    assert reply["amount"] == {"amount": "44.84", "currency": "usdc"}
    assert reply["reason"] == REASON.strip()
    assert reply["status"] == "refund-request-initiated"


def test_client_secret_request_is_served_lean(pair: Pair, runtime: Runtime) -> None:
    reply = compare_success(
        pair,
        json_body(0, "Wrong colour \u00e9\u00e8 \u4e2d\u6587\tplease"),
        lambda order: {
            "Authorization": order.client_secret,
            "Content-Type": "application/json; charset=utf-8",
        },
        twin_orders(runtime),
    )
    assert reply["history"][0]["actor"] == "client_secret"


def test_webhook_deliveries_match_router(
    pair: Pair, api_key: str, runtime: Runtime
) -> None:
    for events in (["*"], ["orders.refund.initiated"], ["orders.tracking.updated"]):
        create_endpoint(pair.normal, api_key, "https://hooks.example.com/a", events)
    compare_success(
        pair, json_body(1), lambda _order: key_headers(api_key), twin_orders(runtime)
    )
    with runtime.session_factory() as session:
        deliveries = list(session.scalars(select(WebhookDelivery)))
    # Two subscribed endpoints, for each of the two requests.
    assert len(deliveries) == 4
    lean_pair = [d for d in deliveries if d.order_id == deliveries[-1].order_id]
    assert len({d.message_id for d in lean_pair}) == 1
    assert lean_pair[0].body == lean_pair[1].body


def test_alias_and_spacing_of_json_are_served_lean(
    pair: Pair, api_key: str, runtime: Runtime
) -> None:
    compare_success(
        pair,
        b'{ "reason" : "Broken",\n "line_item" : 1 }',
        lambda _order: key_headers(api_key),
        twin_orders(runtime),
    )


def test_failures_go_to_the_router(
    pair: Pair, api_key: str, make_key: KeyMaker, runtime: Runtime
) -> None:
    order = shipped_order(runtime, items=2, delivered_days_ago=2)
    headers = key_headers(api_key)
    other_project = make_key(project="another-project")
    read_only = make_key("orders.read")
    cases: list[tuple[str, bytes | None, dict[str, str]]] = [
        (MISSING, json_body(0), headers),
        (order.id, json_body(0), key_headers(other_project)),
        (order.id, json_body(0), key_headers(read_only)),
        (order.id, json_body(0), {"Content-Type": "application/json"}),
        (order.id, json_body(0), {**headers, "X-API-KEY": "sk_test_unknown"}),
        (order.id, json_body(0), {"Authorization": "wrong", "Content-Type": "x/y"}),
        (
            order.id,
            json_body(0),
            {"Authorization": "wrong", "Content-Type": "application/json"},
        ),
        (order.id, json_body(2), headers),
        (order.id, json_body(-1), headers),
        (order.id, json_body(True), headers),
        (order.id, json_body(1.0), headers),
        (order.id, json_body("1"), headers),
        (order.id, json_body(0, ""), headers),
        (order.id, json_body(0, "   "), headers),
        (order.id, json_body(0, "a\rb"), headers),
        (order.id, json_body(0, "x" * 1001), headers),
        (order.id, json_body(0, 5), headers),
        (order.id, b'{"lineItem": 0}', headers),
        (order.id, b'{"lineItem": 0, "reason": "x", "extra": 1}', headers),
        (order.id, b'[{"lineItem": 0, "reason": "x"}]', headers),
        (order.id, b'{"lineItem": 0, "reason": "x"', headers),
        (order.id, b"", headers),
        (order.id, b'{"lineItem": 0, "reason": "\\ud800"}', headers),
        (order.id, json_body(0), {"X-API-KEY": api_key}),
        (order.id, json_body(0), {"X-API-KEY": api_key, "Content-Type": "text/json"}),
        (order.id, json_body(0), {**headers, "Content-Type": "application/jsonx"}),
        (order.id, json_body(0, "x" * 20_000), headers),
    ]
    for order_id, content, case_headers in cases:
        reply = pair.compare_failure(order_id, content, case_headers)
        assert 400 <= reply.status < 500, (content, reply.body)


def test_order_states_that_refuse_go_to_the_router(
    pair: Pair, api_key: str, runtime: Runtime
) -> None:
    headers = key_headers(api_key)
    unpaid = new_unpaid_order(runtime)
    unshipped = new_paid_order(runtime)
    expired = shipped_order(runtime, items=1, delivered_days_ago=400)
    requested = shipped_order(runtime, items=1, delivered_days_ago=1)
    first = pair.post(pair.lean, requested.id, json_body(0), headers)
    assert first.status == 201
    assert first.served_lean
    for order in (unpaid, unshipped, expired, requested):
        pair.compare_failure(order.id, json_body(0), headers)
    # Only line item 0 is in a package, and a return parcel contains line item 1.
    partly = new_paid_order(runtime, items=2)
    with runtime.session_factory() as session, session.begin():
        factories.make_package(session, partly.id, [0])
        factories.make_package(session, partly.id, [1], kind="return")
    pair.compare_failure(partly.id, json_body(1), headers)
    assert pair.post(pair.lean, partly.id, json_body(0), headers).served_lean


def test_revoked_key_is_refused_by_the_router(
    pair: Pair, make_key: KeyMaker, runtime: Runtime
) -> None:
    key = make_key()
    order = shipped_order(runtime, items=2, delivered_days_ago=1)
    assert pair.post(pair.lean, order.id, json_body(0), key_headers(key)).served_lean
    with runtime.session_factory() as session, session.begin():
        revoke_api_key(session, key)
    from orderdesk.auth.services import key_cache

    key_cache.clear()
    pair.compare_failure(order.id, json_body(1), key_headers(key))


def test_idempotency_key_goes_to_the_router(
    pair: Pair, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, items=1, delivered_days_ago=1)
    headers = key_headers(api_key, **{"Idempotency-Key": "lean-test-1"})
    first = pair.post(pair.lean, order.id, json_body(0), headers)
    again = pair.post(pair.lean, order.id, json_body(0), headers)
    assert (first.status, again.status) == (201, 201)
    assert not first.served_lean
    assert not again.served_lean
    assert again.body == first.body
    assert ("idempotent-replayed", "true") in again.headers


def test_every_active_status_blocks_a_second_request() -> None:
    # The statement names one placeholder per active status.
    assert lean._STATEMENTS["order"].count("?") == 6 + len(ACTIVE_STATUSES)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 4, 17, 5, 9, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 0, tzinfo=UTC),
        datetime(999, 3, 4, 5, 6, 7, 8, tzinfo=UTC),
        datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5))),
        datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    ],
)
def test_sqlite_time_text_matches_sqlalchemy(value: datetime) -> None:
    column_type = Refund.__table__.c.created_at.type
    dialect = sqlite_dialect.dialect()
    processor = column_type.dialect_impl(dialect).bind_processor(dialect)
    assert lean.sqlite_utc_text(value) == processor(value)


def test_sqlite_time_text_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        lean.sqlite_utc_text(datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose


class TestAutoAccept:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"refund_auto_accept_below": Decimal("1000")}

    def test_auto_accepted_requests_go_to_the_router(
        self, pair: Pair, api_key: str, runtime: Runtime
    ) -> None:
        order = shipped_order(runtime, items=1, delivered_days_ago=1)
        reply = pair.post(pair.lean, order.id, json_body(0), key_headers(api_key))
        assert reply.status == 201
        assert not reply.served_lean
        assert b"refund-request-accepted" in reply.body


class TestRateLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"rate_limit_writes_per_minute": 3}

    def test_each_request_counts_once(
        self,
        pair: Pair,
        api_key: str,
        runtime: Runtime,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        orders = [
            shipped_order(runtime, items=1, delivered_days_ago=1) for _ in range(4)
        ]
        headers = key_headers(api_key)
        # The warm-up request of the fixture had no key, so nothing is counted yet.
        served = pair.post(pair.lean, orders[0].id, json_body(0), headers)
        assert served.status == 201
        assert served.served_lean
        # A write that fails after the count goes to the router, which does not
        # count the request a second time.
        with monkeypatch.context() as patched:
            fail_writes(patched, runtime)
            routed = pair.post(pair.lean, orders[1].id, json_body(0), headers)
        assert routed.status == 201
        assert not routed.served_lean
        third = pair.post(pair.lean, orders[2].id, json_body(0), headers)
        assert third.status == 201
        assert third.served_lean
        limited = pair.post(pair.lean, orders[3].id, json_body(0), headers)
        assert limited.status == 429
        assert ("retry-after", limited.headers[-1][1]) in limited.headers or any(
            name == "retry-after" for name, _ in limited.headers
        )
        assert len([r for r in orders if _has_refund(runtime, r.id)]) == 3


def fail_writes(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> None:
    """Make the lean path's inserts fail, with its transaction still open."""
    if runtime.engine.dialect.name == "sqlite":

        def failing_write(self: lean.RefundWriter, *args: Any, **kw: Any) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(lean.RefundWriter, "write_rows", failing_write)
        return

    async def failing_execute(*_args: Any) -> None:
        raise psycopg.errors.DiskFull("could not extend file")

    monkeypatch.setattr(lean.PostgresRefundWriter, "_execute", failing_execute)


def _has_refund(runtime: Runtime, order_id: str) -> bool:
    with runtime.session_factory() as session:
        return (
            session.scalar(select(Refund.id).where(Refund.order_id == order_id))
            is not None
        )


class TestSqliteWriteLock:
    @pytest.fixture
    def database_url(self, sqlite_url: str) -> str:
        return sqlite_url

    def test_waits_for_another_process_to_commit(
        self, pair: Pair, api_key: str, runtime: Runtime
    ) -> None:
        order = shipped_order(runtime, items=1, delivered_days_ago=1)
        path = runtime.settings.database_url.removeprefix("sqlite:///")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        releaser = threading.Timer(0.3, other.rollback)
        started = time.monotonic()
        releaser.start()
        try:
            reply = pair.post(pair.lean, order.id, json_body(0), key_headers(api_key))
        finally:
            releaser.join()
            other.close()
        assert reply.status == 201
        assert reply.served_lean
        assert time.monotonic() - started >= 0.3


def test_concurrent_uncommitted_request_wins(
    pair: Pair, api_key: str, runtime: Runtime
) -> None:
    """Another process's request for the same line item, not yet committed: the
    lean path waits (SQLite) or gives up on the row lock (PostgreSQL), and the
    request ends as the router ends it, with 409 and the other request."""
    order = shipped_order(runtime, items=1, delivered_days_ago=1)
    connection = runtime.engine.connect()
    transaction = connection.begin()
    winner = "11111111-1111-4111-8111-111111111111"
    connection.execute(
        Refund.__table__.insert().values(
            id=winner,
            order_id=order.id,
            line_item=0,
            reason="first",
            status=ACTIVE_STATUSES[0],
            amount=Decimal("1"),
            currency="usdc",
            origin="buyer",
            created_at=days_ago(0),
            updated_at=days_ago(0),
        )
    )
    committer = threading.Timer(0.3, transaction.commit)
    committer.start()
    try:
        reply = pair.post(pair.lean, order.id, json_body(0), key_headers(api_key))
    finally:
        committer.join()
        connection.close()
    assert reply.status == 409, reply.body
    assert not reply.served_lean
    assert winner.encode() in reply.body


def test_lean_request_logs_as_the_route_does(
    pair: Pair, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, items=1, delivered_days_ago=1)
    with capture_logs() as events:
        reply = pair.post(pair.lean, order.id, json_body(0), key_headers(api_key))
    assert reply.served_lean
    requested = [event for event in events if event["event"] == "refund_requested"]
    assert len(requested) == 1
    assert requested[0]["order_id"] == order.id
    assert requested[0]["line_item"] == 0
    assert requested[0]["refund_id"] in reply.body.decode()
