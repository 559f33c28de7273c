import re
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.orders.helpers import (
    ADDRESS,
    BOTTLE,
    CANDLE,
    DRIPPER,
    ORDERS,
    create,
    order_body,
    seed_catalog,
)

from orderdesk.orders.models import Order, OrderEvent
from orderdesk.runtime import Runtime

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def _catalog(runtime: Runtime) -> None:
    seed_catalog(runtime)


def order_count(runtime: Runtime) -> int:
    with runtime.session_factory() as session:
        return session.scalar(select(func.count()).select_from(Order)) or 0


def test_create_prices_from_catalog(client: TestClient, api_key: str) -> None:
    answer = create(client, api_key)
    order = answer["order"]
    assert answer["clientSecret"]
    assert re.fullmatch(r"[0-9a-f-]{36}", order["orderId"])
    assert order["phase"] == "payment"
    assert order["locale"] == "en-US"
    bottle, earbuds = order["lineItems"]
    # 2 x 24.95 = 49.90; NY tax 8.5% = 4.2415 -> 4.24; shipping 2 x 3.50.
    assert bottle["quote"]["charges"] == {
        "unit": {"amount": "24.95", "currency": "usdc"},
        "salesTax": {"amount": "4.24", "currency": "usdc"},
        "shipping": {"amount": "7.00", "currency": "usdc"},
    }
    assert bottle["quote"]["totalPrice"] == {"amount": "61.14", "currency": "usdc"}
    assert bottle["quote"]["status"] == "valid"
    assert bottle["quantity"] == 2
    assert bottle["chain"] == "devnet"
    assert bottle["metadata"]["name"].startswith("Stainless Steel Water Bottle")
    assert bottle["delivery"]["status"] == "awaiting-payment"
    assert bottle["delivery"]["recipient"]["email"] == "jordan@example.com"
    # 49.99 + 8.5% (4.249 -> 4.25) + free shipping.
    assert earbuds["quote"]["totalPrice"]["amount"] == "54.24"
    assert order["quote"]["status"] == "valid"
    assert order["quote"]["totalPrice"] == {"amount": "115.38", "currency": "usdc"}
    assert ISO_MS.fullmatch(order["quote"]["quotedAt"])
    quoted = datetime.fromisoformat(order["quote"]["quotedAt"])
    expires = datetime.fromisoformat(order["quote"]["expiresAt"])
    assert expires - quoted == timedelta(hours=1)
    assert order["payment"]["method"] == "devnet"
    assert order["payment"]["currency"] == "usdc"
    assert ISO_MS.fullmatch(order["createdAt"])


def test_single_line_item_object(client: TestClient, api_key: str) -> None:
    order = create(client, api_key, lineItems={"productLocator": CANDLE})["order"]
    assert len(order["lineItems"]) == 1
    assert order["lineItems"][0]["quantity"] == 1
    assert order["lineItems"][0]["productLocator"] == CANDLE


