"""Attacks on the lean refund-request path (refunds.lean) that compare it with the
router: slow and oversized bodies, a database that stays locked, odd bodies and
headers, and many requests for one line item.

The app with the lean path and the same app without it (see tests/perf) share one
runtime. Requests go straight to the ASGI apps, so a test controls when each part
of the body arrives and can tell a reply that never came from a late one. A wait
for a reply is a bound on how long the test waits, never an assertion on time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from structlog.testing import capture_logs
from tests import factories
from tests.conftest import KeyMaker
from tests.perf.test_lean_refunds import lean_middleware, without_lean_path
from tests.refunds.helpers import shipped_order
from tests.reliability.test_limits import wait_for_abandoned_requests

from orderdesk.app import create_app
from orderdesk.jobs.models import Job
from orderdesk.orders.models import OrderEvent, OrderRevision
from orderdesk.refunds.models import Refund
from orderdesk.runtime import Runtime
from orderdesk.webhooks.models import WebhookDelivery, WebhookEndpoint

UNSTABLE = "/api/unstable/orders"
MISSING = "00000000-0000-4000-8000-000000000000"
# How long a test waits for a reply that the router sends at once, or after the
# request timeout of TIMEOUT_SECONDS.
REPLY_WAIT_SECONDS = 5.0
TIMEOUT_SECONDS = 0.5
WARM_UP_WAIT_SECONDS = 30.0
# How long post() waits for a reply it requires. It only bounds a hang: a loaded
# machine once stalled a whole wave of requests for about 7 seconds.
POST_WAIT_SECONDS = 30.0


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Exchange:
    """One request sent to an ASGI app, its body given in parts. With `complete`
    false the client then waits without sending the rest, until `hang_up`."""

    def __init__(
        self,
        app: FastAPI,
        path: str,
        headers: dict[str, str] | list[tuple[str, str]],
        parts: list[bytes],
        *,
        complete: bool = True,
    ) -> None:
        pairs = list(headers.items() if isinstance(headers, dict) else headers)
        framed = {name.lower() for name, _ in pairs}
        if complete and not framed & {"content-length", "transfer-encoding"}:
            # As a client sends it: without either header, a request has no body.
            pairs.append(("content-length", str(sum(map(len, parts)))))
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in pairs
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.parts = list(parts)
        self.complete = complete
        self.hung_up = asyncio.Event()
        self.replied = asyncio.Event()
        self.start: MutableMapping[str, Any] | None = None
        self.body = b""
        self.task = asyncio.ensure_future(app(self.scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if self.parts:
            part = self.parts.pop(0)
            more = bool(self.parts) or not self.complete
            return {"type": "http.request", "body": part, "more_body": more}
        await self.hung_up.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                self.replied.set()

    async def reply(self, wait: float = REPLY_WAIT_SECONDS) -> Reply | None:
        """The reply once it is complete, or None when none came within `wait`."""
        try:
            await asyncio.wait_for(self.replied.wait(), wait)
        except TimeoutError:
            return None
        assert self.start is not None
        return Reply(self.start["status"], list(self.start["headers"]), self.body)

    async def finish(self) -> None:
        """Hang up and let the app end the request. An error the app raises because
        the client left is for the server to log, so the test ignores it."""
        self.hung_up.set()
        await asyncio.wait([self.task], timeout=60)
        assert self.task.done(), "the request still runs after the client left"
        if not self.task.cancelled():
            self.task.exception()


def refund_path(order_id: str) -> str:
    return f"{UNSTABLE}/{order_id}/refunds"


def key_headers(key: str) -> dict[str, str]:
    return {"X-API-KEY": key, "Content-Type": "application/json"}


def secret_headers(order: Any) -> dict[str, str]:
    return {"Authorization": order.client_secret, "Content-Type": "application/json"}


def body_of(line_item: Any, reason: Any = "It broke.") -> bytes:
    return json.dumps({"lineItem": line_item, "reason": reason}).encode()


async def warm(app: FastAPI) -> None:
    """Match the route once, which the lean path waits for before it serves."""
    exchange = Exchange(app, refund_path(MISSING), {}, [b"{}"])
    # The first request of an app also builds its middleware stack and opens the
    # database, so it gets a longer bound than REPLY_WAIT_SECONDS.
    reply = await exchange.reply(WARM_UP_WAIT_SECONDS)
    assert reply is not None and reply.status == 401
    await exchange.finish()


def half_body(app: FastAPI, order_id: str, key: str) -> Exchange:
    """Start a refund request that sends the first 10 bytes of its body and then
    waits without sending the rest."""
    return Exchange(
        app, refund_path(order_id), key_headers(key), [body_of(0)[:10]],
        complete=False,
    )  # fmt: skip


async def post(app: FastAPI, order_id: str, headers: Any, body: bytes) -> Reply:
    exchange = Exchange(app, refund_path(order_id), headers, [body])
    reply = await exchange.reply(POST_WAIT_SECONDS)
    await exchange.finish()
    assert reply is not None, "no reply"
    return reply


def served_lean(app: FastAPI) -> int:
    return lean_middleware(app).served


def refund_count(runtime: Runtime, order_id: str) -> int:
    with runtime.session_factory() as session:
        query = select(func.count()).select_from(Refund)
        return int(session.scalar(query.where(Refund.order_id == order_id)) or 0)


@pytest.fixture
def apps(runtime: Runtime) -> tuple[FastAPI, FastAPI]:
    """The app with the lean path, and the same app without it."""
    return create_app(runtime=runtime), without_lean_path(runtime)


# The lean path sits inside the request timeout and the body limit, and claims the
# request's deadline before it commits, so both bound it as they bound the router.


class TestRequestTimeout:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"request_timeout_seconds": TIMEOUT_SECONDS}

    def test_stalled_body_times_out(
        self, apps: tuple[FastAPI, FastAPI], api_key: str, runtime: Runtime
    ) -> None:
        """Half a body, then nothing. The router sends 503 request_timeout once
        the timeout passes, so the lean path must not wait for the rest."""
        order = shipped_order(runtime, items=1, delivered_days_ago=1)

        async def attack() -> list[Reply | None]:
            replies = []
            for app in apps:
                await warm(app)
                exchange = half_body(app, order.id, api_key)
                replies.append(await exchange.reply())
                await exchange.finish()
            return replies

        lean_reply, router_reply = asyncio.run(attack())
        assert router_reply is not None
        assert router_reply.status == 503
        assert router_reply.json()["code"] == "request_timeout"
        assert lean_reply is not None, "the lean path still waits for the body"
        assert lean_reply.status == 503
        assert lean_reply.body == router_reply.body

    def test_locked_database_times_out(
        self, app: FastAPI, api_key: str, runtime: Runtime
    ) -> None:
        """The database stays locked past the request timeout. The router sends
        503 request_timeout and commits nothing, so the lean path must too."""
        order = shipped_order(runtime, items=1, delivered_days_ago=1)

        async def attack() -> tuple[Reply | None, Reply | None]:
            await warm(app)
            with write_lock(runtime.settings.database_url):
                exchange = Exchange(
                    app, refund_path(order.id), key_headers(api_key), [body_of(0)]
                )
                early = await exchange.reply()
            late = await exchange.reply(60)
            await exchange.finish()
            return early, late

        early, late = asyncio.run(attack())
        wait_for_abandoned_requests()
        assert late is not None
        assert early is not None, f"no reply while locked, then {late.status}"
        assert early.status == 503
        assert early.json()["code"] == "request_timeout"
        assert refund_count(runtime, order.id) == 0


@contextmanager
def write_lock(database_url: str) -> Iterator[None]:
    """Hold a lock from another connection that stops every refund insert."""
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            # Conflicts with the share lock of the refund's foreign key check.
            connection.execute(text("LOCK TABLE orders IN EXCLUSIVE MODE"))
            try:
                yield
            finally:
                connection.rollback()
    finally:
        engine.dispose()


def test_declared_oversized_body_gets_413(
    apps: tuple[FastAPI, FastAPI], api_key: str, runtime: Runtime
) -> None:
    """Content-Length over the 64 KiB limit. The router replies 413 from the
    header alone, before any of the body arrives."""
    order = shipped_order(runtime, items=1, delivered_days_ago=1)
    headers = {**key_headers(api_key), "Content-Length": str(65 * 1024)}

    async def attack() -> list[Reply | None]:
        replies = []
        for app in apps:
            await warm(app)
            exchange = Exchange(app, refund_path(order.id), headers, [], complete=False)
            replies.append(await exchange.reply())
            await exchange.finish()
        return replies

    lean_reply, router_reply = asyncio.run(attack())
    assert router_reply is not None
    assert router_reply.status == 413
    assert lean_reply is not None, "the lean path waits for a body it will reject"
    assert lean_reply.status == 413
    assert lean_reply.body == router_reply.body


# Odd bodies and headers: each goes to both apps, on two orders made alike, and
# the replies must be equal apart from the ids and times of the two orders.

# In a header value, this is replaced by the order's client secret.
SECRET = "{secret}"
Case = tuple[str, list[tuple[str, str]], list[bytes]]


def comparable(reply: Reply, order_id: str) -> tuple[int, list[Any], Any]:
    headers = [
        (name, value)
        for name, value in reply.headers
        if name not in (b"x-request-id", b"content-length")
    ]
    if reply.status != 201:
        return reply.status, headers, reply.body.replace(order_id.encode(), b"<order>")
    body = reply.json()
    assert body["orderId"] == order_id
    for name in ("orderId", "refundId", "createdAt", "updatedAt"):
        body[name] = None
    body["history"] = [{**entry, "at": None} for entry in body["history"]]
    return reply.status, headers, body


def compare_on_twins(
    apps: tuple[FastAPI, FastAPI], runtime: Runtime, cases: list[Case]
) -> list[int]:
    """Send each case to both apps on twin orders; return the lean app's statuses."""
    twins = [
        (
            shipped_order(runtime, items=2, delivered_days_ago=1),
            shipped_order(runtime, items=2, delivered_days_ago=1),
        )
        for _ in cases
    ]

    async def attack() -> list[tuple[Reply, Reply]]:
        for app in apps:
            await warm(app)
        pairs = []
        for (_, headers, parts), orders in zip(cases, twins, strict=True):
            replies = []
            for app, order in zip(apps, orders, strict=True):
                own = [
                    (name, value.replace(SECRET, order.client_secret))
                    for name, value in headers
                ]
                exchange = Exchange(app, refund_path(order.id), own, parts)
                reply = await exchange.reply()
                await exchange.finish()
                assert reply is not None, "no reply"
                replies.append(reply)
            pairs.append((replies[0], replies[1]))
        return pairs

    statuses = []
    for (label, _, _), (first, second), (lean_reply, router_reply) in zip(
        cases, twins, asyncio.run(attack()), strict=True
    ):
        assert router_reply.status != 500, (label, router_reply.body)
        assert comparable(lean_reply, first.id) == comparable(
            router_reply, second.id
        ), label
        assert refund_count(runtime, first.id) == refund_count(runtime, second.id)
        statuses.append(lean_reply.status)
    return statuses


