"""Access matrix: every API route against every kind of credential.

The expected statuses follow the API contract and docs/api-decisions.md:

- no key, an unknown or revoked key, a key of another environment, or a console
  session cookie: 401 (the session cookie authorises no API call);
- a key without the route's scope: 403, and the message names the scope;
- a key of another project: 404 for that project's objects, never 403, and the
  routes about no single object (create, list) act on its own project;
- an order's client secret: its own order's reads and updates succeed, every
  other route returns 403;
- another order's client secret: 401 `invalid_client_secret` on the routes a
  secret may call, 403 on the others;
- the carrier webhooks and the devnet take no credential and ignore any.

A denied call changes no row of any table. The table must name every API route
of the app, so a new route fails `test_every_api_route_has_a_row` until it gets
one. The second half checks that an API key, sent in any way, opens no console
page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI, routing
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from tests import factories
from tests.conftest import KeyMaker, make_settings
from tests.console import data as console_data
from tests.console import helpers as console_helpers
from tests.orders.helpers import order_body, seed_catalog
from tests.shipping.carriers import payloads
from tests.shipping.helpers import hours_ago, iso

from orderdesk.app import create_app
from orderdesk.auth.models import ApiKey
from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.auth.services import hash_secret, key_cache, revoke_api_key
from orderdesk.console.security import session_cookie
from orderdesk.db.base import Base
from orderdesk.runtime import Runtime
from orderdesk.webhooks import services as webhook_services
from orderdesk.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

ORDERS = "/api/2022-06-09/orders"
UNSTABLE = "/api/unstable"
HOOK_URL = "http://127.0.0.1:9/orderdesk-hooks"  # no worker runs, so never called

SCOPE_CREDENTIALS = tuple(f"scope:{scope}" for scope in ALL_SCOPES)
CREDENTIALS = (
    "none",
    "unknown",
    "revoked",
    "other_environment",
    "other_project",
    *SCOPE_CREDENTIALS,
    "client_secret",
    "other_client_secret",
    "console_session",
)
# Credentials that authorise no API call at all.
NO_API_ACCESS = ("none", "unknown", "revoked", "other_environment", "console_session")
# Codes of the 401 responses, by credential.
UNAUTHORIZED_CODES = {
    "none": "unauthorized",
    "unknown": "unauthorized",
    "revoked": "key_revoked",
    "other_environment": "environment_mismatch",
    "console_session": "unauthorized",
    "other_client_secret": "invalid_client_secret",
}
# Routes that are neither API nor console: public by design.
PUBLIC_PATHS = {"/openapi.json", "/docs", "/healthz", "/readyz", "/metrics"}


@dataclass(frozen=True)
class Call:
    """One request of a route on fresh objects, and the client secret of the order
    it is about (or of some order, for routes about none)."""

    path: str
    secret: str
    body: Any = None


@dataclass(frozen=True)
class Route:
    """A row of the matrix: who may call the route, and what success looks like."""

    method: str
    path: str
    scope: str | None  # None: the route takes no credential
    success: int
    prepare: Callable[[World], Call]
    # The order's client secret may call it (reads and updates of one order).
    secret: bool = False
    # It addresses one project's object, so another project's key gets 404.
    owned: bool = True


class World:
    """Creates fresh objects for each call, with a key holding every scope."""

    def __init__(self, runtime: Runtime, client: TestClient, make_key: KeyMaker):
        self.runtime = runtime
        self.client = client
        self.key = make_key(*ALL_SCOPES)
        seed_catalog(runtime)

    def post(self, path: str, body: Any, expected: int = 201) -> Any:
        response = self.client.post(path, json=body, headers={"X-API-KEY": self.key})
        assert response.status_code == expected, response.text
        return response.json()

    def unpaid_order(self) -> factories.MadeOrder:
        created = self.post(ORDERS, order_body())
        return factories.MadeOrder(
            created["order"]["orderId"], created["clientSecret"], []
        )

    def paid_order(self, items: int = 1) -> factories.MadeOrder:
        with self.runtime.session_factory() as session, session.begin():
            owner = factories.project_id(session, self.runtime.settings)
            specs = [factories.line_item() for _ in range(items)]
            return factories.make_paid_order(session, owner, specs)

    def shipped_order(self) -> tuple[factories.MadeOrder, str]:
        """A paid order with its line item in a package; returns the package id."""
        order = self.paid_order()
        with self.runtime.session_factory() as session, session.begin():
            package = factories.make_package(session, order.id, [0])
            return order, package.id

    def refund(self, *, accepted: bool = False) -> tuple[factories.MadeOrder, str]:
        order, _package = self.shipped_order()
        refund = self.post(
            f"{UNSTABLE}/orders/{order.id}/refunds",
            {"lineItem": 0, "reason": "It arrived broken."},
        )
        if accepted:
            path = f"{UNSTABLE}/orders/{order.id}/refunds/{refund['refundId']}/accept"
            self.post(path, None, expected=200)
        return order, refund["refundId"]

    def endpoint(self) -> str:
        return str(
            self.post(f"{UNSTABLE}/webhooks", {"url": HOOK_URL, "events": ["*"]})["id"]
        )

    def failed_delivery(self) -> tuple[str, str]:
        """An endpoint with a delivery that failed for good, so it can be resent."""
        endpoint = self.endpoint()
        # The order's quote.created event gives the endpoint a delivery.
        self.unpaid_order()
        with self.runtime.session_factory() as session, session.begin():
            query = select(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == endpoint
            )
            delivery = session.scalars(query).one()
            delivery.status = DeliveryStatus.FAILED
            return endpoint, delivery.delivery_id

    def make_room(self, max_endpoints: int = 30) -> None:
        """Delete every webhook endpoint when there are more than `max_endpoints`,
        so that the calls of one route stay below the limit of 50 per project."""
        with self.runtime.session_factory() as session, session.begin():
            endpoints = list(session.scalars(select(WebhookEndpoint)))
            if len(endpoints) > max_endpoints:
                for endpoint in endpoints:
                    webhook_services.delete_endpoint(session, endpoint, "test")

    def any_secret(self) -> str:
        return self.paid_order().client_secret


def _order_call(suffix: str = "", body: Any = None) -> Callable[[World], Call]:
    def prepare(world: World) -> Call:
        order = world.unpaid_order()
        return Call(f"{ORDERS}/{order.id}{suffix}", order.client_secret, body)

    return prepare


def _shipped_call(suffix: str, body: Any = None) -> Callable[[World], Call]:
    def prepare(world: World) -> Call:
        order, _package = world.shipped_order()
        return Call(f"{UNSTABLE}/orders/{order.id}{suffix}", order.client_secret, body)

    return prepare


def _event_call(world: World) -> Call:
    order, package = world.shipped_order()
    return Call(
        f"{UNSTABLE}/orders/{order.id}/shipments/{package}/events",
        order.client_secret,
        {"status": "out-for-delivery", "occurredAt": iso(hours_ago(1))},
    )


def _review_call(action: str, body: Any = None) -> Callable[[World], Call]:
    def prepare(world: World) -> Call:
        order, refund = world.refund(accepted=action == "return-received")
        path = f"{UNSTABLE}/orders/{order.id}/refunds/{refund}/{action}"
        return Call(path, order.client_secret, body)

    return prepare


def _endpoint_call(suffix: str = "", body: Any = None) -> Callable[[World], Call]:
    def prepare(world: World) -> Call:
        path = f"{UNSTABLE}/webhooks/{world.endpoint()}{suffix}"
        return Call(path, world.any_secret(), body)

    return prepare


def _resend_call(world: World) -> Call:
    endpoint, delivery = world.failed_delivery()
    path = f"{UNSTABLE}/webhooks/{endpoint}/deliveries/{delivery}/resend"
    return Call(path, world.any_secret())


def _fixed_call(path: str, body: Any = None) -> Callable[[World], Call]:
    return lambda world: Call(path, world.any_secret(), body)


def _carrier_body() -> dict[str, Any]:
    detail = payloads.easypost_detail("in_transit", iso(hours_ago(1)), "Departed")
    return payloads.easypost_event("1ZUNKNOWN0000000001", [detail])


WEBHOOK_BODY = {"url": HOOK_URL, "events": ["*"]}
PAYMENT_BODY = {"type": "crypto-tx-id", "txId": "0x" + "ab" * 32}
ENDPOINT_PATH = UNSTABLE + "/webhooks/{endpointId}"
REFUND_PATH = UNSTABLE + "/orders/{orderId}/refunds/{refundId}"

ROUTES = (
    Route(
        "POST",
        ORDERS,
        "orders.create",
        201,
        _fixed_call(ORDERS, order_body()),
        owned=False,
    ),
    Route("GET", ORDERS, "orders.read", 200, _fixed_call(ORDERS), owned=False),
    Route(
        "GET", ORDERS + "/{order_id}", "orders.read", 200, _order_call(), secret=True
    ),
    Route(
        "PATCH",
        ORDERS + "/{order_id}",
        "orders.update",
        200,
        _order_call(body={"locale": "en-GB"}),
        secret=True,
    ),
    Route(
        "POST",
        ORDERS + "/{order_id}/payment",
        "orders.update",
        200,
        _order_call("/payment", PAYMENT_BODY),
        secret=True,
    ),
    Route(
        "POST",
        UNSTABLE + "/orders/{orderId}/shipments",
        "orders.fulfill",
        201,
        _shipped_call(
            "/shipments",
            {
                "carrierName": "USPS",
                "carrierTrackingNumber": "9400111",
                "lineItems": [0],
            },
        ),
    ),
    Route(
        "POST",
        UNSTABLE + "/orders/{orderId}/shipments/{packageId}/events",
        "orders.fulfill",
        201,
        _event_call,
    ),
    Route(
        "GET",
        UNSTABLE + "/orders/{orderId}/tracking",
        "orders.read",
        200,
        _shipped_call("/tracking"),
        secret=True,
    ),
    Route(
        "POST",
        UNSTABLE + "/orders/{orderId}/refunds",
        "orders.update",
        201,
        _shipped_call("/refunds", {"lineItem": 0, "reason": "Wrong size."}),
        secret=True,
    ),
    Route(
        "GET",
        UNSTABLE + "/orders/{orderId}/refunds",
        "orders.read",
        200,
        _shipped_call("/refunds"),
        secret=True,
    ),
    Route(
        "POST", REFUND_PATH + "/accept", "refunds.review", 200, _review_call("accept")
    ),
    Route(
        "POST",
        REFUND_PATH + "/reject",
        "refunds.review",
        200,
        _review_call("reject", {"reason": "Outside the return policy."}),
    ),
    Route(
        "POST",
        REFUND_PATH + "/return-received",
        "refunds.review",
        200,
        _review_call("return-received"),
    ),
    Route(
        "POST",
        "/webhooks/carriers/{provider}",
        None,
        200,
        _fixed_call("/webhooks/carriers/easypost", _carrier_body()),
    ),
    Route(
        "GET",
        UNSTABLE + "/webhooks",
        "webhooks.manage",
        200,
        _fixed_call(UNSTABLE + "/webhooks"),
        owned=False,
    ),
    Route(
        "POST",
        UNSTABLE + "/webhooks",
        "webhooks.manage",
        201,
        _fixed_call(UNSTABLE + "/webhooks", WEBHOOK_BODY),
        owned=False,
    ),
    Route("GET", ENDPOINT_PATH, "webhooks.manage", 200, _endpoint_call()),
    Route(
        "PATCH",
        ENDPOINT_PATH,
        "webhooks.manage",
        200,
        _endpoint_call(body={"description": "Order sync"}),
    ),
    Route("DELETE", ENDPOINT_PATH, "webhooks.manage", 204, _endpoint_call()),
    Route(
        "POST",
        ENDPOINT_PATH + "/rotate-secret",
        "webhooks.manage",
        200,
        _endpoint_call("/rotate-secret"),
    ),
    Route(
        "GET",
        ENDPOINT_PATH + "/deliveries",
        "webhooks.manage",
        200,
        _endpoint_call("/deliveries"),
    ),
    Route(
        "POST",
        ENDPOINT_PATH + "/deliveries/{deliveryId}/resend",
        "webhooks.manage",
        202,
        _resend_call,
    ),
    Route(
        "POST",
        "/devnet/rpc",
        None,
        200,
        _fixed_call(
            "/devnet/rpc", {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
        ),
    ),
    Route(
        "POST",
        "/devnet/faucet",
        None,
        200,
        _fixed_call("/devnet/faucet", {"address": factories.PAYER, "usdc": "1"}),
    ),
)


def expected_status(route: Route, credential: str) -> int:
    """The status the matrix expects for `credential` on `route`."""
    if route.scope is None:
        return route.success
    if credential in NO_API_ACCESS:
        return 401
    if credential == "other_project":
        return 404 if route.owned else route.success
    if credential in SCOPE_CREDENTIALS:
        return route.success if credential == f"scope:{route.scope}" else 403
    if credential == "client_secret":
        return route.success if route.secret else 403
    assert credential == "other_client_secret", credential
    return 401 if route.secret else 403


class Credentials:
    """The request headers, and the client, of each kind of credential."""

    def __init__(
        self,
        world: World,
        make_key: KeyMaker,
        console_client: TestClient,
    ) -> None:
        self.world = world
        self.console_client = console_client
        revoked = make_key(*ALL_SCOPES)
        # Revoked before its first use, so no cached lookup can let it through.
        with world.runtime.session_factory() as session, session.begin():
            revoke_api_key(session, revoked)
        self.keys = {
            # Well formed, for this environment, but never created.
            "unknown": f"sk_{world.runtime.settings.environment}_{'x' * 32}",
            "revoked": revoked,
            "other_environment": make_key(*ALL_SCOPES, environment="production"),
            "other_project": make_key(*ALL_SCOPES, project="other-project"),
            **{f"scope:{scope}": make_key(scope) for scope in ALL_SCOPES},
        }
        self.other_secret = world.unpaid_order().client_secret

    def send(self, credential: str, method: str, call: Call) -> Any:
        headers: dict[str, str] = {}
        client = self.world.client
        if credential in self.keys:
            headers["X-API-KEY"] = self.keys[credential]
        elif credential == "client_secret":
            headers["Authorization"] = call.secret
        elif credential == "other_client_secret":
            headers["Authorization"] = self.other_secret
        elif credential == "console_session":
            client = self.console_client
        kwargs: dict[str, Any] = {"headers": headers}
        if call.body is not None:
            kwargs["json"] = call.body
        return client.request(method, call.path, **kwargs)


@pytest.fixture
def console_client(app: FastAPI, runtime: Runtime) -> Iterator[TestClient]:
    """A client whose only credential is a live console operator session."""
    console_helpers.add_user(runtime, console_helpers.OPERATOR, "operator")
    # No `with`: the runtime fixture started the app's services already, and the
    # lifespan's exit would close them.
    logged_in = TestClient(app, raise_server_exceptions=False)
    response = console_helpers.log_in(logged_in, console_helpers.OPERATOR)
    assert response.status_code == 303, response.text
    yield logged_in
    logged_in.close()


def database_fingerprint(runtime: Runtime) -> str:
    """A digest of every row of every table, to show that a call changed nothing."""
    digest = hashlib.sha256()
    with runtime.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = connection.execute(select(table)).all()
            digest.update(table.name.encode())
            for row in sorted(repr(tuple(row)) for row in rows):
                digest.update(row.encode())
    return digest.hexdigest()


def check_response(
    route: Route, credential: str, response: Any, expected: int
) -> list[str]:
    """Return what is wrong with one response, as readable lines."""
    cell = f"{route.method} {route.path} with {credential}"
    if response.status_code != expected:
        text = response.text[:300]
        return [f"{cell}: {response.status_code}, expected {expected}: {text}"]
    if expected < 400:
        return []
    body = response.json()
    problems = []
    if body.get("error") is not True:
        problems.append(f"{cell}: not the error body: {body}")
    if expected == 401 and body.get("code") != UNAUTHORIZED_CODES[credential]:
        expected_code = UNAUTHORIZED_CODES[credential]
        problems.append(f"{cell}: code {body.get('code')}, expected {expected_code}")
    if expected == 403 and route.scope not in body.get("message", ""):
        problems.append(f"{cell}: the message does not name {route.scope}: {body}")
    if expected == 404 and not str(body.get("code")).endswith("_not_found"):
        problems.append(f"{cell}: code {body.get('code')} is not a not-found code")
    return problems


def test_access_matrix(
    runtime: Runtime,
    client: TestClient,
    make_key: KeyMaker,
    console_client: TestClient,
) -> None:
    world = World(runtime, client, make_key)
    credentials = Credentials(world, make_key, console_client)
    problems: list[str] = []
    for route in ROUTES:
        world.make_room()
        # Every call gets its own objects, made before any is sent, so that the
        # denied calls can be sent together between two fingerprints.
        calls = {credential: route.prepare(world) for credential in CREDENTIALS}
        expected = {
            credential: expected_status(route, credential) for credential in CREDENTIALS
        }
        denied = [
            credential for credential in CREDENTIALS if expected[credential] >= 400
        ]
        allowed = [credential for credential in CREDENTIALS if credential not in denied]
        before = database_fingerprint(runtime)
        for credential in denied:
            response = credentials.send(credential, route.method, calls[credential])
            problems += check_response(
                route, credential, response, expected[credential]
            )
        if database_fingerprint(runtime) != before:
            problems.append(
                f"{route.method} {route.path}: a call denied to one of {denied} "
                "changed the database"
            )
        for credential in allowed:
            response = credentials.send(credential, route.method, calls[credential])
            problems += check_response(
                route, credential, response, expected[credential]
            )
    assert not problems, "\n".join(problems)


def _app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route of the app, HEAD left out."""
    # FastAPI 0.165 nests included routers in `app.routes`, and its
    # `iter_route_contexts` lists their routes flat. Older versions list them flat.
    iterate = getattr(routing, "iter_route_contexts", None)
    listed: Iterable[Any] = iterate(app.routes) if iterate else app.routes
    found = set()
    for route in listed:
        methods = getattr(route, "methods", None) or ()
        found |= {(method, route.path) for method in methods if method != "HEAD"}
    return found


