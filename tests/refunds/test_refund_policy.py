"""Refund policy from the settings: automatic acceptance below an amount, and the
length of the return window."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.refunds.helpers import jobs_of, refund_request, shipped_order
from tests.shipping.helpers import tracking

from orderdesk.config import load_settings
from orderdesk.orders.models import Order
from orderdesk.runtime import Runtime


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"refund_auto_accept_below": Decimal("20.00"), "return_window_days": 5}


def test_small_refund_accepted_at_once(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=1)
    # Line item 0 totals 15.88, under the 20.00 limit.
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "Too small"}, key=api_key
    )
    assert response.status_code == 201, response.text
    refund = response.json()
    assert refund["amount"]["amount"] == "15.88"
    assert refund["status"] == "refund-request-accepted"
    assert refund["returnLabel"]["carrierName"] == "USPS"
    initiated, accepted = refund["history"]
    assert initiated["actor"].startswith("api_key:")
    assert accepted["actor"] == "system"
    [parcel] = [p for p in tracking(client, api_key, order.id) if p["kind"] == "return"]
    assert parcel["packageTracking"] == refund["returnLabel"]
    [mail] = jobs_of(runtime, "mail.send")
    assert mail.payload["kind"] == "refund_accepted"


def test_larger_refund_awaits_review(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=1)
    # Line item 1 totals 27.88, over the limit.
    response = refund_request(
        client, order.id, {"lineItem": 1, "reason": "Too big"}, key=api_key
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "refund-request-initiated"
    assert jobs_of(runtime, "refund.return_label") == []


def test_configured_window_closes_returns(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=6)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "Late"}, key=api_key
    )
    assert response.status_code == 409
    assert response.json()["code"] == "return_window_expired"


def test_policy_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERDESK_REFUND_AUTO_ACCEPT_BELOW", "12.50")
    monkeypatch.setenv("ORDERDESK_PAYOUT_RETRY_SECONDS", "7")
    settings = load_settings()
    assert settings.refund_auto_accept_below == Decimal("12.50")
    assert settings.payout_retry_seconds == 7.0
    monkeypatch.delenv("ORDERDESK_REFUND_AUTO_ACCEPT_BELOW")
    assert load_settings().refund_auto_accept_below is None


def test_no_address_skips_auto_accept(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=1)
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(Order)
            .where(Order.id == order.id)
            .values(recipient={"email": "buyer@example.com"})
        )
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "Too small"}, key=api_key
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "refund-request-initiated"
    assert jobs_of(runtime, "refund.return_label") == []
