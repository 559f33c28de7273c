"""Calls and checks shared by the shipping and refund tests."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests import factories

from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.refunds.models import IdempotencyRecord, Refund
from orderdesk.runtime import Runtime
from orderdesk.shipping.models import Package, TrackingEvent

ORDERS = "/api/unstable/orders"
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
)
TABLES = (Package, TrackingEvent, Refund, IdempotencyRecord, OrderEvent)


def iso(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def hours_ago(hours: float) -> datetime:
    """A time `hours` before now, whole milliseconds so it prints back unchanged."""
    value = datetime.now(UTC) - timedelta(hours=hours)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def new_paid_order(runtime: Runtime, items: int = 2, **kw: Any) -> factories.MadeOrder:
    line_items = kw.pop("line_items", None) or [
        factories.line_item(unit_price=f"{10 + i}.00", quantity=i + 1)
        for i in range(items)
    ]
    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(
            session, runtime.settings, kw.pop("project", "test-project")
        )
        return factories.make_paid_order(session, owner, line_items, **kw)


def new_unpaid_order(runtime: Runtime, items: int = 2) -> factories.MadeOrder:
    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        specs = [factories.line_item() for _ in range(items)]
        return factories.make_order(session, owner, specs)


def ship(
    client: TestClient,
    key: str,
    order_id: str,
    line_items: list[int],
    number: str = "1Z999AA10123456784",
    carrier: str = "UPS",
    **extra: Any,
) -> Any:
    """Record a shipment and return the response."""
    body = {
        "carrierName": carrier,
        "carrierTrackingNumber": number,
        "lineItems": line_items,
    }
    body.update(extra)
    return client.post(
        f"{ORDERS}/{order_id}/shipments", json=body, headers={"X-API-KEY": key}
    )


def shipped(
    client: TestClient, key: str, order_id: str, line_items: list[int], **kw: Any
) -> dict[str, Any]:
    response = ship(client, key, order_id, line_items, **kw)
    assert response.status_code == 201, response.text
    return response.json()


def post_event(
    client: TestClient,
    key: str,
    order_id: str,
    package_id: str,
    status: str,
    occurred_at: datetime | str,
    **extra: Any,
) -> Any:
    when = occurred_at if isinstance(occurred_at, str) else iso(occurred_at)
    body: dict[str, Any] = {"status": status, "occurredAt": when}
    body.update(extra)
    return client.post(
        f"{ORDERS}/{order_id}/shipments/{package_id}/events",
        json=body,
        headers={"X-API-KEY": key},
    )


def tracking(client: TestClient, key: str, order_id: str) -> list[dict[str, Any]]:
    response = client.get(f"{ORDERS}/{order_id}/tracking", headers={"X-API-KEY": key})
    assert response.status_code == 200, response.text
    return response.json()


def table_counts(runtime: Runtime) -> dict[str, int]:
    """Row counts of the tables these features write, to show nothing changed."""
    with runtime.session_factory() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            or 0
            for model in TABLES
        }


def line_items_of(runtime: Runtime, order_id: str) -> list[LineItem]:
    with runtime.session_factory() as session:
        query = (
            select(LineItem)
            .where(LineItem.order_id == order_id)
            .order_by(LineItem.index)
        )
        return list(session.scalars(query))


def order_row(runtime: Runtime, order_id: str) -> Order:
    with runtime.session_factory() as session:
        return session.get_one(Order, order_id)


def order_events(runtime: Runtime, order_id: str) -> list[OrderEvent]:
    with runtime.session_factory() as session:
        query = (
            select(OrderEvent)
            .where(OrderEvent.order_id == order_id)
            .order_by(OrderEvent.id)
        )
        return list(session.scalars(query))
