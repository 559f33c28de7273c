"""The webhooks resource against a live server, and `verify` on what it delivers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from tests.client.conftest import Receiver
from tests.client.helpers import paid_order, run_jobs_until
from tests.conftest import LiveServer

from orderdesk.client import (
    AsyncOrderDesk,
    BadRequest,
    NotFound,
    OrderDesk,
    WebhookEndpoint,
)
from orderdesk.client.webhooks import WebhookVerificationError, verify
from orderdesk.runtime import Runtime

PAYMENT_SUCCEEDED = "orders.payment.succeeded"


def received_count(receiver: Receiver, count: int) -> Callable[[], bool]:
    return lambda: len(receiver.requests) >= count


def test_endpoint_create_list_update_delete(sdk: OrderDesk, receiver: Receiver) -> None:
    created = sdk.webhooks.create(receiver.url, [PAYMENT_SUCCEEDED], "ERP")

    assert isinstance(created, WebhookEndpoint)
    assert created.secret is not None
    assert created.secret.startswith("whsec_")
    assert created.events == [PAYMENT_SUCCEEDED]
    assert created.description == "ERP"
    listed = sdk.webhooks.list()
    assert [endpoint.id for endpoint in listed] == [created.id]
    assert listed[0].secret is None
    assert sdk.webhooks.get(created.id).url == receiver.url

    updated = sdk.webhooks.update(created.id, events=["*"])
    assert updated.events == ["*"]
    assert updated.description == "ERP"
    cleared = sdk.webhooks.update(created.id, description=None)
    assert cleared.description is None
    assert cleared.events == ["*"]
    with pytest.raises(BadRequest) as raised:
        sdk.webhooks.update(created.id, events=["orders.unknown"])
    assert raised.value.details
    assert sdk.webhooks.get(created.id).events == ["*"]

    sdk.webhooks.delete(created.id)
    with pytest.raises(NotFound):
        sdk.webhooks.get(created.id)
    assert sdk.webhooks.list() == []


def test_deliveries_resend_and_rotate(
    sdk: OrderDesk, receiver: Receiver, wallet: LocalAccount, runtime: Runtime
) -> None:
    endpoint = sdk.webhooks.create(receiver.url, [PAYMENT_SUCCEEDED])
    assert endpoint.secret is not None
    order = paid_order(sdk, wallet)

    run_jobs_until(runtime, received_count(receiver, 1))
    first = receiver.requests[0]
    event = verify(first.body, first.headers, endpoint.secret)
    assert event["type"] == PAYMENT_SUCCEEDED
    assert event["data"]["orderId"] == order.order_id

    page = sdk.webhooks.deliveries(endpoint.id)
    assert len(page.data) == 1
    delivery = page.data[0]
    assert delivery.status == "delivered"
    assert delivery.event_type == PAYMENT_SUCCEEDED
    assert delivery.payload["data"]["orderId"] == order.order_id
    assert [attempt.succeeded for attempt in delivery.attempts] == [True]
    assert sdk.webhooks.deliveries(endpoint.id, status="failed").data == []

    rotated = sdk.webhooks.rotate_secret(endpoint.id)
    assert rotated.secret is not None
    assert rotated.secret != endpoint.secret
    assert rotated.previous_secret_expires_at is not None

    resent = sdk.webhooks.resend(endpoint.id, delivery.delivery_id)
    assert resent.delivery_id == delivery.delivery_id
    assert resent.status == "pending"
    run_jobs_until(runtime, received_count(receiver, 2))
    second = receiver.requests[1]
    # For 24 hours after a rotation both secrets sign each attempt.
    assert verify(second.body, second.headers, rotated.secret) == event
    assert verify(second.body, second.headers, endpoint.secret) == event
    with pytest.raises(WebhookVerificationError):
        verify(second.body + b" ", second.headers, rotated.secret)


@pytest.mark.anyio
async def test_async_endpoints_resource(server: LiveServer, api_key: str) -> None:
    async with AsyncOrderDesk(api_key, base_url=server.url) as sdk:
        created = await sdk.webhooks.create(
            "https://merchant.example.com/hooks", ["orders.refund.initiated"]
        )
        assert created.secret is not None
        assert [e.id for e in await sdk.webhooks.list()] == [created.id]
        fetched = await sdk.webhooks.get(created.id)
        assert fetched.events == ["orders.refund.initiated"]
        updated = await sdk.webhooks.update(created.id, description="Refund desk")
        assert updated.description == "Refund desk"
        rotated = await sdk.webhooks.rotate_secret(created.id)
        assert rotated.secret not in (None, created.secret)
        page = await sdk.webhooks.deliveries(created.id, limit=5)
        assert page.data == []
        await sdk.webhooks.delete(created.id)
        with pytest.raises(NotFound):
            await sdk.webhooks.resend(created.id, "del_missing")
