"""Schema fuzzing: schemathesis sends generated requests to every operation of the
app's own OpenAPI document, in process, and checks each response against it.

Each operation gets the document's explicit examples and FUZZ_EXAMPLES generated
cases, schema-valid and schema-invalid, with an API key holding every scope, then
NO_KEY_EXAMPLES cases with no credential. Every response must be below 500, have a
status code the operation documents, the documented content type and headers, and
a body that matches the documented schema. An error response must be the API's
error body, and schema-invalid input must be rejected with a 4xx.

Half the cases use the ids of seeded objects (orders, packages, refunds, webhook
endpoints and deliveries), so that they reach the services and not only the 404 of
an unknown id.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from tests import factories
from tests.conftest import POSTGRES_URL, make_settings, require_postgres
from tests.orders.helpers import order_body, seed_catalog
from tests.shipping.carriers import payloads
from tests.shipping.helpers import hours_ago, iso

from orderdesk.app import create_app
from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.auth.services import create_api_key, get_or_create_project
from orderdesk.openapi import ERROR_CODE_PATTERN
from orderdesk.runtime import Runtime
from orderdesk.shipping.carriers import PROVIDERS
from orderdesk.webhooks.models import DeliveryStatus, WebhookDelivery

# Generated cases per operation with the API key. A full run raises it, e.g.
# ORDERDESK_FUZZ_EXAMPLES=2000.
FUZZ_EXAMPLES = int(os.environ.get("ORDERDESK_FUZZ_EXAMPLES", "200"))
# Without a key every API route returns 401 before it reads any input, so a quarter
# of the cases is enough there.
NO_KEY_EXAMPLES = max(FUZZ_EXAMPLES // 4, 1)

ORDERS = "/api/2022-06-09/orders"
UNSTABLE = "/api/unstable"
PAYER = factories.PAYER
HOOK_URL = "http://127.0.0.1:9/orderdesk-hooks"  # no worker runs, so never called
TRACKING_NUMBER = "1Z999AA10123456784"

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Cases sent, by (database, credential, operation, status code), for the summary
# test at the end.
CASES_SENT: Counter[tuple[str, str, str, int]] = Counter()
# The (database, credential, operation) of each fuzz test that started.
FUZZ_TESTS_RUN: set[tuple[str, str, str]] = set()


@dataclass
class Seeded:
    """The objects written before fuzzing, which cases address by their ids."""

    # Paid, with one package holding its line item, which tracking cases move.
    shipped_order: str
    # Paid, with one package holding its 5 line items and refunds of 4 of them.
    refund_order: str
    paid_order: str
    # Created through the API from catalog products, not paid.
    unpaid_order: str
    package: str
    # Refunds only accept and return-received get, and one only reject gets, so
    # that the example of each finds a refund it can move.
    refunds: list[str]
    rejectable_refund: str
    deliveries: dict[str, list[str]]  # by webhook endpoint id
    # Endpoints only DELETE gets, so that it cannot remove the others mid-run.
    disposable_endpoints: list[str]

    def path_parameters(self, method: str, path: str) -> list[dict[str, str]]:
        """Return sets of real ids for the operation's path, each naming related
        objects. The first, used in the operation's example, is one it can succeed
        on."""
        if "{refundId}" in path:
            refunds = self.refunds
            if path.endswith("/reject"):
                refunds = [self.rejectable_refund]
            order = self.refund_order
            return [{"orderId": order, "refundId": refund} for refund in refunds]

        if "{packageId}" in path:
            return [{"orderId": self.shipped_order, "packageId": self.package}]

        if "{deliveryId}" in path:
            return [
                {"endpointId": endpoint, "deliveryId": delivery}
                for endpoint, deliveries in self.deliveries.items()
                for delivery in deliveries
            ]

        if "{endpointId}" in path:
            endpoints = list(self.deliveries)
            if method == "delete":
                endpoints = self.disposable_endpoints
            return [{"endpointId": endpoint} for endpoint in endpoints]

        orders = [self.shipped_order, self.paid_order, self.unpaid_order]
        if method == "patch" or path.endswith("/payment"):
            orders.reverse()
        if path.endswith("/refunds"):
            orders.insert(0, self.refund_order)
        for name in ("orderId", "order_id"):
            if "{" + name + "}" in path:
                return [{name: order} for order in orders]

        if "{provider}" in path:
            return [{"provider": provider} for provider in PROVIDERS]
        return []


@dataclass
class FuzzTarget:
    database: str
    app: FastAPI
    runtime: Runtime
    api_key: str
    seeded: Seeded
    document: dict[str, Any]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    """One app per database for the whole module, seeded with real objects."""
    tmp_path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with _database_url(request.param, tmp_path) as url:
        runtime = Runtime.build(make_settings(url, tmp_path))
        runtime.start()
        app = create_app(runtime=runtime)
        try:
            api_key = _all_scopes_key(runtime)
            seeded = _seed(app, runtime, api_key)
            document = fuzz_document(app.openapi(), seeded)
            yield FuzzTarget(request.param, app, runtime, api_key, seeded, document)
        finally:
            # schemathesis keeps the app's lifespan running between calls; end it
            # here, before the database goes away.
            shutdown_lifespans()
            runtime.close()


@contextmanager
def _database_url(database: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if database == "sqlite":
        yield f"sqlite:///{tmp_path / 'orderdesk.db'}"
        return
    require_postgres()
    schema_name = f"fuzz_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema_name}"'))
    url = make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema_name}"}
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


def _all_scopes_key(runtime: Runtime) -> str:
    with runtime.session_factory() as session, session.begin():
        project = get_or_create_project(session, runtime.settings, "test-project")
        _key, value = create_api_key(
            session, project, runtime.settings.environment, list(ALL_SCOPES)
        )
    return value


def _seed(app: FastAPI, runtime: Runtime, key: str) -> Seeded:
    """Write the objects the fuzzed ids point at, through the API where it can."""
    seed_catalog(runtime)
    headers = {"X-API-KEY": key}
    # No `with`: the runtime has started already, and the lifespan must not run here.
    client = TestClient(app, raise_server_exceptions=False)

    def post(path: str, body: dict[str, Any], expected: int = 201) -> Any:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == expected, response.text
        return response.json()

    endpoints = [
        post(f"{UNSTABLE}/webhooks", {"url": HOOK_URL, "events": ["*"]})["id"]
        for _ in range(5)
    ]
    # The quote.created event of this order gives every endpoint a delivery.
    unpaid = post(ORDERS, order_body())["order"]["orderId"]
    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        shipped = factories.make_paid_order(session, owner).id
        paid = factories.make_paid_order(session, owner).id
        specs = [factories.line_item() for _ in range(5)]
        refunded = factories.make_paid_order(session, owner, specs).id
        factories.make_package(session, refunded, [0, 1, 2, 3, 4])
    package = post(
        f"{UNSTABLE}/orders/{shipped}/shipments",
        {
            "carrierName": "UPS",
            "carrierTrackingNumber": TRACKING_NUMBER,
            "lineItems": [0],
        },
    )["packageId"]
    post(
        f"{UNSTABLE}/orders/{shipped}/shipments/{package}/events",
        {"status": "shipped", "occurredAt": iso(hours_ago(2))},
    )
    refunds = [
        post(
            f"{UNSTABLE}/orders/{refunded}/refunds",
            {"lineItem": index, "reason": "It arrived broken."},
        )["refundId"]
        for index in range(4)
    ]
    deliveries: dict[str, list[str]] = {endpoint: [] for endpoint in endpoints[:3]}
    with runtime.session_factory() as session, session.begin():
        for row in session.scalars(select(WebhookDelivery)):
            if row.endpoint_id in deliveries and len(deliveries[row.endpoint_id]) < 2:
                deliveries[row.endpoint_id].append(row.delivery_id)
                # No worker runs, so mark it failed for good: then it can be resent.
                row.status = DeliveryStatus.FAILED
    assert all(deliveries.values()), "the seeded order made no webhook delivery"
    return Seeded(
        shipped_order=shipped,
        refund_order=refunded,
        paid_order=paid,
        unpaid_order=unpaid,
        package=package,
        refunds=refunds[:3],
        rejectable_refund=refunds[3],
        deliveries=deliveries,
        disposable_endpoints=endpoints[3:],
    )


def fuzz_document(document: dict[str, Any], seeded: Seeded) -> dict[str, Any]:
    """Copy the app's document and give each operation a valid example with real
    ids. Only requests change: responses are checked against the app's document."""
    fuzzed = copy.deepcopy(document)
    for path, path_item in fuzzed["paths"].items():
        for method, operation in path_item.items():
            real = seeded.path_parameters(method, path)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and real:
                    parameter["example"] = real[0][parameter["name"]]
            example = BODY_EXAMPLES.get((method, path))
            content = operation.get("requestBody", {}).get("content", {})
            if example is not None and "application/json" in content:
                content["application/json"]["example"] = example()
    return fuzzed


