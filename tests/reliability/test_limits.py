"""Every limit of the API: exceeding one gives a clear 4xx (503 for the request
timeout) in the error body, and changes nothing in the database.

- rate limits shared by two real API processes through a private Redis;
- the body size, with and without Content-Length;
- the number of line items;
- a maximum length on every string field of every request model, found by walking
  the models, so a new field without a bound fails here;
- the request timeout, on a request held up by a database lock;
- the page size of list endpoints.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from sqlalchemy import create_engine, func, select, text
from tests.conftest import LiveServer, free_port, make_settings
from tests.orders.helpers import ORDERS, order_body, seed_catalog
from tests.reliability.procs import ServiceProcesses
from tests.shipping.helpers import ORDERS as UNSTABLE_ORDERS
from tests.shipping.helpers import iso, new_paid_order, shipped, table_counts

from orderdesk import request_timeout
from orderdesk.config import Settings
from orderdesk.http import MAX_BODY_BYTES
from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.orders.schemas import MAX_LINE_ITEMS
from orderdesk.refunds.models import Refund
from orderdesk.runtime import Runtime
from orderdesk.shipping.models import Package, TrackingEvent
from orderdesk.webhooks.models import WebhookEndpoint

WEBHOOKS = "/api/unstable/webhooks"
WRITE_LIMIT = 20
BURST = 50


def error_body(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check the status and the API's error body, and return the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] is True
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


def row_counts(runtime: Runtime) -> dict[str, int]:
    """Rows in every table a request of these tests could write."""
    models = (Order, LineItem, OrderEvent, Package, TrackingEvent, Refund)
    counts = table_counts(runtime)
    with runtime.session_factory() as session:
        for model in (*models, WebhookEndpoint):
            query = select(func.count()).select_from(model)
            counts[model.__tablename__] = session.scalar(query) or 0
    return counts


# Rate limits across processes


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, stopped afterwards."""
    port = free_port()
    log = open(tmp_path / "redis.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = RedisServer(process, port)
    try:
        import redis

        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


# Several API processes share one PostgreSQL and one Redis when scaled out.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_rate_limit_shared_by_two_processes(
    settings: Settings,
    runtime: Runtime,
    api_key: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    seed_catalog(runtime)
    services = ServiceProcesses(
        settings,
        tmp_path,
        ORDERDESK_REDIS_URL=redis_server.url,
        ORDERDESK_RATE_LIMIT_WRITES_PER_MINUTE=str(WRITE_LIMIT),
    )
    try:
        apis = [services.start_api(), services.start_api()]
        results: list[requests.Response] = []
        lock = threading.Lock()

        def post(index: int) -> None:
            url = apis[index % 2].url + ORDERS
            response = requests.post(
                url, json=order_body(), headers={"X-API-KEY": api_key}, timeout=60
            )
            with lock:
                results.append(response)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        services.stop_all()

    statuses = sorted(response.status_code for response in results)
    assert len(results) == BURST
    assert statuses.count(201) == WRITE_LIMIT, statuses
    assert statuses.count(429) == BURST - WRITE_LIMIT, statuses
    for response in results:
        if response.status_code != 429:
            continue
        error_body(response, 429, "rate_limited")
        retry_after = int(response.headers["retry-after"])
        assert 1 <= retry_after <= 60
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == WRITE_LIMIT


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rate_limit_open_without_redis(database_url: str, tmp_path: Path) -> None:
    # Nothing listens on the port, so every Redis call fails at once.
    settings = make_settings(
        database_url,
        tmp_path,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        rate_limit_writes_per_minute=2,
    )
    runtime = Runtime.build(settings)
    runtime.start()
    try:
        seed_catalog(runtime)
        key = _make_key(runtime)
        with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
            statuses = [
                client.post(
                    ORDERS, json=order_body(), headers={"X-API-KEY": key}
                ).status_code
                for _ in range(4)
            ]
    finally:
        runtime.close()
    assert statuses == [201, 201, 201, 201]


def create_app(runtime: Runtime) -> FastAPI:
    from orderdesk.app import create_app as build

    return build(runtime=runtime)


def _make_key(runtime: Runtime) -> str:
    from orderdesk.auth.scopes import ALL_SCOPES
    from orderdesk.auth.services import create_api_key, get_or_create_project

    with runtime.session_factory() as session, session.begin():
        owner = get_or_create_project(session, runtime.settings, "test-project")
        _key, value = create_api_key(
            session, owner, runtime.settings.environment, list(ALL_SCOPES)
        )
    return value


# Body size


def test_body_over_limit_with_content_length(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    seed_catalog(runtime)
    before = row_counts(runtime)
    body = order_body(locale="en-US")
    body["padding"] = "x" * MAX_BODY_BYTES
    response = client.post(ORDERS, json=body, headers={"X-API-KEY": api_key})

    error_body(response, 413, "payload_too_large")
    assert row_counts(runtime) == before


def test_chunked_body_over_limit(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    seed_catalog(runtime)
    before = row_counts(runtime)

    def chunks() -> Iterator[bytes]:
        # A JSON string that never ends: the server must stop reading at the limit.
        yield b'{"padding": "'
        for _ in range(2 * MAX_BODY_BYTES // 4096):
            yield b"x" * 4096

    response = httpx.post(
        live_server.url + ORDERS,
        content=chunks(),
        headers={"X-API-KEY": api_key, "content-type": "application/json"},
        timeout=30,
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    error_body(response, 413, "payload_too_large")
    assert row_counts(runtime) == before


def test_chunked_body_under_limit_is_read(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    seed_catalog(runtime)
    raw = httpx.Request("POST", "/", json=order_body()).content

    response = httpx.post(
        live_server.url + ORDERS,
        content=iter([raw[:10], raw[10:]]),
        headers={"X-API-KEY": api_key, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 201, response.text


# Line items


def test_line_items_over_limit(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    seed_catalog(runtime)
    before = row_counts(runtime)
    items = [{"productLocator": "amazon:B08N5WRWNW"}] * (MAX_LINE_ITEMS + 1)
    response = client.post(
        ORDERS, json=order_body(lineItems=items), headers={"X-API-KEY": api_key}
    )

    body = error_body(response, 400, "invalid_request")
    assert [d["field"] for d in body["details"]] == ["lineItems"]
    assert row_counts(runtime) == before


def test_line_items_at_limit(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    seed_catalog(runtime)
    items = [{"productLocator": "amazon:B08N5WRWNW"}] * MAX_LINE_ITEMS
    response = client.post(
        ORDERS, json=order_body(lineItems=items), headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 201, response.text
    assert len(response.json()["order"]["lineItems"]) == MAX_LINE_ITEMS


# String lengths: found by walking every request model


@dataclass(frozen=True)
class Bound:
    """A string or array in a model's JSON schema, by its path in a body."""

    path: tuple[str | int, ...]
    kind: str  # "string" or "array"
    maximum: int | None

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.path)


def schema_bounds(schema: dict[str, Any]) -> list[Bound]:
    """Every string and array of a model's JSON schema, with its maxLength or
    maxItems (None when it has none). Array items are at index 0."""
    definitions = schema.get("$defs", {})
    found: list[Bound] = []

    def walk(node: dict[str, Any], path: tuple[str | int, ...]) -> None:
        if "$ref" in node:
            walk(definitions[node["$ref"].rsplit("/", 1)[-1]], path)
            return
        for branch in node.get("anyOf", []) + node.get("oneOf", []):
            walk(branch, path)
        kind = node.get("type")
        if kind == "string" and "enum" not in node and "const" not in node:
            found.append(Bound(path, "string", node.get("maxLength")))
        elif kind == "object":
            for name, child in node.get("properties", {}).items():
                walk(child, (*path, name))
        elif kind == "array":
            found.append(Bound(path, "array", node.get("maxItems")))
            walk(node.get("items", {}), (*path, 0))

    walk(schema, ())
    return found


PAYER = "0x" + "ab" * 20
TIME = "2026-03-01T17:05:09.120Z"
RANGE = {"lowerBound": TIME, "upperBound": "2026-03-02T17:05:09.120Z"}
ADDRESS = {
    "name": "Jordan Lee",
    "line1": "350 Fifth Avenue",
    "line2": "Floor 3",
    "city": "New York",
    "state": "NY",
    "postalCode": "10118",
    "country": "US",
}
RECIPIENT = {"email": "jordan@example.com", "walletAddress": PAYER}
PAYMENT = {
    "method": "devnet",
    "currency": "usdc",
    "payerAddress": PAYER,
    "receiptEmail": "receipts@example.com",
}
# One valid body per request model, with every optional field present, so that each
# string has a place in it. A new request model needs a sample here.
SAMPLES: dict[str, dict[str, Any]] = {
    "OrderCreate": {
        "recipient": {**RECIPIENT, "physicalAddress": ADDRESS},
        "payment": PAYMENT,
        "lineItems": [{"productLocator": "amazon:B08N5WRWNW", "quantity": 1}],
        "locale": "en-US",
        "state": "create",
    },
    "OrderUpdate": {
        "recipient": {**RECIPIENT, "physicalAddress": ADDRESS},
        "payment": PAYMENT,
        "locale": "en-US",
    },
    "PaymentSubmission": {"type": "crypto-tx-id", "txId": "0x" + "cd" * 32},
    "ShipmentIn": {
        "carrierName": "UPS",
        "carrierTrackingNumber": "1Z999AA10123456784",
        "lineItems": [0],
        "trackingUrl": "https://www.ups.com/track?tracknum=1Z999AA10123456784",
        "deliveryTimeRange": RANGE,
    },
    "TrackingEventIn": {
        "status": "shipped",
        "occurredAt": TIME,
        "description": "Picked up",
        "location": "Newark, NJ",
        "deliveryTimeRange": RANGE,
    },
    "RefundRequestIn": {"lineItem": 0, "reason": "The bottle leaks."},
    "RejectionIn": {"reason": "Outside our return policy."},
    "NoFieldsIn": {},
    "EndpointCreate": {
        "url": "https://merchant.example.com/hooks",
        "events": ["orders.quote.created"],
        "description": "Order updates",
    },
    "EndpointUpdate": {
        "url": "https://merchant.example.com/hooks",
        "events": ["orders.quote.created"],
        "description": "Order updates",
    },
    "EmptyBody": {},
    "FaucetRequest": {"address": PAYER, "usdc": "10"},
}
# Request bodies that are not our models: the providers' and JSON-RPC's own shapes,
# bounded by the body size only (see docs/api-decisions.md).
FOREIGN_BODIES = {
    ("post", "/webhooks/carriers/{provider}"),
    ("post", "/devnet/rpc"),
}


def request_models(app: FastAPI) -> dict[str, type[BaseModel]]:
    """The model of every JSON request body in the app's OpenAPI document, by name.

    Fails when a body's schema names no model of the server, unless it is one of
    FOREIGN_BODIES or the empty object of an action that takes no fields.
    """
    classes: dict[str, type[BaseModel]] = {}
    pending: list[type[BaseModel]] = [BaseModel]
    while pending:
        for subclass in pending.pop().__subclasses__():
            pending.append(subclass)
            module = subclass.__module__
            if module.startswith("orderdesk.") and not module.startswith(
                "orderdesk.client"
            ):
                classes.setdefault(subclass.__name__, subclass)
    models: dict[str, type[BaseModel]] = {}
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            if schema is None or (method, path) in FOREIGN_BODIES:
                continue
            if schema.get("maxProperties") == 0 and not schema.get("properties"):
                continue  # an action that takes no fields
            title = schema.get("title")
            assert title in classes, f"{method} {path}: no request model {title!r}"
            models[title] = classes[title]
    return models


def set_path(body: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """Return a copy of `body` with `value` at `path`, making lists as needed."""
    body = copy.deepcopy(body)
    target = body
    for position, part in enumerate(path[:-1]):
        following: Any = [] if isinstance(path[position + 1], int) else {}
        if isinstance(part, int):
            while len(target) <= part:
                target.append(following)
        elif not isinstance(target.get(part), (dict, list)):
            target[part] = following
        target = target[part]
    last = path[-1]
    if isinstance(last, int):
        while len(target) <= last:
            target.append(None)
    target[last] = value
    return body


def over_long(bound: Bound, sample: dict[str, Any]) -> dict[str, Any]:
    """`sample` with the string or array at `bound` one longer than its maximum."""
    assert bound.maximum is not None
    if bound.kind == "string":
        return set_path(sample, bound.path, "x" * (bound.maximum + 1))
    current: Any = sample
    for part in bound.path:
        current = current[part]
    return set_path(sample, bound.path, [current[0]] * (bound.maximum + 1))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, type[BaseModel]]:
    directory = tmp_path_factory.mktemp("openapi")
    settings = make_settings(f"sqlite:///{directory / 'openapi.db'}", directory)
    # The devnet endpoints are in the document only in development with the devnet.
    assert settings.devnet_endpoints_enabled
    from orderdesk.app import create_app as build

    return request_models(build(settings))


def test_every_request_model_has_a_sample(
    models: dict[str, type[BaseModel]],
) -> None:
    assert {"OrderCreate", "ShipmentIn", "EndpointCreate"} <= set(models)
    assert sorted(set(models) - set(SAMPLES)) == []
    for name, model in models.items():
        model.model_validate_json(json.dumps(SAMPLES[name]))


def test_every_string_and_list_is_bounded(
    models: dict[str, type[BaseModel]],
) -> None:
    unbounded = [
        f"{name}.{bound.field} ({bound.kind})"
        for name, model in sorted(models.items())
        for bound in schema_bounds(model.model_json_schema(mode="validation"))
        if bound.maximum is None
    ]
    assert unbounded == []


def test_every_bound_is_enforced(models: dict[str, type[BaseModel]]) -> None:
    checked = 0
    for name, model in sorted(models.items()):
        for bound in schema_bounds(model.model_json_schema(mode="validation")):
            body = over_long(bound, SAMPLES[name])
            with pytest.raises(ValidationError) as raised:
                model.model_validate_json(json.dumps(body))
            fields = [
                ".".join(str(part) for part in error["loc"])
                for error in raised.value.errors()
            ]
            assert any(field.startswith(bound.field) for field in fields), (
                name,
                bound,
                fields,
            )
            checked += 1
    # The strings and lists of every model: 54 in 10 models when this was written.
    assert checked >= 54


def order_string_bounds(models: dict[str, type[BaseModel]]) -> list[Bound]:
    schema = models["OrderCreate"].model_json_schema(mode="validation")
    return [bound for bound in schema_bounds(schema) if bound.kind == "string"]


def test_over_long_order_strings_change_nothing(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    models: dict[str, type[BaseModel]],
) -> None:
    seed_catalog(runtime)
    before = row_counts(runtime)
    bounds = order_string_bounds(models)
    assert len(bounds) >= 14
    for bound in bounds:
        body = over_long(bound, SAMPLES["OrderCreate"])
        response = client.post(ORDERS, json=body, headers={"X-API-KEY": api_key})
        error = error_body(response, 400, "invalid_request")
        fields = [detail["field"] for detail in error["details"]]
        assert any(field.startswith(bound.field) for field in fields), (bound, fields)
    assert row_counts(runtime) == before


def test_over_long_webhook_strings_change_nothing(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    models: dict[str, type[BaseModel]],
) -> None:
    schema = models["EndpointCreate"].model_json_schema(mode="validation")
    bounds = schema_bounds(schema)
    assert {bound.field for bound in bounds} == {
        "url",
        "events",
        "events.0",
        "description",
    }
    for bound in bounds:
        body = over_long(bound, SAMPLES["EndpointCreate"])
        response = client.post(WEBHOOKS, json=body, headers={"X-API-KEY": api_key})
        error = error_body(response, 400, "invalid_request")
        fields = [detail["field"] for detail in error["details"]]
        assert any(field.startswith(bound.field) for field in fields), (bound, fields)
    assert row_counts(runtime)[WebhookEndpoint.__tablename__] == 0


def test_over_long_shipment_strings_change_nothing(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    models: dict[str, type[BaseModel]],
) -> None:
    order = new_paid_order(runtime)
    package = shipped(client, api_key, order.id, [0])
    before = row_counts(runtime)
    cases = [
        (f"{UNSTABLE_ORDERS}/{order.id}/shipments", "ShipmentIn"),
        (
            f"{UNSTABLE_ORDERS}/{order.id}/shipments/{package['packageId']}/events",
            "TrackingEventIn",
        ),
        (f"{UNSTABLE_ORDERS}/{order.id}/refunds", "RefundRequestIn"),
    ]
    for url, name in cases:
        sample = copy.deepcopy(SAMPLES[name])
        if name == "ShipmentIn":
            sample["carrierTrackingNumber"] = "1Z999AA10123456799"
            sample["lineItems"] = [1]
        if name == "TrackingEventIn":
            sample["occurredAt"] = iso(_now())
            sample.pop("deliveryTimeRange")
        bounds = schema_bounds(models[name].model_json_schema(mode="validation"))
        for bound in bounds:
            if bound.kind == "array":
                continue  # the shipment's line items have their own tests
            response = client.post(
                url, json=over_long(bound, sample), headers={"X-API-KEY": api_key}
            )
            error = error_body(response, 400, "invalid_request")
            fields = [detail["field"] for detail in error["details"]]
            assert any(f.startswith(bound.field) for f in fields), (name, bound, fields)
        # The sample itself is accepted, so the rejections above were the lengths.
        accepted = client.post(url, json=sample, headers={"X-API-KEY": api_key})
        assert accepted.status_code == 201, (name, accepted.text)
    counts = row_counts(runtime)
    assert counts[Package.__tablename__] == before[Package.__tablename__] + 1
    assert counts[Refund.__tablename__] == before[Refund.__tablename__] + 1


def _now() -> Any:
    from tests.shipping.helpers import hours_ago

    return hours_ago(1)


# Request timeout


@contextmanager
def write_lock(database_url: str) -> Iterator[None]:
    """Hold a lock from another connection that stops every insert into orders."""
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("LOCK TABLE orders IN EXCLUSIVE MODE"))
            try:
                yield
            finally:
                connection.rollback()
    finally:
        engine.dispose()


def wait_for_abandoned_requests(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while request_timeout._abandoned:
        assert time.monotonic() < deadline, "a timed-out request is still running"
        time.sleep(0.05)


def test_request_timeout_commits_nothing(
    database_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(database_url, tmp_path, request_timeout_seconds=1.0)
    runtime = Runtime.build(settings)
    runtime.start()
    try:
        seed_catalog(runtime)
        key = _make_key(runtime)
        headers = {"X-API-KEY": key}
        with LiveServer(create_app(runtime)) as server:
            url = server.url + ORDERS
            with write_lock(settings.database_url):
                started = time.monotonic()
                response = httpx.post(
                    url, json=order_body(), headers=headers, timeout=30
                )
                elapsed = time.monotonic() - started
            # The lock is gone: the stopped route now reaches its commit, which fails.
            wait_for_abandoned_requests()
            counts = row_counts(runtime)
            after = httpx.post(url, json=order_body(), headers=headers, timeout=30)
    finally:
        runtime.close()

    error_body(response, 503, "request_timeout")
    assert response.headers["retry-after"] == "5"
    assert 1.0 <= elapsed < 5.0
    assert counts[Order.__tablename__] == 0
    assert counts[LineItem.__tablename__] == 0
    assert counts[OrderEvent.__tablename__] == 0
    # The stopped route did reach its commit, and the commit was refused.
    assert "timed_out_commit_refused" in capfd.readouterr().err
    assert after.status_code == 201, after.text


def test_request_timeout_spares_fast_requests(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, request_timeout_seconds=1.0)
    runtime = Runtime.build(settings)
    runtime.start()
    try:
        seed_catalog(runtime)
        key = _make_key(runtime)
        with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
            statuses = [
                client.post(
                    ORDERS, json=order_body(), headers={"X-API-KEY": key}
                ).status_code
                for _ in range(5)
            ]
    finally:
        runtime.close()
    assert statuses == [201] * 5


# Page sizes


# Page sizes are read-only queries, so SQLite alone is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_order_page_size_out_of_range(client: TestClient, api_key: str) -> None:
    for limit in ("0", "101", "100000", "-1", "1.5", "ten"):
        response = client.get(
            ORDERS, params={"limit": limit}, headers={"X-API-KEY": api_key}
        )
        body = error_body(response, 400, "invalid_request")
        assert [detail["field"] for detail in body["details"]] == ["query.limit"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_page_size_at_maximum(client: TestClient, api_key: str) -> None:
    response = client.get(
        ORDERS, params={"limit": "100"}, headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_delivery_page_size_out_of_range(client: TestClient, api_key: str) -> None:
    created = client.post(
        WEBHOOKS, json=SAMPLES["EndpointCreate"], headers={"X-API-KEY": api_key}
    )
    assert created.status_code == 201, created.text
    url = f"{WEBHOOKS}/{created.json()['id']}/deliveries"
    for limit, status in (("101", 400), ("0", 400), ("100", 200)):
        response = client.get(
            url, params={"limit": limit}, headers={"X-API-KEY": api_key}
        )
        assert response.status_code == status, response.text
        if status == 400:
            error_body(response, 400, "invalid_request")
