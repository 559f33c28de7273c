"""Reply models: aliases, unknown fields, Decimal amounts, aware datetimes; and how
request arguments are encoded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from orderdesk.client import (
    Order,
    OrderDesk,
    Package,
    PhysicalAddress,
    Recipient,
    Refund,
)
from orderdesk.client._encoding import format_time, to_json

ORDER = {
    "orderId": "9d1c3d8e-1111-4a5b-9c0d-123456789abc",
    "phase": "payment",
    "locale": "en-US",
    "lineItems": [
        {
            "chain": "devnet",
            "quantity": 1,
            "productLocator": "amazon:B08N5WRWNW",
            "metadata": {"name": "Bottle", "description": None, "imageUrl": None},
            "quote": {
                "status": "valid",
                "charges": {"unit": {"amount": "24.95", "currency": "usdc"}},
                "totalPrice": {"amount": "0.1", "currency": "usdc"},
            },
            "delivery": {"status": "awaiting-payment", "recipient": None},
            "giftWrap": True,
        }
    ],
    "quote": {
        "status": "valid",
        "quotedAt": "2026-03-01T17:05:09.120Z",
        "expiresAt": "2026-03-01T18:05:09.120Z",
        "totalPrice": {"amount": "115.38", "currency": "usdc"},
    },
    "payment": {"status": "awaiting-payment", "method": "devnet", "currency": "usdc"},
    "createdAt": "2026-03-01T17:05:09.120Z",
    "updatedAt": "2026-03-01T17:05:09.120Z",
    "loyaltyPoints": 12,
}


def test_unknown_fields_kept() -> None:
    order = Order.model_validate(ORDER)
    assert order.model_extra == {"loyaltyPoints": 12}
    assert order.line_items[0].model_extra == {"giftWrap": True}


def test_amounts_are_exact_decimals() -> None:
    order = Order.model_validate(ORDER)
    total = order.line_items[0].quote.total_price
    assert total is not None
    assert total.amount == Decimal("0.1")
    assert isinstance(total.amount, Decimal)
    assert order.quote.total_price is not None
    assert str(order.quote.total_price.amount) == "115.38"


def test_times_are_aware_utc() -> None:
    order = Order.model_validate(ORDER)
    assert order.quote.quoted_at == datetime(2026, 3, 1, 17, 5, 9, 120000, tzinfo=UTC)
    assert order.quote.quoted_at is not None
    assert order.quote.quoted_at.utcoffset() == timedelta(0)


def test_dump_by_alias_round_trips() -> None:
    order = Order.model_validate(ORDER)
    dumped = order.model_dump(by_alias=True, mode="json")
    assert dumped["orderId"] == ORDER["orderId"]
    assert dumped["loyaltyPoints"] == 12
    assert Order.model_validate(dumped) == order


def test_build_by_snake_case_name() -> None:
    recipient = Recipient(email="a@example.com", wallet_address="0x" + "ab" * 20)
    assert to_json(recipient) == {
        "email": "a@example.com",
        "walletAddress": "0x" + "ab" * 20,
    }


def test_missing_required_field_rejected() -> None:
    with pytest.raises(ValueError, match="orderId"):
        Order.model_validate({key: v for key, v in ORDER.items() if key != "orderId"})


def test_minimal_package_and_refund() -> None:
    package = Package.model_validate(
        {
            "status": "pending",
            "packageTracking": {"carrierName": "UPS", "carrierTrackingNumber": "1Z"},
        }
    )
    assert package.events == []
    assert package.delivery_time_range.lower_bound is None
    refund = Refund.model_validate(
        {"orderId": "o", "lineItem": 0, "status": "refund-request-initiated"}
    )
    assert refund.history == []


def test_to_json_encodes_values() -> None:
    at = datetime(2026, 3, 1, 19, 5, 9, 120000, tzinfo=timezone(timedelta(hours=2)))
    assert to_json({"at": at, "amount": Decimal("1.50"), "items": (1, None)}) == {
        "at": "2026-03-01T17:05:09.120000Z",
        "amount": "1.50",
        "items": [1, None],
    }
    with pytest.raises(TypeError, match="set"):
        to_json({"bad": {1, 2}})


def test_naive_datetime_rejected() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        format_time(datetime(2026, 3, 1, 17, 5))  # noqa: DTZ001 - the case tested


def test_model_argument_sent_by_alias() -> None:
    sent: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(200, json=ORDER)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    sdk = OrderDesk("sk_development_key", http_client=http)
    address = PhysicalAddress(name="Jordan Lee", postal_code="10118", country="US")
    sdk.orders.update(
        str(ORDER["orderId"]),
        recipient=Recipient(email="b@example.com", physical_address=address),
    )
    assert [json.loads(body) for body in sent] == [
        {
            "recipient": {
                "email": "b@example.com",
                "physicalAddress": {
                    "name": "Jordan Lee",
                    "postalCode": "10118",
                    "country": "US",
                },
            }
        }
    ]


def test_credentials_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORDERDESK_API_KEY", raising=False)
    with pytest.raises(ValueError, match="No credentials"):
        OrderDesk()
    monkeypatch.setenv("ORDERDESK_API_KEY", "sk_development_env")
    assert OrderDesk()._config.headers["X-API-KEY"] == "sk_development_env"


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host", "/api"])
def test_relative_base_url_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        OrderDesk("sk_development_key", base_url=url)