def case_strategy(
    operation: schemathesis.APIOperation, real: list[dict[str, str]]
) -> st.SearchStrategy[schemathesis.Case]:
    """Draw half the cases with generated path ids and half with seeded ones, each
    half both schema-valid and schema-invalid."""
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    generated = st.one_of([operation.as_strategy(mode) for mode in modes])
    if not real:
        return generated
    # With the path fixed, only a body or query is left to make invalid.
    if not (len(operation.body) or len(operation.query)):
        modes = (GenerationMode.POSITIVE,)
    seeded = st.one_of(
        [
            operation.as_strategy(mode, path_parameters=ids)
            for ids in real
            for mode in modes
        ]
    )
    return st.one_of(generated, seeded)


BODY_EXAMPLES: dict[tuple[str, str], Any] = {
    ("post", ORDERS): order_body,
    ("patch", ORDERS + "/{order_id}"): lambda: {"locale": "en-GB"},
    ("post", ORDERS + "/{order_id}/payment"): lambda: {
        "type": "crypto-tx-id",
        "txId": "0x" + "ab" * 32,
    },
    ("post", UNSTABLE + "/orders/{orderId}/shipments"): lambda: {
        "carrierName": "USPS",
        "carrierTrackingNumber": "9400100000000000000000",
        "lineItems": [0],
    },
    ("post", UNSTABLE + "/orders/{orderId}/shipments/{packageId}/events"): lambda: {
        "status": "out-for-delivery",
        "occurredAt": iso(hours_ago(1)),
    },
    ("post", UNSTABLE + "/orders/{orderId}/refunds"): lambda: {
        "lineItem": 4,
        "reason": "Wrong colour.",
    },
    ("post", UNSTABLE + "/orders/{orderId}/refunds/{refundId}/reject"): lambda: {
        "reason": "Outside the policy."
    },
    ("post", UNSTABLE + "/webhooks"): lambda: {
        "url": HOOK_URL,
        "events": ["orders.quote.created"],
    },
    ("patch", UNSTABLE + "/webhooks/{endpointId}"): lambda: {"description": "Ops"},
    ("post", "/devnet/faucet"): lambda: {"address": PAYER, "usdc": "5"},
    # EasyPost, the first provider, on the seeded package's tracking number.
    ("post", "/webhooks/carriers/{provider}"): lambda: payloads.easypost_event(
        TRACKING_NUMBER,
        [payloads.easypost_detail("in_transit", iso(hours_ago(1)), "Departed")],
    ),
    ("post", "/devnet/rpc"): lambda: {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_blockNumber",
    },
}


