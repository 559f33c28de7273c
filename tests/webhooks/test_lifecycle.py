"""One order's whole life yields each webhook event once, in order, with the data
the API returned at that moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.orders.helpers import ORDERS, order_body, seed_catalog
from tests.webhooks.conftest import Receiver, create_endpoint, run_jobs_until

from orderdesk.demo import _pay  # the demo signs the prepared transaction
from orderdesk.orders.models import Order
from orderdesk.runtime import Runtime


class _DemoClient:
    """The demo's signing helper speaks through this TestClient adapter."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def call(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code == expected, response.text
        return response.json()


def test_lifecycle_events_once_in_order(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    headers = {"X-API-KEY": api_key}
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets.append(endpoint["secret"])
    seed_catalog(runtime)
    wallet = Account.create()
    client.post("/devnet/faucet", json={"address": wallet.address, "usdc": "500"})
    body = order_body(
        payment={"method": "devnet", "currency": "usdc", "payerAddress": wallet.address}
    )
    body["lineItems"] = [{"productLocator": "amazon:B08N5WRWNW"}]
    expected: list[tuple[str, Any]] = []

    created = client.post(ORDERS, json=body, headers=headers).json()
    order_id = created["order"]["orderId"]
    expected.append(("orders.quote.created", created["order"]))

    updated = client.patch(
        f"{ORDERS}/{order_id}", json={"locale": "en-GB"}, headers=headers
    ).json()
    expected.append(("orders.quote.updated", updated))

    tx_id = _pay(_DemoClient(client), "", wallet, updated)
    paid = client.post(
        f"{ORDERS}/{order_id}/payment",
        json={"type": "crypto-tx-id", "txId": tx_id},
        headers=headers,
    ).json()
    assert paid["payment"]["status"] == "completed"
    expected.append(("orders.payment.succeeded", paid))
    expected.append(("orders.delivery.initiated", paid))

    shipments = f"/api/unstable/orders/{order_id}/shipments"
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    package = client.post(
        shipments,
        json={
            "carrierName": "UPS",
            "carrierTrackingNumber": "1ZLIFE0001",
            "lineItems": [0],
        },
        headers=headers,
    ).json()
    expected.append(("orders.tracking.updated", package))
    delivered = client.post(
        f"{shipments}/{package['packageId']}/events",
        json={"status": "delivered", "occurredAt": an_hour_ago},
        headers=headers,
    ).json()
    expected.append(("orders.tracking.updated", delivered))
    after_delivery = client.get(f"{ORDERS}/{order_id}", headers=headers).json()
    expected.append(("orders.delivery.completed", after_delivery))

    refunds = f"/api/unstable/orders/{order_id}/refunds"
    first = client.post(
        refunds, json={"lineItem": 0, "reason": "Too small"}, headers=headers
    ).json()
    expected.append(("orders.refund.initiated", first))
    rejected = client.post(
        f"{refunds}/{first['refundId']}/reject",
        json={"reason": "Worn"},
        headers=headers,
    ).json()
    expected.append(("orders.refund.rejected", rejected))

    run_jobs_until(runtime, lambda: len(receiver.requests) >= len(expected), timeout=60)
    got = [(r.payload["type"], r.payload["data"]) for r in receiver.requests]
    assert [kind for kind, _ in got] == [kind for kind, _ in expected]
    for (kind, data), (_, want) in zip(got, expected, strict=True):
        # updatedAt of an order moves with any later change in the same request.
        assert data == want, kind
    assert all(r.verified_by == [endpoint["secret"]] for r in receiver.requests)
    with runtime.session_factory() as session:
        assert (
            session.scalar(select(Order.phase).where(Order.id == order_id))
            == "completed"
        )
