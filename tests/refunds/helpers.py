"""Orders ready for refund requests, and the calls the refund tests share."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests import factories
from tests.shipping.helpers import ORDERS, new_paid_order

from orderdesk.db.base import utcnow
from orderdesk.refunds.models import Refund
from orderdesk.runtime import Runtime


def shipped_order(
    runtime: Runtime,
    *,
    items: int = 2,
    delivered_days_ago: float | None = None,
    line_items: list[dict[str, Any]] | None = None,
    project: str = "test-project",
) -> factories.MadeOrder:
    """A paid order whose line items are all in one shipped package, delivered
    `delivered_days_ago` days ago when given."""
    order = new_paid_order(runtime, items=items, line_items=line_items, project=project)
    count = len(line_items) if line_items else items
    with runtime.session_factory() as session, session.begin():
        if delivered_days_ago is None:
            factories.make_package(session, order.id, list(range(count)))
        else:
            delivered = utcnow() - timedelta(days=delivered_days_ago)
            factories.make_package(
                session,
                order.id,
                list(range(count)),
                status="delivered",
                status_at=delivered,
            )
            for index in range(count):
                factories.set_delivered(session, order.id, index, delivered)
    return order


def refund_request(
    client: TestClient,
    order_id: str,
    body: Any,
    *,
    key: str | None = None,
    secret: str | None = None,
    idempotency_key: str | None = None,
) -> Any:
    headers = {}
    if key is not None:
        headers["X-API-KEY"] = key
    if secret is not None:
        headers["Authorization"] = secret
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return client.post(f"{ORDERS}/{order_id}/refunds", json=body, headers=headers)


def set_refund_status(runtime: Runtime, refund_id: str, status: str) -> None:
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(Refund).where(Refund.id == refund_id).values(status=status)
        )


def refunds_of(runtime: Runtime, order_id: str) -> list[Refund]:
    with runtime.session_factory() as session:
        query = (
            select(Refund)
            .where(Refund.order_id == order_id)
            .order_by(Refund.created_at)
        )
        return list(session.scalars(query))


def days_ago(days: float) -> datetime:
    return utcnow() - timedelta(days=days)