def padded(size: int) -> bytes:
    """A valid body of exactly `size` bytes: the reason carries trailing spaces."""
    body = body_of(0, "Broken.")
    return body_of(0, "Broken." + " " * (size - len(body)))


def test_odd_bodies_match_router(
    apps: tuple[FastAPI, FastAPI], api_key: str, runtime: Runtime
) -> None:
    sent = [("x-api-key", api_key), ("content-type", "application/json")]
    limit = 16 * 1024
    whole = body_of(1)
    deep = b'{"lineItem": 0, "reason": "x", "z": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    cases: list[Case] = [
        ("duplicate key", sent, [b'{"lineItem": 5, "lineItem": 0, "reason": "x"}']),
        ("escaped key", sent, [b'{"line\\u0049tem": 0, "reason": "x"}']),
        ("huge index", sent, [b'{"lineItem": 99999999999999999999, "reason": "x"}']),
        ("index 2**63", sent, [body_of(2**63)]),
        ("index 2**63 - 1", sent, [body_of(2**63 - 1)]),
        ("float index", sent, [b'{"lineItem": 0e0, "reason": "x"}']),
        ("infinite index", sent, [b'{"lineItem": 1e400, "reason": "x"}']),
        ("nested reason", sent, [b'{"lineItem": 0, "reason": {"a": [1]}}']),
        ("deep", sent, [deep]),
        ("bom", sent, [b"\xef\xbb\xbf" + body_of(0)]),
        ("invalid utf-8", sent, [b'{"lineItem": 0, "reason": "caf\xe9"}']),
        ("lone surrogate", sent, [b'{"lineItem": 0, "reason": "a\\udc00b"}']),
        ("surrogate pair", sent, [b'{"lineItem": 0, "reason": "\\ud83d\\ude00"}']),
        ("nul", sent, [b'{"lineItem": 0, "reason": "a\\u0000b"}']),
        ("line separator", sent, [b'{"lineItem": 0, "reason": "a\\u2028b"}']),
        ("at the lean limit", sent, [padded(limit)]),
        ("one byte over it", sent, [padded(limit + 1)]),
        ("at the body limit", sent, [padded(64 * 1024)]),
        ("over the body limit", sent, [padded(64 * 1024 + 1)]),
        ("byte by byte", sent, [whole[i : i + 1] for i in range(len(whole))]),
        ("empty parts", sent, [b"", whole[:5], b"", whole[5:], b""]),
        ("chunked", [*sent, ("transfer-encoding", "chunked")], [whole[:7], whole[7:]]),
    ]  # fmt: skip
    statuses = compare_on_twins(apps, runtime, cases)
    assert statuses.count(201) >= 8, statuses


