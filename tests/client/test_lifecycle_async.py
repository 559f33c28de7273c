"""The async client against a live server: every resource method it shares with
the sync client, end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from tests.client.helpers import (
    ORDER_TOTAL,
    TRACKING_NUMBER,
    order_arguments,
    send_transaction_request,
    signed_transfer,
    transaction_id,
)
from tests.conftest import LiveServer

from orderdesk.client import (
    AsyncOrderDesk,
    Conflict,
    CreatedOrder,
    DraftOrder,
    Forbidden,
    NotFound,
    Order,
)

pytestmark = pytest.mark.anyio


async def pay(sdk: AsyncOrderDesk, wallet: LocalAccount, order: Order) -> Order:
    assert order.payment.preparation is not None, order.payment
    raw = signed_transfer(wallet, order.payment.preparation)
    async with httpx.AsyncClient(base_url=sdk.base_url, timeout=30) as http:
        reply = await http.post("/devnet/rpc", json=send_transaction_request(raw))
    return await sdk.orders.pay(order.order_id, transaction_id(reply))


async def delivered_order(sdk: AsyncOrderDesk, wallet: LocalAccount) -> Order:
    created = await sdk.orders.create(**order_arguments(wallet.address))
    paid = await pay(sdk, wallet, created.order)
    assert paid.payment.status == "completed", paid.payment
    package = await sdk.shipments.create(
        paid.order_id,
        carrier_name="UPS",
        tracking_number=TRACKING_NUMBER,
        line_items=[0, 1],
    )
    assert package.package_id is not None
    await sdk.shipments.add_event(
        paid.order_id,
        package.package_id,
        status="delivered",
        occurred_at=datetime.now(UTC) - timedelta(hours=3),
    )
    return await sdk.orders.get(paid.order_id)


async def test_async_create_get_update(server: LiveServer, api_key: str) -> None:
    async with AsyncOrderDesk(api_key, base_url=server.url) as sdk:
        created = await sdk.orders.create(**order_arguments())
        assert isinstance(created, CreatedOrder)
        order = created.order
        assert order.quote.total_price is not None
        assert order.quote.total_price.amount == ORDER_TOTAL

        fetched = await sdk.orders.get(order.order_id)
        assert fetched.order_id == order.order_id
        updated = await sdk.orders.update(order.order_id, locale="es-ES")
        assert updated.locale == "es-ES"

        draft = await sdk.orders.create(**order_arguments(), state="draft")
        assert isinstance(draft, DraftOrder)
        assert draft.order.order_id is None
        with pytest.raises(NotFound):
            await sdk.orders.get("00000000-0000-4000-8000-000000000000")


async def test_async_list_and_iterate(server: LiveServer, api_key: str) -> None:
    async with AsyncOrderDesk(api_key, base_url=server.url) as sdk:
        ids = []
        for _ in range(3):
            created = await sdk.orders.create(**order_arguments())
            ids.append(created.order.order_id)
        newest_first = list(reversed(ids))

        page = await sdk.orders.list(limit=2)
        assert [order.order_id for order in page.data] == newest_first[:2]
        assert page.next_cursor is not None
        iterated = [order.order_id async for order in sdk.orders.iterate(limit=2)]
        assert iterated == newest_first


async def test_async_pay_ship_track(
    server: LiveServer, api_key: str, wallet: LocalAccount
) -> None:
    async with AsyncOrderDesk(api_key, base_url=server.url) as sdk:
        created = await sdk.orders.create(**order_arguments(wallet.address))
        paid = await pay(sdk, wallet, created.order)
        assert paid.payment.status == "completed"
        assert paid.payment.received is not None
        assert paid.payment.received.amount == ORDER_TOTAL

        package = await sdk.shipments.create(
            paid.order_id,
            carrier_name="UPS",
            tracking_number=TRACKING_NUMBER,
            line_items=[0],
        )
        assert package.package_id is not None
        assert await sdk.tracking.get(paid.order_id) == [package]
        shipped = await sdk.shipments.add_event(
            paid.order_id,
            package.package_id,
            status="shipped",
            occurred_at="2026-03-01T17:05:09.120Z",
            location="Newark, NJ",
            delivery_time_range={"lowerBound": None, "upperBound": None},
        )
        assert shipped.status == "shipped"
        assert shipped.events[0].occurred_at == datetime(
            2026, 3, 1, 17, 5, 9, 120000, tzinfo=UTC
        )

        tracking = await sdk.tracking.get(paid.order_id)
        assert [entry.status for entry in tracking] == ["shipped"]
        order = await sdk.orders.get(paid.order_id)
        assert order.line_items[0].delivery is not None
        assert order.line_items[0].delivery.status == "in-progress"


async def test_async_refunds_and_review(
    server: LiveServer, api_key: str, wallet: LocalAccount
) -> None:
    async with AsyncOrderDesk(api_key, base_url=server.url) as sdk:
        order = await delivered_order(sdk, wallet)
        first = await sdk.refunds.create(
            order.order_id, line_item=0, reason="Dented.", idempotency_key="async-1"
        )
        replay = await sdk.refunds.create(
            order.order_id, line_item=0, reason="Dented.", idempotency_key="async-1"
        )
        assert replay.refund_id == first.refund_id
        assert first.amount is not None
        assert isinstance(first.amount.amount, Decimal)
        with pytest.raises(Conflict) as reused:
            await sdk.refunds.create(
                order.order_id, line_item=0, reason="Other.", idempotency_key="async-1"
            )
        assert reused.value.code == "idempotency_key_reused"

        assert first.refund_id is not None
        rejected = await sdk.refunds.reject(
            order.order_id, first.refund_id, reason="Not dented in the photo."
        )
        assert rejected.status == "refund-request-rejected"
        second = await sdk.refunds.create(order.order_id, line_item=0, reason="Dented!")
        assert second.refund_id is not None
        accepted = await sdk.refunds.accept(order.order_id, second.refund_id)
        assert accepted.status == "refund-request-accepted"
        received = await sdk.refunds.received(order.order_id, second.refund_id)
        assert received.return_received_at is not None

        history = await sdk.refunds.list(order.order_id, line_item=0)
        assert [r.refund_id for r in history] == [first.refund_id, second.refund_id]
        assert await sdk.refunds.list(order.order_id, line_item=1) == []


async def test_async_client_secret_scope(server: LiveServer, api_key: str) -> None:
    async with AsyncOrderDesk(api_key, base_url=server.url) as sdk:
        created = await sdk.orders.create(**order_arguments())
    secret = created.client_secret
    async with AsyncOrderDesk(client_secret=secret, base_url=server.url) as buyer:
        order = await buyer.orders.get(created.order.order_id)
        assert order.order_id == created.order.order_id
        with pytest.raises(Forbidden):
            await buyer.orders.list()