def test_every_api_route_has_a_row(sqlite_url: str, tmp_path: Any) -> None:
    app = create_app(make_settings(sqlite_url, tmp_path))
    api_routes = {
        (method, path)
        for method, path in _app_routes(app)
        if not path.startswith("/console") and path not in PUBLIC_PATHS
    }
    rows = {(route.method, route.path) for route in ROUTES}
    assert api_routes - rows == set(), "API routes without a row in ROUTES"
    assert rows - api_routes == set(), "rows in ROUTES that name no route"
    assert len(rows) == len(ROUTES), "a route has two rows"


def test_revoked_key_rejected_after_use(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    """A key already in the lookup cache stops working as soon as it is revoked,
    whether in this process or elsewhere once the cache is cleared."""
    for revoke_here in (True, False):
        value = make_key("orders.read")
        headers = {"X-API-KEY": value}
        assert client.get(ORDERS, headers=headers).status_code == 200
        if revoke_here:
            # revoke_api_key drops this process's cache entry itself.
            with runtime.session_factory() as session, session.begin():
                revoke_api_key(session, value)
        else:
            # As the CLI or another process would: this cache hears nothing of it.
            with runtime.engine.begin() as connection:
                connection.execute(
                    ApiKey.__table__.update()
                    .where(ApiKey.key_hash == hash_secret(value))
                    .values(revoked_at=text("CURRENT_TIMESTAMP"))
                )
            key_cache.clear()
        response = client.get(ORDERS, headers=headers)
        assert response.status_code == 401, revoke_here
        assert response.json()["code"] == "key_revoked", revoke_here


# Console pages: an API key opens none of them.

CONSOLE_PATH_VALUES = {
    "order_id": "order",
    "refund_id": "refund",
    "endpoint_id": "endpoint",
    "delivery_id": "delivery",
    "job_id": "job",
    "key_id": "key",
    "name": "mail",
    "rest": "no-such-page",
}


def _console_routes(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method, path)
        for method, path in _app_routes(app)
        if path.startswith("/console") and not path.startswith("/console/static")
    )