@pytest.fixture(params=["api_key", "no_key"])
def credential(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _document_operations() -> list[tuple[str, str]]:
    """List (method, path) of every operation, from an app built only to read its
    document, so that pytest can name one test per operation."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(f"sqlite:///{tmp}/unused.db", Path(tmp))
        document = create_app(settings).openapi()
    return [
        (method, path) for path, item in document["paths"].items() for method in item
    ]


OPERATIONS = _document_operations()
_CODE = re.compile(ERROR_CODE_PATTERN)


@pytest.mark.parametrize(
    ("method", "path"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p in OPERATIONS]
)
def test_operation_conforms(
    fuzz_target: FuzzTarget, credential: str, method: str, path: str
) -> None:
    schema = schemathesis.openapi.from_dict(
        copy.deepcopy(fuzz_target.document), config=schemathesis.Config()
    )
    operation = schema[path][method.upper()]
    headers = {"X-API-KEY": fuzz_target.api_key} if credential == "api_key" else {}
    checks = CHECKS
    if path == "/devnet/rpc":
        # JSON-RPC returns an error object in a 200 for a body it cannot parse, as
        # Ethereum nodes do, so invalid input is not rejected with a 4xx there.
        checks = [check for check in CHECKS if check is not negative_data_rejection]

    FUZZ_TESTS_RUN.add((fuzz_target.database, credential, operation.label))

    def check(case: schemathesis.Case) -> None:
        response = case.call(headers=headers, app=fuzz_target.app)
        key = (fuzz_target.database, credential, operation.label, response.status_code)
        CASES_SENT[key] += 1
        case.validate_response(response, checks=checks, headers=headers)
        check_error_body(case, response.status_code, response.json, credential)

    real = fuzz_target.seeded.path_parameters(method, path)
    count = FUZZ_EXAMPLES if credential == "api_key" else NO_KEY_EXAMPLES
    runs = [(case_strategy(operation, real), count)]
    examples = operation.get_strategies_from_examples()
    if examples:
        runs.insert(0, (st.one_of(examples), 10))
    for strategy, count in runs:
        run = settings(
            max_examples=count,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(given(case=strategy)(check))
        run()


def check_error_body(
    case: schemathesis.Case, status_code: int, body: Any, credential: str
) -> None:
    """Check that an error response is the API's error body, and that no request
    without a key succeeds, except on the routes that take none."""
    if status_code >= 400:
        content = body()
        assert content["error"] is True, content
        assert isinstance(content["message"], str), content
        assert content["message"], content
        assert _CODE.fullmatch(content["code"]), content
    elif credential == "no_key":
        assert case.path.startswith(("/devnet/", "/webhooks/carriers/")), case.path


def test_every_operation_fuzzed(fuzz_target: FuzzTarget, credential: str) -> None:
    """The tests above cover every operation of the app's document, and each one
    that ran sent cases. With -s it prints the responses by status code."""
    labels = {
        f"{method.upper()} {path}"
        for path, item in fuzz_target.document["paths"].items()
        for method in item
    }
    assert labels == {f"{method.upper()} {path}" for method, path in OPERATIONS}
    ran = {
        label
        for database, used, label in FUZZ_TESTS_RUN
        if database == fuzz_target.database and used == credential
    }
    if not ran:
        pytest.skip("the fuzz tests did not run for this database and credential")
    sent: dict[str, Counter[int]] = {}
    for (database, used, label, status_code), count in CASES_SENT.items():
        if database == fuzz_target.database and used == credential:
            sent.setdefault(label, Counter())[status_code] += count
    print(f"\nresponses on {fuzz_target.database} with {credential}:")
    for label in sorted(ran):
        statuses = sent.get(label, Counter())
        shown = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
        print(f"  {statuses.total():5d}  {label}  ({shown})")
    assert set(sent) == ran, "a fuzz test sent no case"
