"""Order revisions: every committed write to an order raises its revision by one.

The reply cache of the lean read path is only as good as this counter. So each kind
of write is checked on its own, on SQLite and PostgreSQL, and a write made in
another process must show in the very next read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import ForeignKey, select
from sqlalchemy.orm import Session
from tests import factories
from tests.shipping.helpers import hours_ago, new_paid_order, post_event, shipped

from orderdesk.db.base import Base, utcnow
from orderdesk.orders.models import LineItem, Order, OrderEvent, OrderRevision
from orderdesk.orders.revision import (
    NOT_IN_REPLIES,
    OWNER_COLUMNS,
    record_order_changes,
)
from orderdesk.refunds.models import IdempotencyRecord, Payout, Refund
from orderdesk.refunds.services import lock_refund
from orderdesk.runtime import Runtime
from orderdesk.shipping.models import Package, TrackingEvent
from orderdesk.shipping.rollup import lock_order
from orderdesk.webhooks.models import WebhookDelivery, WebhookEndpoint

UNSTABLE = "/api/unstable/orders"
OWNER_NAMES = {"order_id", "package_id", "refund_id"}
OWNER_TABLES = {"orders", "packages", "refunds"}


def revision_of(runtime: Runtime, order_id: str) -> int:
    with runtime.session_factory() as session:
        row = session.get(OrderRevision, order_id)
        return row.revision if row is not None else 0


def test_every_order_table_classified() -> None:
    """A table that names an order, package or refund must be counted or exempt."""
    for table in Base.metadata.sorted_tables:
        names = {column.name for column in table.columns}
        targets = {
            key.column.table.name
            for column in table.columns
            for key in column.foreign_keys
            if isinstance(key, ForeignKey)
        }
        if table.name in ("orders", "order_revisions"):
            continue
        if names & OWNER_NAMES or targets & OWNER_TABLES:
            assert table.name in OWNER_COLUMNS or table.name in NOT_IN_REPLIES, (
                table.name
            )
    for name, column in OWNER_COLUMNS.items():
        assert column in Base.metadata.tables[name].columns


def _paid_order_with_package(runtime: Runtime) -> tuple[str, str]:
    order = new_paid_order(runtime, items=2)
    with runtime.session_factory() as session, session.begin():
        package = factories.make_package(session, order.id, [0])
        return order.id, package.id


def _refund(session: Session, order_id: str, status: str) -> Refund:
    refund = Refund(
        order_id=order_id,
        line_item=1,
        reason="Broken",
        status=status,
        amount=Decimal("10.00"),
        currency="usdc",
    )
    session.add(refund)
    session.flush()
    return refund


def _add_line_item(session: Session, order_id: str) -> None:
    # The child gets its order_id only during the flush.
    order = session.get_one(Order, order_id)
    item = LineItem(
        index=9, locator="amazon:B00TEST009", quantity=1, quote_status="valid"
    )
    order.line_items.append(item)
    session.flush()


def _add_event(session: Session, package_id: str) -> None:
    package = session.get_one(Package, package_id)
    package.events.append(
        TrackingEvent(status="shipped", occurred_at=utcnow(), dedupe_key="k2")
    )
    session.flush()


# Each write runs in its own transaction, given the order id and its package id.
WRITES: dict[str, Callable[[Session, str, str], None]] = {
    "order column": lambda s, o, p: setattr(s.get_one(Order, o), "locale", "fr-FR"),
    "line item column": lambda s, o, p: setattr(
        s.scalars(select(LineItem).where(LineItem.order_id == o)).first(),
        "delivery_status",
        "completed",
    ),
    "line item through the order": lambda s, o, p: _add_line_item(s, o),
    "order event": lambda s, o, p: s.add(
        OrderEvent(order_id=o, kind="order.note", actor="test")
    ),
    "package insert": lambda s, o, p: factories.make_package(s, o, [1]) and None,
    "package column": lambda s, o, p: setattr(
        s.get_one(Package, p), "status", "delivered"
    ),
    "tracking event by key": lambda s, o, p: s.add(
        TrackingEvent(
            package_id=p, status="shipped", occurred_at=utcnow(), dedupe_key="k1"
        )
    ),
    "tracking event through the package": lambda s, o, p: _add_event(s, p),
    "refund insert": lambda s, o, p: _refund(s, o, "refund-request-initiated") and None,
}


@pytest.mark.parametrize("kind", list(WRITES))
def test_write_raises_revision(runtime: Runtime, kind: str) -> None:
    order_id, package_id = _paid_order_with_package(runtime)
    before = revision_of(runtime, order_id)
    with runtime.session_factory() as session, session.begin():
        WRITES[kind](session, order_id, package_id)
    assert revision_of(runtime, order_id) == before + 1


def test_refund_and_payout_raise_revision(runtime: Runtime) -> None:
    order_id, _package = _paid_order_with_package(runtime)
    with runtime.session_factory() as session, session.begin():
        refund_id = _refund(session, order_id, "refund-request-accepted").id
    steps: list[Callable[[Session], None]] = [
        lambda s: setattr(s.get_one(Refund, refund_id), "payout_status", "pending"),
        lambda s: s.add(
            Payout(
                refund_id=refund_id,
                attempt=1,
                chain="devnet",
                currency="usdc",
                token_address="0x" + "11" * 20,
                amount=Decimal("10.00"),
                base_units="10000000",
                from_address="0x" + "22" * 20,
                to_address="0x" + "33" * 20,
                nonce=0,
                tx_hash="0x" + "44" * 32,
                raw_transaction=b"\x02",
                status="signed",
            )
        ),
        lambda s: setattr(
            s.scalars(select(Payout).where(Payout.refund_id == refund_id)).one(),
            "status",
            "sent",
        ),
        lambda s: s.delete(
            s.scalars(select(Payout).where(Payout.refund_id == refund_id)).one()
        ),
    ]
    for number, step in enumerate(steps):
        before = revision_of(runtime, order_id)
        with runtime.session_factory() as session, session.begin():
            step(session)
        assert revision_of(runtime, order_id) == before + 1, number


def test_delete_raises_revision(runtime: Runtime) -> None:
    order_id, package_id = _paid_order_with_package(runtime)
    with runtime.session_factory() as session, session.begin():
        WRITES["tracking event by key"](session, order_id, package_id)
    before = revision_of(runtime, order_id)
    with runtime.session_factory() as session, session.begin():
        event = session.scalars(select(TrackingEvent)).one()
        session.delete(event)
    assert revision_of(runtime, order_id) == before + 1


def test_one_raise_per_transaction(runtime: Runtime) -> None:
    order_id, package_id = _paid_order_with_package(runtime)
    before = revision_of(runtime, order_id)
    with runtime.session_factory() as session, session.begin():
        WRITES["package column"](session, order_id, package_id)
        session.flush()
        with session.begin_nested():
            WRITES["order event"](session, order_id, package_id)
        WRITES["order column"](session, order_id, package_id)
    assert revision_of(runtime, order_id) == before + 1


def test_rollback_keeps_revision(runtime: Runtime) -> None:
    order_id, package_id = _paid_order_with_package(runtime)
    before = revision_of(runtime, order_id)
    with runtime.session_factory() as session:
        WRITES["package column"](session, order_id, package_id)
        session.flush()
        session.rollback()
        # The next transaction of the same session raises only for its own writes.
        session.commit()
    assert revision_of(runtime, order_id) == before


def test_other_tables_keep_revision(runtime: Runtime) -> None:
    order_id, _package = _paid_order_with_package(runtime)
    before = revision_of(runtime, order_id)
    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        endpoint = WebhookEndpoint(
            project_id=owner,
            url="https://hooks.example/x",
            events=["orders.tracking.updated"],
            secret="whsec_" + "a" * 32,
            created_by="test",
        )
        session.add(endpoint)
        session.flush()
        session.add(
            WebhookDelivery(
                endpoint_id=endpoint.id,
                project_id=owner,
                message_id="msg_1",
                event_type="orders.tracking.updated",
                order_id=order_id,
                body="{}",
            )
        )
        session.add(
            IdempotencyRecord(
                principal=f"order:{order_id}",
                key="k",
                request_hash="0" * 64,
                status_code=201,
                body={},
            )
        )
    assert revision_of(runtime, order_id) == before


def test_core_write_recorded_by_hand(runtime: Runtime) -> None:
    order_id, _package = _paid_order_with_package(runtime)
    before = revision_of(runtime, order_id)
    with runtime.session_factory() as session, session.begin():
        session.execute(
            Package.__table__.update()
            .where(Package.__table__.c.order_id == order_id)
            .values(status="delivered")
        )
        record_order_changes(session, [order_id])
    assert revision_of(runtime, order_id) == before + 1


def _read(client: TestClient, key: str, path: str) -> bytes:
    response = client.get(path, headers={"X-API-KEY": key})
    assert response.status_code == 200, response.text
    return response.content


def test_http_writes_show_in_next_read(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=2)
    tracking = f"{UNSTABLE}/{order.id}/tracking"
    refunds = f"{UNSTABLE}/{order.id}/refunds"
    one_order = f"/api/2022-06-09/orders/{order.id}"
    for path in (tracking, refunds, one_order, tracking, refunds, one_order):
        _read(client, api_key, path)

    package = shipped(client, api_key, order.id, [0, 1], number="1ZREV0001")
    assert package["packageId"].encode() in _read(client, api_key, tracking)

    response = post_event(
        client, api_key, order.id, package["packageId"], "delivered", hours_ago(1)
    )
    assert response.status_code == 201
    assert b'"delivered"' in _read(client, api_key, tracking)
    assert b'"status":"completed"' in _read(client, api_key, one_order)

    response = client.post(
        f"{refunds}",
        json={"lineItem": 1, "reason": "Wrong size"},
        headers={"X-API-KEY": api_key},
    )
    assert response.status_code == 201, response.text
    refund_id = response.json()["refundId"]
    assert refund_id.encode() in _read(client, api_key, refunds)

    response = client.post(
        f"{refunds}/{refund_id}/reject",
        json={"reason": "Outside the policy"},
        headers={"X-API-KEY": api_key},
    )
    assert response.status_code == 200, response.text
    assert b"refund-request-rejected" in _read(client, api_key, refunds)


SUBPROCESS_WRITE = textwrap.dedent(
    """
    import os
    from datetime import UTC, datetime

    from sqlalchemy import create_engine

    from orderdesk.db.engine import make_session_factory
    from orderdesk.shipping.models import Package
    from orderdesk.shipping.services import record_tracking_event

    engine = create_engine(os.environ["WRITE_DATABASE_URL"])
    sessions = make_session_factory(engine)
    with sessions() as session, session.begin():
        package = session.get_one(Package, os.environ["WRITE_PACKAGE_ID"])
        record_tracking_event(
            session,
            package,
            "out-for-delivery",
            datetime.now(UTC),
            description="Written by another process",
            actor="cli",
        )
    """
)


def test_write_in_other_process_seen(
    client: TestClient, api_key: str, runtime: Runtime, tmp_path: Path
) -> None:
    order = new_paid_order(runtime, items=1)
    package = shipped(client, api_key, order.id, [0], number="1ZOTHER001")
    tracking = f"{UNSTABLE}/{order.id}/tracking"
    for _ in range(3):
        before = _read(client, api_key, tracking)
    assert b"Written by another process" not in before
    environment = {
        **os.environ,
        "WRITE_DATABASE_URL": runtime.settings.database_url,
        "WRITE_PACKAGE_ID": package["packageId"],
    }
    subprocess.run(
        [sys.executable, "-c", SUBPROCESS_WRITE],
        env=environment,
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    after = _read(client, api_key, tracking)
    assert b"Written by another process" in after
    assert b'"status":"out-for-delivery"' in after


def test_second_runtime_write_seen(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=1)
    one_order = f"/api/2022-06-09/orders/{order.id}"
    for _ in range(3):
        before = _read(client, api_key, one_order)
    other = Runtime.build(runtime.settings)
    try:
        with other.session_factory() as session, session.begin():
            row = session.get_one(Order, order.id)
            row.refunded_amount = Decimal("1.50")
            row.updated_at = utcnow() + timedelta(seconds=1)
    finally:
        other.close()
    after = _read(client, api_key, one_order)
    assert after != before
    assert b'"refunded":{"amount":"1.50"' in after


def test_refund_first_writer_no_deadlock(runtime: Runtime) -> None:
    """A payout-like step (refund locked first) and a review-like step (order, then
    refund) on one order both commit: raising the revision adds no lock cycle."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite has one writer at a time")
    order_id, _package = _paid_order_with_package(runtime)
    with runtime.session_factory() as session, session.begin():
        refund_id = _refund(session, order_id, "refund-request-accepted").id
    before = revision_of(runtime, order_id)
    refund_locked = threading.Event()
    errors: list[BaseException] = []

    def refund_first() -> None:
        try:
            with runtime.session_factory() as session, session.begin():
                refund = lock_refund(session, refund_id)
                assert refund is not None
                refund_locked.set()
                # Let the other transaction take the order and wait for the refund.
                time.sleep(0.5)
                refund.payout_status = "pending"
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    def order_first() -> None:
        try:
            refund_locked.wait(10)
            with runtime.session_factory() as session, session.begin():
                lock_order(session, order_id)
                refund = lock_refund(session, refund_id)
                assert refund is not None
                refund.rejection_reason = "not used"
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [
        threading.Thread(target=refund_first),
        threading.Thread(target=order_first),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert revision_of(runtime, order_id) == before + 2
