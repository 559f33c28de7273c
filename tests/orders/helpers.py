"""Request bodies and calls shared by the order tests."""

from __future__ import annotations

import copy
from typing import Any

from fastapi.testclient import TestClient

from orderdesk.catalog.services import import_rows, sample_catalog_rows
from orderdesk.runtime import Runtime

ORDERS = "/api/2022-06-09/orders"
BOTTLE = "amazon:B08N5WRWNW"  # 24.95, shipping 3.50, stock 500
EARBUDS = "amazon:B0CHX1W1XY"  # 49.99, free shipping
DRIPPER = "amazon:B0C1234567"  # out of stock
CANDLE = "shopify:https://lumen-home.myshopify.com/products/soy-candle:39990001112234"
PAYER = "0x" + "ab" * 20

ADDRESS = {
    "name": "Jordan Lee",
    "line1": "350 Fifth Avenue",
    "city": "New York",
    "state": "NY",
    "postalCode": "10118",
    "country": "US",
}


def seed_catalog(runtime: Runtime) -> None:
    with runtime.session_factory() as session, session.begin():
        import_rows(session, sample_catalog_rows())


def order_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "recipient": {
            "email": "jordan@example.com",
            "physicalAddress": copy.deepcopy(ADDRESS),
        },
        "payment": {"method": "devnet", "currency": "usdc", "payerAddress": PAYER},
        "lineItems": [
            {"productLocator": BOTTLE, "quantity": 2},
            {"productLocator": EARBUDS},
        ],
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def create(client: TestClient, key: str, **changes: Any) -> dict[str, Any]:
    response = client.post(
        ORDERS, json=order_body(**changes), headers={"X-API-KEY": key}
    )
    assert response.status_code == 201, response.text
    return response.json()