def test_create_records_event(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = create(client, api_key)["order"]["orderId"]
    with runtime.session_factory() as session:
        kinds = list(
            session.scalars(
                select(OrderEvent.kind).where(OrderEvent.order_id == order_id)
            )
        )
    assert kinds == ["order.created"]


def test_missing_recipient_requires_recipient(client: TestClient, api_key: str) -> None:
    order = create(client, api_key, recipient=None)["order"]
    assert order["quote"]["status"] == "requires-recipient"
    assert order["phase"] == "quote"
    assert order["payment"]["status"] == "requires-quote"
    assert {item["quote"]["status"] for item in order["lineItems"]} == {
        "requires-recipient"
    }
    assert "salesTax" not in order["lineItems"][0]["quote"]["charges"]


def test_missing_address_requires_address(client: TestClient, api_key: str) -> None:
    order = create(client, api_key, recipient={"email": "a@example.com"})["order"]
    assert order["quote"]["status"] == "requires-physical-address"
    assert order["payment"]["status"] == "requires-quote"


def test_us_address_without_state(client: TestClient, api_key: str) -> None:
    address = {key: value for key, value in ADDRESS.items() if key != "state"}
    order = create(
        client,
        api_key,
        recipient={"email": "a@example.com", "physicalAddress": address},
    )["order"]
    assert order["quote"]["status"] == "requires-physical-address"


def test_non_us_address_has_no_state_and_no_tax(
    client: TestClient, api_key: str
) -> None:
    address = {
        "name": "Ana",
        "line1": "Calle 1",
        "city": "Madrid",
        "postalCode": "28001",
        "country": "es",
    }
    order = create(
        client,
        api_key,
        recipient={"email": "a@example.com", "physicalAddress": address},
    )["order"]
    assert order["quote"]["status"] == "valid"
    assert order["lineItems"][0]["quote"]["charges"]["salesTax"]["amount"] == "0.00"
    assert (
        order["lineItems"][0]["delivery"]["recipient"]["physicalAddress"]["country"]
        == "ES"
    )


def test_wallet_recipient_requires_email(client: TestClient, api_key: str) -> None:
    recipient = {"walletAddress": "0x" + "cd" * 20, "physicalAddress": ADDRESS}
    order = create(client, api_key, recipient=recipient)["order"]
    assert order["quote"]["status"] == "valid"
    assert order["payment"]["status"] == "requires-email"


def test_receipt_email_satisfies_email(client: TestClient, api_key: str) -> None:
    recipient = {"walletAddress": "0x" + "cd" * 20, "physicalAddress": ADDRESS}
    payment = {
        "method": "devnet",
        "currency": "usdc",
        "payerAddress": "0x" + "ab" * 20,
        "receiptEmail": "r@example.com",
    }
    order = create(client, api_key, recipient=recipient, payment=payment)["order"]
    assert order["payment"]["receiptEmail"] == "r@example.com"
    assert order["payment"]["status"] != "requires-email"


def test_no_payer_requires_payer_address(client: TestClient, api_key: str) -> None:
    order = create(client, api_key, payment={"method": "devnet", "currency": "usdc"})[
        "order"
    ]
    assert order["payment"]["status"] == "requires-crypto-payer-address"


def test_unfunded_payer_insufficient_funds(client: TestClient, api_key: str) -> None:
    order = create(client, api_key)["order"]
    assert order["payment"]["status"] == "crypto-payer-insufficient-funds"


def test_out_of_stock_item_unavailable(client: TestClient, api_key: str) -> None:
    items = [{"productLocator": DRIPPER}, {"productLocator": BOTTLE}]
    order = create(client, api_key, lineItems=items)["order"]
    dripper, bottle = order["lineItems"]
    assert dripper["quote"]["status"] == "item-unavailable"
    assert "totalPrice" not in dripper["quote"]
    assert bottle["quote"]["status"] == "valid"
    assert order["quote"]["status"] == "valid"
    assert (
        order["quote"]["totalPrice"]["amount"]
        == bottle["quote"]["totalPrice"]["amount"]
    )


def test_all_unavailable(client: TestClient, api_key: str) -> None:
    items = [{"productLocator": DRIPPER}, {"productLocator": "amazon:B000000000"}]
    order = create(client, api_key, lineItems=items)["order"]
    assert order["quote"]["status"] == "all-line-items-unavailable"
    assert order["quote"]["totalPrice"]["amount"] == "0.00"
    assert order["payment"]["status"] == "requires-quote"


def test_quantity_above_stock_unavailable(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    from orderdesk.catalog.services import import_rows

    with runtime.session_factory() as session, session.begin():
        import_rows(
            session,
            [
                {
                    "locator": "amazon:B00000000X",
                    "name": "Rare",
                    "price": "5",
                    "stock": 2,
                }
            ],
        )
    order = create(
        client,
        api_key,
        lineItems={"productLocator": "amazon:B00000000X", "quantity": 3},
    )
    assert order["order"]["quote"]["status"] == "all-line-items-unavailable"


def test_draft_is_not_stored(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    response = client.post(
        ORDERS, json=order_body(state="draft"), headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 200
    assert response.json()["clientSecret"] is None
    assert response.json()["order"]["orderId"] is None
    assert response.json()["order"]["quote"]["totalPrice"]["amount"] == "115.38"
    assert order_count(runtime) == 0


def test_expired_quote(client: TestClient, api_key: str, runtime: Runtime) -> None:
    answer = create(client, api_key)
    with runtime.session_factory() as session, session.begin():
        order = session.get(Order, answer["order"]["orderId"])
        assert order is not None
        order.expires_at = order.quoted_at - timedelta(seconds=1)
    got = client.get(
        f"{ORDERS}/{answer['order']['orderId']}", headers={"X-API-KEY": api_key}
    ).json()
    assert got["quote"]["status"] == "expired"
    assert got["phase"] == "quote"
    assert got["payment"]["status"] == "requires-quote"
    assert {item["quote"]["status"] for item in got["lineItems"]} == {"expired"}


BAD_BODIES = [
    ("unknown top-level field", {"extra": 1}),
    ("line items empty", {"lineItems": []}),
    ("too many line items", {"lineItems": [{"productLocator": BOTTLE}] * 21}),
    ("quantity zero", {"lineItems": [{"productLocator": BOTTLE, "quantity": 0}]}),
    ("quantity eleven", {"lineItems": [{"productLocator": BOTTLE, "quantity": 11}]}),
    ("quantity boolean", {"lineItems": [{"productLocator": BOTTLE, "quantity": True}]}),
    ("quantity float", {"lineItems": [{"productLocator": BOTTLE, "quantity": 1.0}]}),
    ("quantity string", {"lineItems": [{"productLocator": BOTTLE, "quantity": "1"}]}),
    ("quantity huge", {"lineItems": [{"productLocator": BOTTLE, "quantity": 10**30}]}),
    ("locator invalid", {"lineItems": [{"productLocator": "amazon:nope"}]}),
    (
        "locator token",
        {"lineItems": [{"productLocator": "polygon:0x" + "1" * 40 + ":1"}]},
    ),
    ("locator number", {"lineItems": [{"productLocator": 5}]}),
    (
        "line item unknown field",
        {"lineItems": [{"productLocator": BOTTLE, "price": "1"}]},
    ),
    ("payment missing", {"payment": None}),
    ("chain unknown", {"payment": {"method": "solana", "currency": "usdc"}}),
    ("currency unknown", {"payment": {"method": "devnet", "currency": "eur"}}),
    (
        "payer not hex",
        {"payment": {"method": "devnet", "currency": "usdc", "payerAddress": "0x12"}},
    ),
    (
        "payer bad checksum",
        {
            "payment": {
                "method": "devnet",
                "currency": "usdc",
                "payerAddress": "0xAbCdEf0000000000000000000000000000000001",
            }
        },
    ),
    (
        "receipt email invalid",
        {"payment": {"method": "devnet", "currency": "usdc", "receiptEmail": "nope"}},
    ),
    ("recipient email invalid", {"recipient": {"email": "not an email"}}),
    (
        "recipient unknown field",
        {"recipient": {"email": "a@example.com", "phone": "1"}},
    ),
    (
        "country invalid",
        {
            "recipient": {
                "email": "a@example.com",
                "physicalAddress": {**ADDRESS, "country": "USA"},
            }
        },
    ),
    (
        "state invalid",
        {
            "recipient": {
                "email": "a@example.com",
                "physicalAddress": {**ADDRESS, "state": "ZZ"},
            }
        },
    ),
    (
        "zip invalid",
        {
            "recipient": {
                "email": "a@example.com",
                "physicalAddress": {**ADDRESS, "postalCode": "ABC"},
            }
        },
    ),
    (
        "address line too long",
        {
            "recipient": {
                "email": "a@example.com",
                "physicalAddress": {**ADDRESS, "line1": "x" * 201},
            }
        },
    ),
    (
        "address control character",
        {
            "recipient": {
                "email": "a@example.com",
                "physicalAddress": {**ADDRESS, "city": "New\u0000York"},
            }
        },
    ),
    ("locale invalid", {"locale": "not a locale"}),
    ("state unknown", {"state": "publish"}),
]


@pytest.mark.parametrize(
    ("case", "changes"), BAD_BODIES, ids=[case for case, _ in BAD_BODIES]
)
def test_invalid_body_rejected(
    client: TestClient, api_key: str, runtime: Runtime, case: str, changes: dict
) -> None:
    response = client.post(
        ORDERS, json=order_body(**changes), headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] is True
    assert body["code"]
    assert body["message"]
    assert order_count(runtime) == 0


def test_invalid_body_lists_details(client: TestClient, api_key: str) -> None:
    changes = {"lineItems": [{"productLocator": BOTTLE, "quantity": True}]}
    body = client.post(
        ORDERS, json=order_body(**changes), headers={"X-API-KEY": api_key}
    ).json()
    assert body["details"] == [
        {"field": "lineItems.0.quantity", "message": "Input should be a valid integer"}
    ]


def test_unknown_chain_lists_supported(client: TestClient, api_key: str) -> None:
    changes = {"payment": {"method": "solana", "currency": "usdc"}}
    body = client.post(
        ORDERS, json=order_body(**changes), headers={"X-API-KEY": api_key}
    ).json()
    assert body["code"] == "unsupported_payment_method"
    assert "devnet" in body["message"]


def test_lowercase_payer_accepted(client: TestClient, api_key: str) -> None:
    payment = {"method": "devnet", "currency": "usdc", "payerAddress": "0x" + "ab" * 20}
    order = create(client, api_key, payment=payment)["order"]
    assert order["payment"]["status"] in (
        "crypto-payer-insufficient-funds",
        "awaiting-payment",
    )


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json; charset=utf-8", 201),
    ],
)
def test_content_type(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    content_type: str | None,
    status: int,
) -> None:
    import json

    headers = {"X-API-KEY": api_key}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post(ORDERS, content=json.dumps(order_body()), headers=headers)
    assert response.status_code == status, response.text
    assert order_count(runtime) == (1 if status == 201 else 0)


def test_body_over_limit(client: TestClient, api_key: str, runtime: Runtime) -> None:
    body = order_body(locale="en-US")
    body["padding"] = "x" * (64 * 1024)
    response = client.post(ORDERS, json=body, headers={"X-API-KEY": api_key})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert order_count(runtime) == 0


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"\xff\xfe", b"", b'"text"'])
def test_malformed_json(client: TestClient, api_key: str, raw: bytes) -> None:
    response = client.post(
        ORDERS,
        content=raw,
        headers={"X-API-KEY": api_key, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] is True
