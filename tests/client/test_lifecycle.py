"""The sync client against a live server: orders, payment, shipping, refunds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from eth_account.signers.local import LocalAccount
from tests.client.helpers import (
    ORDER_TOTAL,
    TRACKING_NUMBER,
    delivered_order,
    order_arguments,
    pay,
    run_jobs_until,
)
from tests.conftest import KeyMaker, LiveServer
from tests.orders.helpers import PAYER

from orderdesk.client import (
    Conflict,
    CreatedOrder,
    DraftOrder,
    Forbidden,
    OrderDesk,
    Package,
    Refund,
)
from orderdesk.runtime import Runtime


def test_create_get_and_update(sdk: OrderDesk) -> None:
    created = sdk.orders.create(**order_arguments())

    assert isinstance(created, CreatedOrder)
    assert created.client_secret
    order = created.order
    assert uuid.UUID(order.order_id).version == 4
    assert order.phase == "payment"
    assert order.quote.status == "valid"
    assert order.quote.total_price is not None
    assert order.quote.total_price.amount == ORDER_TOTAL
    assert isinstance(order.quote.total_price.amount, Decimal)
    assert order.quote.expires_at is not None
    assert order.quote.expires_at.tzinfo is not None
    assert order.line_items[0].quantity == 2
    charges = order.line_items[0].quote.charges
    assert charges is not None
    assert charges.unit.amount == Decimal("24.95")
    assert order.payment.method == "devnet"
    # PAYER has no test USDC.
    assert order.payment.status == "crypto-payer-insufficient-funds"

    fetched = sdk.orders.get(order.order_id)
    assert fetched.order_id == order.order_id
    assert fetched.quote.total_price == order.quote.total_price

    payment = {
        "method": "devnet",
        "currency": "usdc",
        "payerAddress": PAYER,
        "receiptEmail": "receipts@example.com",
    }
    updated = sdk.orders.update(order.order_id, locale="fr-FR", payment=payment)
    assert updated.locale == "fr-FR"
    assert updated.payment.receipt_email == "receipts@example.com"
    assert sdk.orders.get(order.order_id).locale == "fr-FR"


def test_draft_is_not_stored(sdk: OrderDesk) -> None:
    draft = sdk.orders.create(**order_arguments(), state="draft")

    assert isinstance(draft, DraftOrder)
    assert draft.client_secret is None
    assert draft.order.order_id is None
    assert draft.order.quote.total_price is not None
    assert draft.order.quote.total_price.amount == ORDER_TOTAL
    assert sdk.orders.list().data == []


def test_list_and_iterate_pages(sdk: OrderDesk) -> None:
    ids = [sdk.orders.create(**order_arguments()).order.order_id for _ in range(3)]
    newest_first = list(reversed(ids))

    page = sdk.orders.list(limit=2)
    assert [order.order_id for order in page.data] == newest_first[:2]
    assert page.next_cursor is not None
    rest = sdk.orders.list(limit=2, cursor=page.next_cursor)
    assert [order.order_id for order in rest.data] == newest_first[2:]
    assert rest.next_cursor is None

    iterated = [order.order_id for order in sdk.orders.iterate(limit=1)]
    assert iterated == newest_first


def test_client_secret_reaches_order(
    sdk: OrderDesk, server: LiveServer, wallet: LocalAccount
) -> None:
    created = sdk.orders.create(**order_arguments(wallet.address))

    with OrderDesk(client_secret=created.client_secret, base_url=server.url) as buyer:
        order = buyer.orders.get(created.order.order_id)
        assert order.order_id == created.order.order_id
        with pytest.raises(Forbidden):
            buyer.orders.list()
        paid = pay(buyer, wallet, order)
        assert paid.payment.status == "completed"
        assert buyer.tracking.get(order.order_id) == []


def test_pay_ship_and_track(sdk: OrderDesk, wallet: LocalAccount) -> None:
    created = sdk.orders.create(**order_arguments(wallet.address))
    assert created.order.payment.status == "awaiting-payment"
    preparation = created.order.payment.preparation
    assert preparation is not None
    assert preparation.chain == "devnet"

    paid = pay(sdk, wallet, created.order)
    assert paid.payment.status == "completed"
    assert paid.phase == "delivery"
    assert paid.payment.received is not None
    assert paid.payment.received.amount == ORDER_TOTAL
    assert paid.payment.received.tx_id is not None
    with pytest.raises(Conflict) as raised:
        sdk.orders.update(paid.order_id, locale="de-DE")
    assert raised.value.code == "order_already_paid"

    now = datetime.now(UTC).replace(microsecond=0)
    package = sdk.shipments.create(
        paid.order_id,
        carrier_name="UPS",
        tracking_number=TRACKING_NUMBER,
        line_items=[0, 1],
        tracking_url="https://www.ups.com/track?tracknum=1Z999AA10123456784",
        delivery_time_range={
            "lowerBound": now + timedelta(days=1),
            "upperBound": now + timedelta(days=3),
        },
    )
    assert isinstance(package, Package)
    assert package.package_id is not None
    assert package.status == "pending"
    assert package.package_tracking.carrier_tracking_number == "1Z999AA10123456784"
    assert package.delivery_time_range.lower_bound == now + timedelta(days=1)
    assert package.line_items == [0, 1]

    shipped_at = now - timedelta(days=2)
    shipped = sdk.shipments.add_event(
        paid.order_id,
        package.package_id,
        status="shipped",
        occurred_at=shipped_at,
        location="Newark, NJ",
    )
    assert shipped.status == "shipped"
    # A string with an offset other than Z names the same instant.
    delivered_at = now - timedelta(hours=3)
    delivered_text = delivered_at.astimezone(timezone(timedelta(hours=2))).isoformat()
    for _ in range(2):  # the repeated event is stored once
        delivered = sdk.shipments.add_event(
            paid.order_id,
            package.package_id,
            status="delivered",
            occurred_at=delivered_text,
            description="Left at the front door",
        )
    assert delivered.status == "delivered"
    assert len(delivered.events) == 2
    assert delivered.events[1].occurred_at == delivered_at

    tracking = sdk.tracking.get(paid.order_id)
    assert [entry.package_id for entry in tracking] == [package.package_id]
    events = tracking[0].events
    assert [event.status for event in events] == ["shipped", "delivered"]
    assert events[0].occurred_at == shipped_at
    assert events[0].location == "Newark, NJ"
    assert events[1].description == "Left at the front door"

    completed = sdk.orders.get(paid.order_id)
    assert [item.delivery.status for item in completed.line_items if item.delivery] == [
        "completed",
        "completed",
    ]
    assert completed.phase == "completed"


def test_refunds_replay_idempotency_key(sdk: OrderDesk, wallet: LocalAccount) -> None:
    order = delivered_order(sdk, wallet)

    first = sdk.refunds.create(
        order.order_id,
        line_item=0,
        reason="The bottle arrived dented.",
        idempotency_key="refund-key-1",
    )
    assert isinstance(first, Refund)
    assert first.status == "refund-request-initiated"
    assert first.line_item == 0
    assert first.amount is not None
    assert isinstance(first.amount.amount, Decimal)
    replay = sdk.refunds.create(
        order.order_id,
        line_item=0,
        reason="The bottle arrived dented.",
        idempotency_key="refund-key-1",
    )
    assert replay.refund_id == first.refund_id

    with pytest.raises(Conflict) as reused:
        sdk.refunds.create(
            order.order_id, line_item=1, reason="Other", idempotency_key="refund-key-1"
        )
    assert reused.value.code == "idempotency_key_reused"
    with pytest.raises(Conflict) as again:
        sdk.refunds.create(order.order_id, line_item=0, reason="Still dented.")
    assert again.value.code == "refund_already_requested"
    assert again.value.payload["refund"]["refundId"] == first.refund_id

    assert [r.refund_id for r in sdk.refunds.list(order.order_id)] == [first.refund_id]
    assert sdk.refunds.list(order.order_id, line_item=1) == []
    assert len(sdk.refunds.list(order.order_id, line_item=0)) == 1


def test_refund_reject_then_accept(sdk: OrderDesk, wallet: LocalAccount) -> None:
    order = delivered_order(sdk, wallet)
    first = sdk.refunds.create(order.order_id, line_item=1, reason="Too quiet.")
    assert first.refund_id is not None

    rejected = sdk.refunds.reject(
        order.order_id, first.refund_id, reason="The earbuds work as described."
    )
    assert rejected.status == "refund-request-rejected"
    assert rejected.rejection_reason == "The earbuds work as described."
    with pytest.raises(Conflict) as raised:
        sdk.refunds.accept(order.order_id, first.refund_id)
    assert raised.value.code == "invalid_transition"

    second = sdk.refunds.create(order.order_id, line_item=1, reason="They crackle.")
    assert second.refund_id is not None
    accepted = sdk.refunds.accept(order.order_id, second.refund_id)
    assert accepted.status == "refund-request-accepted"
    history = sdk.refunds.list(order.order_id, line_item=1)
    assert [r.status for r in history] == [
        "refund-request-rejected",
        "refund-request-accepted",
    ]


def test_return_received_pays_out(
    sdk: OrderDesk, wallet: LocalAccount, runtime: Runtime
) -> None:
    order = delivered_order(sdk, wallet)
    refund = sdk.refunds.create(order.order_id, line_item=0, reason="Dented.")
    assert refund.refund_id is not None
    accepted = sdk.refunds.accept(order.order_id, refund.refund_id)
    assert accepted.status == "refund-request-accepted"

    received = sdk.refunds.received(order.order_id, refund.refund_id)
    assert received.return_received_at is not None
    assert received.payout is not None

    def completed() -> bool:
        listed = sdk.refunds.list(order.order_id, line_item=0)
        return listed[0].status == "refund-request-completed"

    run_jobs_until(runtime, completed)
    done = sdk.refunds.list(order.order_id, line_item=0)[0]
    assert done.payout is not None
    assert done.payout.tx_id is not None
    assert refund.amount is not None
    assert done.payout.amount == refund.amount.amount
    paid_back = sdk.orders.get(order.order_id).payment.refunded
    assert paid_back is not None
    assert paid_back.amount == refund.amount.amount


def test_scoped_key_cannot_review(
    server: LiveServer, sdk: OrderDesk, wallet: LocalAccount, make_key: KeyMaker
) -> None:
    order = delivered_order(sdk, wallet)
    refund = sdk.refunds.create(order.order_id, line_item=0, reason="Dented.")
    assert refund.refund_id is not None
    buyer_key = make_key("orders.read", "orders.update")

    with OrderDesk(buyer_key, base_url=server.url) as limited:
        with pytest.raises(Forbidden) as raised:
            limited.refunds.accept(order.order_id, refund.refund_id)
    assert "refunds.review" in raised.value.message
    assert sdk.refunds.list(order.order_id)[0].status == "refund-request-initiated"