def test_api_key_opens_no_console_page(
    app: FastAPI, runtime: Runtime, api_key: str
) -> None:
    seeded = console_data.seed(runtime)
    with runtime.session_factory() as session:
        key_id = session.scalars(select(ApiKey.id)).first()
    ids = {
        "order": seeded.order_id,
        "refund": seeded.refund_ids[0],
        "endpoint": seeded.endpoint_id,
        "delivery": seeded.delivery_id,
        "job": str(seeded.job_id),
        "key": str(key_id),
        "mail": "message.eml",
        "no-such-page": "no-such-page",
    }
    cookie_name = session_cookie(runtime.settings)
    ways = {
        "header": {"X-API-KEY": api_key},
        "raw authorization": {"Authorization": api_key},
        "bearer": {"Authorization": f"Bearer {api_key}"},
        "cookie": {"Cookie": f"{cookie_name}={api_key}"},
    }
    routes = _console_routes(app)
    assert ("GET", "/console/orders") in routes
    problems = []
    for method, template in routes:
        path = template
        for name, kind in CONSOLE_PATH_VALUES.items():
            path = path.replace(f"{{{name}}}", ids[kind]).replace(
                f"{{{name}:path}}", ids[kind]
            )
        # Fresh clients, so no cookie carries over; no `with`, as in console_client.
        anonymous = TestClient(app, raise_server_exceptions=False)
        baseline = anonymous.request(method, path, follow_redirects=False)
        for way, headers in ways.items():
            keyed = TestClient(app, raise_server_exceptions=False)
            response = keyed.request(
                method, path, headers=headers, follow_redirects=False
            )
            seen = (response.status_code, response.headers.get("location"))
            unseen = (baseline.status_code, baseline.headers.get("location"))
            if seen != unseen:
                problems.append(f"{method} {path} by {way}: {seen}, no key: {unseen}")
            if response.status_code == 200 and not path.startswith("/console/login"):
                problems.append(f"{method} {path} by {way}: opened with {way}")
            if f"{cookie_name}=" in response.headers.get("set-cookie", ""):
                problems.append(f"{method} {path} by {way}: set a session cookie")
    assert not problems, "\n".join(problems)