def test_odd_headers_match_router(
    apps: tuple[FastAPI, FastAPI], api_key: str, make_key: KeyMaker, runtime: Runtime
) -> None:
    other_project = make_key(project="another-project")
    read_only = make_key("orders.read")
    json_type = ("content-type", "application/json")
    idempotency = ("idempotency-key", "k-2")
    key = ("x-api-key", api_key)
    secret = ("authorization", SECRET)
    wrong = ("authorization", "wrong")
    credentials = [
        ("two keys, second bad", [key, ("x-api-key", "sk_x")]),
        ("two keys, first bad", [("x-api-key", "sk_x"), key]),
        ("empty key, then secret", [("x-api-key", ""), secret]),
        ("key of another project", [("x-api-key", other_project)]),
        ("read-only key", [("x-api-key", read_only)]),
        ("read-only key and secret", [("x-api-key", read_only), secret]),
        ("other project and secret", [("x-api-key", other_project), secret]),
        ("padded key", [("x-api-key", f" \t{api_key} ")]),
        ("padded secret", [("authorization", f"  {SECRET}\t")]),
        ("two secrets, first wrong", [wrong, secret]),
        ("two secrets, second wrong", [secret, wrong]),
        ("bearer secret", [("authorization", f"Bearer {SECRET}")]),
    ]  # fmt: skip
    content_types = [
        ("odd case", [("content-type", "Application/JSON; Charset=UTF-8")]),
        ("latin-1", [("content-type", "application/json; charset=latin-1")]),
        ("json, then text", [json_type, ("content-type", "text/plain")]),
        ("text, then json", [("content-type", "text/plain"), json_type]),
        ("json twice", [json_type, json_type]),
        ("no type", []),
        ("vendor json", [("content-type", "application/vnd.api+json")]),
        ("two idempotency keys", [json_type, ("idempotency-key", "k-1"), idempotency]),
    ]  # fmt: skip
    body = [body_of(0)]
    cases: list[Case] = [
        (label, [*headers, json_type], body) for label, headers in credentials
    ] + [(label, [key, *headers], body) for label, headers in content_types]
    statuses = compare_on_twins(apps, runtime, cases)
    assert {201, 401, 404, 415} <= set(statuses), statuses


