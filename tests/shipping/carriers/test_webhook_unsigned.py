"""With no secret configured, carrier webhooks are accepted unsigned."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.shipping.carriers.payloads import (
    WEBHOOKS,
    aftership_checkpoint,
    aftership_event,
    encode,
)
from tests.shipping.helpers import hours_ago, iso, new_paid_order, shipped, tracking

from orderdesk.runtime import Runtime

NAMES = (
    "carrier_easypost_secret",
    "carrier_shippo_secret",
    "carrier_shippo_token",
    "carrier_aftership_secret",
)


@pytest.fixture(autouse=True)
def _no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(f"ORDERDESK_{name.upper()}", raising=False)


def test_unsigned_webhook_accepted(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=1)
    shipped(client, api_key, order.id, [0], number="1Z999AA10123456784", carrier="UPS")
    when = iso(hours_ago(1))
    checkpoint = aftership_checkpoint("Delivered", when, "Delivered")
    body = encode(aftership_event("1Z999AA10123456784", [checkpoint]))
    response = client.post(
        f"{WEBHOOKS}/aftership",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1
    [package] = tracking(client, api_key, order.id)
    assert package["status"] == "delivered"
    assert package["deliveryTimeRange"] == {"lowerBound": when, "upperBound": when}
