"""Orders ready for refund requests, and the calls the refund tests share."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests import factories
from tests.shipping.helpers import ORDERS, new_paid_order

from orderdesk.auth.models import Project
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.worker import Worker
from orderdesk.orders.models import Order
from orderdesk.payments.erc20 import TRANSFER_TOPIC
from orderdesk.payments.preparation import token_balance
from orderdesk.refunds import services
from orderdesk.refunds.models import Payout, Refund
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


# Review, jobs and payouts


REVIEW_ACTIONS = ("accept", "reject", "return-received")


def review(
    client: TestClient,
    key: str,
    order_id: str,
    refund_id: str,
    action: str,
    body: Any = None,
) -> Any:
    """POST a review action; reject gets a default reason unless a body is given."""
    if body is None and action == "reject":
        body = {"reason": "Outside our return policy."}
    return client.post(
        f"{ORDERS}/{order_id}/refunds/{refund_id}/{action}",
        json=body,
        headers={"X-API-KEY": key},
    )


def reviewed(
    client: TestClient, key: str, order_id: str, refund_id: str, action: str
) -> dict[str, Any]:
    response = review(client, key, order_id, refund_id, action)
    assert response.status_code == 200, response.text
    return response.json()


def requested(
    client: TestClient, key: str, order_id: str, line_item: int = 0
) -> dict[str, Any]:
    response = refund_request(
        client, order_id, {"lineItem": line_item, "reason": "It broke."}, key=key
    )
    assert response.status_code == 201, response.text
    return response.json()


def get_refund_body(
    client: TestClient, key: str, order_id: str, refund_id: str
) -> dict[str, Any]:
    response = client.get(f"{ORDERS}/{order_id}/refunds", headers={"X-API-KEY": key})
    assert response.status_code == 200, response.text
    [found] = [item for item in response.json() if item["refundId"] == refund_id]
    return found


def run_jobs(runtime: Runtime) -> int:
    """Run every due job until none is due, as one worker would."""
    return Worker(runtime).run_until_idle()


def make_jobs_due(runtime: Runtime, kind: str | None = None) -> None:
    """Move queued jobs (of `kind`) to now, skipping their backoff or delay."""
    with runtime.session_factory() as session, session.begin():
        query = update(Job).where(Job.status == "queued")
        if kind is not None:
            query = query.where(Job.kind == kind)
        session.execute(query.values(run_at=utcnow()))


def jobs_of(runtime: Runtime, kind: str) -> list[Job]:
    with runtime.session_factory() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind)))


def refund_row(runtime: Runtime, refund_id: str) -> Refund:
    with runtime.session_factory() as session:
        refund = session.get_one(Refund, refund_id)
        session.expunge(refund)
        return refund


def payouts_of(runtime: Runtime, refund_id: str) -> list[Payout]:
    with runtime.session_factory() as session:
        query = (
            select(Payout).where(Payout.refund_id == refund_id).order_by(Payout.attempt)
        )
        return list(session.scalars(query))


def treasury_of(runtime: Runtime, project: str = "test-project") -> str:
    with runtime.session_factory() as session:
        owner = session.scalars(select(Project).where(Project.name == project)).one()
        return owner.treasury_address


def usdc_balance(runtime: Runtime, address: str, chain_name: str = "devnet") -> int:
    chain = runtime.chains.get(chain_name)
    assert chain is not None
    return token_balance(chain, chain.tokens["usdc"], address)


def fund_treasury(runtime: Runtime, usdc: str, project: str = "test-project") -> str:
    """Mint devnet USDC (and gas) to the project's treasury; return its address."""
    treasury = treasury_of(runtime, project)
    devnet = runtime.chains.devnet
    assert devnet is not None
    devnet.fund(treasury, Decimal(usdc))
    return treasury


def token_transfers(
    runtime: Runtime, sender: str, recipient: str, chain_name: str = "devnet"
) -> list[Any]:
    """Every Transfer log of the chain's USDC from `sender` to `recipient`."""
    chain = runtime.chains.get(chain_name)
    assert chain is not None
    topic = "0x" + TRANSFER_TOPIC.hex()
    logs = chain.web3.eth.get_logs(
        {
            "fromBlock": 0,
            "toBlock": "latest",
            "address": chain.tokens["usdc"].address,
            "topics": [topic, _topic_address(sender), _topic_address(recipient)],
        }
    )
    return list(logs)


def _topic_address(address: str) -> str:
    return "0x" + "00" * 12 + address.lower().removeprefix("0x")


def received_order(
    client: TestClient,
    key: str,
    runtime: Runtime,
    *,
    fund: str | None = "1000",
    line_items: list[dict[str, Any]] | None = None,
) -> tuple[factories.MadeOrder, dict[str, Any]]:
    """A delivered order whose refund of line item 0 is accepted with its return
    received, so its payout job is queued. The treasury gets `fund` USDC unless None."""
    order = shipped_order(runtime, delivered_days_ago=1, line_items=line_items)
    refund = requested(client, key, order.id)
    reviewed(client, key, order.id, refund["refundId"], "accept")
    body = reviewed(client, key, order.id, refund["refundId"], "return-received")
    if fund is not None:
        fund_treasury(runtime, fund)
    return order, body


def requested_direct(runtime: Runtime, order_id: str, line_item: int) -> str:
    """Create a refund request through the service, as a buyer would; return its id."""
    with runtime.session_factory() as session, session.begin():
        refund = services.create_refund_request(
            session,
            session.get_one(Order, order_id),
            line_item,
            "It broke.",
            return_window=timedelta(days=30),
            actor="test",
        )
        return refund.id