class TestRateLimit:
    LIMIT = 10

    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"rate_limit_writes_per_minute": self.LIMIT}

    def test_concurrent_mix_counted_once(
        self, app: FastAPI, api_key: str, runtime: Runtime
    ) -> None:
        """Sends at once requests the lean path serves, ones it passes on after
        its write failed (the same line item) and ones only the router handles.
        Exactly LIMIT of the counted ones get through."""
        same = shipped_order(runtime, items=1, delivered_days_ago=1)
        others = [
            shipped_order(runtime, items=1, delivered_days_ago=1) for _ in range(8)
        ]
        headers = key_headers(api_key)
        counted: list[tuple[str, Any, bytes]] = [
            *[(same.id, headers, body_of(0)) for _ in range(8)],
            *[(order.id, headers, body_of(0)) for order in others[:4]],
            *[(order.id, headers, body_of(0, "")) for order in others[:2]],
            *[(MISSING, headers, body_of(0)) for _ in range(2)],
            *[
                (
                    order.id,
                    secret_headers(order),
                    body_of(0),
                )
                for order in others[4:]
            ],
        ]  # fmt: skip
        wrong_secret = {"Authorization": "wrong", "Content-Type": "application/json"}

        async def attack() -> tuple[list[Reply], list[Reply]]:
            await warm(app)
            replies = await asyncio.gather(
                *(post(app, *request) for request in counted),
                *(post(app, same.id, wrong_secret, body_of(0)) for _ in range(2)),
            )
            return list(replies[: len(counted)]), list(replies[len(counted) :])

        replies, uncounted = asyncio.run(attack())
        statuses = [reply.status for reply in replies]
        assert 500 not in statuses
        assert len(statuses) - statuses.count(429) == self.LIMIT, statuses
        assert [reply.status for reply in uncounted] == [401, 401]
        with runtime.session_factory() as session:
            written = session.scalar(select(func.count()).select_from(Refund))
        assert written == statuses.count(201)
        assert refund_count(runtime, same.id) <= 1


def test_thirty_requests_one_refund(
    app: FastAPI, api_key: str, runtime: Runtime
) -> None:
    """Thirty requests for one line item write one refund with its history event,
    two webhook deliveries (one job each) and one revision raise. Every other
    request gets 409 naming it, and a GET cached before the race then lists it."""
    order = shipped_order(runtime, items=2, delivered_days_ago=1)
    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        for events in (["orders.refund.initiated"], ["*"], ["orders.tracking.updated"]):
            session.add(
                WebhookEndpoint(
                    project_id=owner, url="https://hooks.example.com/a",
                    events=events, secret="whsec_test", created_by="test",
                )
            )  # fmt: skip
    reader = TestClient(app, raise_server_exceptions=False)
    path = refund_path(order.id)
    assert reader.get(path, headers={"X-API-KEY": api_key}).json() == []
    before = revision_of(runtime, order.id)
    by_secret = secret_headers(order)

    headers = [key_headers(api_key), by_secret] * 15

    async def attack() -> list[Reply]:
        await warm(app)
        sent = (post(app, order.id, each, body_of(0)) for each in headers)
        return list(await asyncio.gather(*sent))

    replies = asyncio.run(attack())
    [won] = [reply.json() for reply in replies if reply.status == 201]
    lost = [reply.json() for reply in replies if reply.status != 201]
    assert {(body["code"], body["refund"]["refundId"]) for body in lost} == {
        ("refund_already_requested", won["refundId"])
    }, lost[:1]
    assert len(lost) == 29
    with runtime.session_factory() as session:
        assert refund_count(runtime, order.id) == 1
        history = session.scalars(
            select(OrderEvent).where(OrderEvent.subject_id == won["refundId"])
        ).all()
        assert [event.kind for event in history] == ["refund.requested"]
        deliveries = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.order_id == order.id)
        ).all()
        assert len(deliveries) == 2
        assert {json.loads(d.body)["data"]["refundId"] for d in deliveries} == {
            won["refundId"]
        }
        for delivery in deliveries:
            jobs = [
                job
                for job in session.scalars(select(Job))
                if job.payload.get("delivery") == delivery.delivery_id
            ]
            assert len(jobs) == 1
    assert revision_of(runtime, order.id) == before + 1
    listed = reader.get(path, headers={"X-API-KEY": api_key}).json()
    assert [item["refundId"] for item in listed] == [won["refundId"]]
    assert listed[0]["history"] == won["history"]


def revision_of(runtime: Runtime, order_id: str) -> int:
    with runtime.session_factory() as session:
        row = session.get(OrderRevision, order_id)
        return row.revision if row else 0


def test_client_hang_up_logs_499(
    apps: tuple[FastAPI, FastAPI], api_key: str, runtime: Runtime
) -> None:
    """The client sends half a body and hangs up. Both apps log it as a client
    that left (status 499), not as an unhandled error with status 500."""
    order = shipped_order(runtime, items=1, delivered_days_ago=1)

    async def attack() -> list[int | None]:
        statuses = []
        for app in apps:
            await warm(app)
            exchange = half_body(app, order.id, api_key)
            await asyncio.sleep(0.05)
            await exchange.finish()
            statuses.append(exchange.start["status"] if exchange.start else None)
        return statuses

    with capture_logs() as events:
        statuses = asyncio.run(attack())
    names = [event["event"] for event in events]
    assert "unhandled_error" not in names
    assert "request_failed" not in names
    assert names.count("client_disconnected") == 2
    assert statuses == [499, 499]
    assert refund_count(runtime, order.id) == 0
