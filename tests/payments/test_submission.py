"""POST /orders/{orderId}/payment: bind, check on chain, apply; and the recheck job."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import KeyMaker, LiveServer, free_port, make_settings
from tests.orders.helpers import ADDRESS, ORDERS, order_body, seed_catalog
from tests.payments.helpers import (
    devnet_chain,
    devnet_of,
    funded_account,
    transfer,
)

from orderdesk.app import create_app
from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.auth.services import create_api_key, get_or_create_project
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.worker import Worker
from orderdesk.orders.models import Order, OrderEvent
from orderdesk.payments.chains import Chain
from orderdesk.runtime import Runtime

# The total of order_body() with the sample catalog: 115.38 USDC.
TOTAL_UNITS = 115_380_000


@pytest.fixture
def chain(runtime: Runtime) -> Chain:
    seed_catalog(runtime)
    return devnet_chain(runtime)


@pytest.fixture
def payer(chain: Chain) -> LocalAccount:
    return funded_account(chain, "1000")


def create_order(
    client: TestClient, key: str, payer: str | None, **changes: Any
) -> dict[str, Any]:
    body = order_body(**changes)
    if payer is None:
        body["payment"].pop("payerAddress")
    else:
        body["payment"]["payerAddress"] = payer
    response = client.post(ORDERS, json=body, headers={"X-API-KEY": key})
    assert response.status_code == 201, response.text
    return response.json()


def submit(client: TestClient, order_id: str, tx_id: str, key: str) -> Any:
    return client.post(
        f"{ORDERS}/{order_id}/payment",
        json={"type": "crypto-tx-id", "txId": tx_id},
        headers={"X-API-KEY": key},
    )


def stored(runtime: Runtime, order_id: str) -> Order:
    with runtime.session_factory() as session:
        order = session.get(Order, order_id)
        assert order is not None
        session.expunge(order)
        return order


def event_kinds(runtime: Runtime, order_id: str) -> list[str]:
    with runtime.session_factory() as session:
        query = (
            select(OrderEvent.kind)
            .where(OrderEvent.order_id == order_id)
            .order_by(OrderEvent.id)
        )
        return list(session.scalars(query))


def jobs(runtime: Runtime, kind: str) -> list[Job]:
    with runtime.session_factory() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind)))


def total_units(order: dict[str, Any]) -> int:
    return int(Decimal(order["quote"]["totalPrice"]["amount"]).scaleb(6))


def pay_order(
    chain: Chain,
    runtime: Runtime,
    payer: LocalAccount,
    order: dict[str, Any],
    units: int | None = None,
) -> str:
    treasury = stored(runtime, order["orderId"]).treasury_address
    return transfer(
        chain, payer, treasury, units if units is not None else total_units(order)
    )


def run_jobs(runtime: Runtime) -> None:
    # Recheck jobs are due payment_recheck_seconds (0.05 s in tests) after a retry.
    time.sleep(0.1)
    Worker(runtime).run_until_idle()


def test_payment_completes_order(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    order = create_order(client, api_key, payer.address)["order"]
    assert order["payment"]["status"] == "awaiting-payment"
    assert total_units(order) == TOTAL_UNITS
    tx_id = pay_order(chain, runtime, payer, order)

    response = submit(client, order["orderId"], tx_id, api_key)

    assert response.status_code == 200, response.text
    paid = response.json()
    assert paid["phase"] == "delivery"
    assert paid["payment"]["status"] == "completed"
    assert paid["payment"]["received"] == {
        "amount": order["quote"]["totalPrice"]["amount"],
        "currency": "usdc",
        "txId": tx_id,
        "chain": "devnet",
    }
    assert "failureReason" not in paid["payment"]
    assert [item["delivery"]["status"] for item in paid["lineItems"]] == [
        "in-progress",
        "in-progress",
    ]
    assert (
        client.get(
            f"{ORDERS}/{order['orderId']}", headers={"X-API-KEY": api_key}
        ).json()
        == paid
    )
    row = stored(runtime, order["orderId"])
    assert row.paid_from == payer.address
    assert row.received_base_units == str(TOTAL_UNITS)
    assert row.payment_tx_id == tx_id
    assert row.paid_at is not None
    assert event_kinds(runtime, order["orderId"])[1:3] == [
        "payment.submitted",
        "payment.received",
    ]
    assert [job.payload for job in jobs(runtime, "fulfilment.start")] == [
        {"order_id": order["orderId"]}
    ]
    assert [job.payload for job in jobs(runtime, "payment.recheck")] == [
        {"order_id": order["orderId"], "tx_id": tx_id}
    ]
    # The recheck job finds the payment settled and does nothing.
    run_jobs(runtime)
    assert stored(runtime, order["orderId"]).payment_state == "completed"


def test_overpayment_is_recorded(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    order = create_order(client, api_key, None)["order"]
    tx_id = pay_order(chain, runtime, payer, order, TOTAL_UNITS + 1_000_000)
    paid = submit(
        client, order["orderId"], tx_id.upper().replace("0X", "0x"), api_key
    ).json()
    assert paid["payment"]["status"] == "completed"
    assert paid["payment"]["received"]["txId"] == tx_id
    assert paid["payment"]["received"]["amount"] == "116.38"
    assert stored(runtime, order["orderId"]).paid_from == payer.address


def test_resubmitted_tx_returns_order(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    order = create_order(client, api_key, payer.address)["order"]
    tx_id = pay_order(chain, runtime, payer, order)
    first = submit(client, order["orderId"], tx_id, api_key).json()
    events = event_kinds(runtime, order["orderId"])
    again = submit(client, order["orderId"], tx_id, api_key)
    assert again.status_code == 200
    assert again.json() == first
    assert event_kinds(runtime, order["orderId"]) == events
    other = pay_order(chain, runtime, payer, order)
    conflict = submit(client, order["orderId"], other, api_key)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "order_already_paid"


def test_tx_reused_for_second_order(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    first = create_order(client, api_key, payer.address)["order"]
    second = create_order(client, api_key, payer.address)["order"]
    tx_id = pay_order(chain, runtime, payer, first)
    assert (
        submit(client, first["orderId"], tx_id, api_key).json()["payment"]["status"]
        == "completed"
    )

    response = submit(client, second["orderId"], tx_id, api_key)

    assert response.status_code == 200
    payment = response.json()["payment"]
    assert payment["status"] == "awaiting-payment"
    assert payment["failureReason"]["code"] == "tx-already-used"
    assert (
        "one transaction can pay one order only" in payment["failureReason"]["message"]
    )
    assert stored(runtime, second["orderId"]).payment_tx_id is None
    assert stored(runtime, first["orderId"]).payment_tx_id == tx_id


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ("underpaid", "insufficient-funds"),
        ("unknown", "tx-id-not-found"),
        ("wrong payer", "wrong-payer"),
        ("wrong recipient", "wrong-recipient"),
        ("reverted", "tx-failed"),
    ],
)
def test_failed_check_unbinds_tx(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
    scenario: str,
    code: str,
) -> None:
    order = create_order(client, api_key, payer.address)["order"]
    treasury = stored(runtime, order["orderId"]).treasury_address
    if scenario == "underpaid":
        tx_id = transfer(chain, payer, treasury, TOTAL_UNITS - 10_000)
    elif scenario == "unknown":
        tx_id = "0x" + "ab" * 32
    elif scenario == "wrong payer":
        tx_id = transfer(chain, funded_account(chain, "200"), treasury, TOTAL_UNITS)
    elif scenario == "wrong recipient":
        tx_id = transfer(chain, payer, Account.create().address, TOTAL_UNITS)
    else:
        tx_id = transfer(chain, payer, treasury, 10**12)

    response = submit(client, order["orderId"], tx_id, api_key)

    assert response.status_code == 200, response.text
    payment = response.json()["payment"]
    assert payment["status"] == "awaiting-payment"
    assert payment["failureReason"]["code"] == code
    assert tx_id in payment["failureReason"]["message"]
    row = stored(runtime, order["orderId"])
    assert row.payment_tx_id is None
    assert row.payment_state == "unpaid"
    assert event_kinds(runtime, order["orderId"])[-2:] == [
        "payment.submitted",
        "payment.failed",
    ]
    # The buyer fixes it with a correct transfer, which clears the failure.
    good = transfer(chain, payer, treasury, TOTAL_UNITS)
    paid = submit(client, order["orderId"], good, api_key).json()
    assert paid["payment"]["status"] == "completed"
    assert "failureReason" not in paid["payment"]


def test_unconfirmed_waits_for_worker(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    chain.confirmations = 3
    order = create_order(client, api_key, payer.address)["order"]
    tx_id = pay_order(chain, runtime, payer, order)

    pending = submit(client, order["orderId"], tx_id, api_key).json()

    assert pending["payment"]["status"] == "in-progress"
    assert pending["phase"] == "payment"
    run_jobs(runtime)
    assert stored(runtime, order["orderId"]).payment_state == "in-progress"
    devnet_of(chain).mine(2)
    run_jobs(runtime)
    assert stored(runtime, order["orderId"]).payment_state == "completed"
    done = client.get(
        f"{ORDERS}/{order['orderId']}", headers={"X-API-KEY": api_key}
    ).json()
    assert done["payment"]["received"]["txId"] == tx_id
    assert done["phase"] == "delivery"


def test_unmined_waits_for_worker(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    order = create_order(client, api_key, payer.address)["order"]
    devnet_of(chain).set_automine(False)
    tx_id = pay_order(chain, runtime, payer, order)
    assert (
        submit(client, order["orderId"], tx_id, api_key).json()["payment"]["status"]
        == "in-progress"
    )
    # Resubmitting while in progress checks again and changes nothing.
    assert (
        submit(client, order["orderId"], tx_id, api_key).json()["payment"]["status"]
        == "in-progress"
    )
    other = create_order(client, api_key, payer.address)["order"]
    busy = submit(client, order["orderId"], "0x" + "cd" * 32, api_key)
    assert busy.status_code == 409
    assert busy.json()["code"] == "payment_in_progress"
    assert other["payment"]["status"] == "awaiting-payment"
    devnet_of(chain).mine()
    run_jobs(runtime)
    assert stored(runtime, order["orderId"]).payment_state == "completed"


def test_dropped_tx_returns_to_awaiting(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    chain.confirmations = 2
    order = create_order(client, api_key, payer.address)["order"]
    snapshot = devnet_of(chain).snapshot()
    tx_id = pay_order(chain, runtime, payer, order)
    assert (
        submit(client, order["orderId"], tx_id, api_key).json()["payment"]["status"]
        == "in-progress"
    )

    devnet_of(chain).revert(snapshot)
    run_jobs(runtime)

    row = stored(runtime, order["orderId"])
    assert row.payment_state == "unpaid"
    assert row.payment_tx_id is None
    assert row.failure_code == "tx-id-not-found"
    assert "dropped out" in (row.failure_message or "")
    reread = client.get(
        f"{ORDERS}/{order['orderId']}", headers={"X-API-KEY": api_key}
    ).json()
    assert reread["payment"]["status"] == "awaiting-payment"


def test_expired_quote_cannot_be_paid(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    order = create_order(client, api_key, payer.address)["order"]
    with runtime.session_factory() as session, session.begin():
        row = session.get(Order, order["orderId"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    tx_id = pay_order(chain, runtime, payer, order)
    response = submit(client, order["orderId"], tx_id, api_key)
    assert response.status_code == 409
    assert response.json()["code"] == "quote_expired"
    row = stored(runtime, order["orderId"])
    assert row.payment_tx_id is None
    assert row.payment_state == "unpaid"
    assert jobs(runtime, "payment.recheck") == []


def test_incomplete_order_not_payable(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
) -> None:
    address = {key: value for key, value in ADDRESS.items() if key != "line1"}
    recipient = {"email": "jordan@example.com", "physicalAddress": address}
    order = create_order(client, api_key, payer.address, recipient=recipient)["order"]
    response = submit(client, order["orderId"], "0x" + "12" * 32, api_key)
    assert response.status_code == 409
    assert response.json()["code"] == "order_not_payable"
    assert "requires-physical-address" in response.json()["message"]


BAD_BODIES: list[Any] = [
    {"type": "crypto-tx-id"},
    {"txId": "0x" + "12" * 32},
    {"type": "card", "txId": "0x" + "12" * 32},
    {"type": "crypto-tx-id", "txId": "0x" + "12" * 31},
    {"type": "crypto-tx-id", "txId": "12" * 33},
    {"type": "crypto-tx-id", "txId": "0x" + "zz" * 32},
    {"type": "crypto-tx-id", "txId": 5},
    {"type": "crypto-tx-id", "txId": "0x" + "12" * 32, "chain": "devnet"},
    [],
    "crypto-tx-id",
]


def test_bad_body_rejected(
    client: TestClient, runtime: Runtime, chain: Chain, api_key: str
) -> None:
    order = create_order(client, api_key, None)["order"]
    path = f"{ORDERS}/{order['orderId']}/payment"
    for body in BAD_BODIES:
        response = client.post(path, json=body, headers={"X-API-KEY": api_key})
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"] is True, body
    null = client.post(
        path,
        content=b"null",
        headers={"X-API-KEY": api_key, "content-type": "application/json"},
    )
    assert null.status_code == 400
    as_text = client.post(
        path,
        content=b"txId=1",
        headers={"X-API-KEY": api_key, "content-type": "text/plain"},
    )
    assert as_text.status_code == 415
    assert stored(runtime, order["orderId"]).payment_state == "unpaid"
    assert event_kinds(runtime, order["orderId"]) == ["order.created"]


def test_payment_access_rules(
    client: TestClient,
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    make_key: KeyMaker,
) -> None:
    creator = make_key("orders.create", "orders.read")
    created = create_order(client, creator, payer.address)
    order_id = created["order"]["orderId"]
    tx_id = pay_order(chain, runtime, payer, created["order"])
    body = {"type": "crypto-tx-id", "txId": tx_id}
    path = f"{ORDERS}/{order_id}/payment"

    assert (
        client.post(path, json=body, headers={"X-API-KEY": creator}).status_code == 403
    )
    stranger = make_key("orders.update", project="another-project")
    assert (
        client.post(path, json=body, headers={"X-API-KEY": stranger}).status_code == 404
    )
    assert (
        client.post(
            f"{ORDERS}/not-a-uuid/payment", json=body, headers={"X-API-KEY": stranger}
        ).status_code
        == 404
    )
    assert client.post(path, json=body).status_code == 401
    with_secret = client.post(
        path, json=body, headers={"Authorization": created["clientSecret"]}
    )
    assert with_secret.status_code == 200, with_secret.text
    assert with_secret.json()["payment"]["status"] == "completed"
    actors = _actors(runtime, order_id, "payment.submitted")
    assert actors == ["client_secret"]


def _actors(runtime: Runtime, order_id: str, kind: str) -> list[str]:
    with runtime.session_factory() as session:
        query = select(OrderEvent.actor).where(
            OrderEvent.order_id == order_id, OrderEvent.kind == kind
        )
        return list(session.scalars(query))


def test_concurrent_reuse_binds_once(
    runtime: Runtime,
    chain: Chain,
    payer: LocalAccount,
    api_key: str,
    live_server: LiveServer,
) -> None:
    orders = []
    for _ in range(4):
        body = order_body()
        body["payment"]["payerAddress"] = payer.address
        created = requests.post(
            f"{live_server.url}{ORDERS}",
            json=body,
            headers={"X-API-KEY": api_key},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        orders.append(created.json()["order"])
    tx_id = pay_order(chain, runtime, payer, orders[0])
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(len(orders))

    def attempt(order_id: str) -> None:
        barrier.wait()
        response = requests.post(
            f"{live_server.url}{ORDERS}/{order_id}/payment",
            json={"type": "crypto-tx-id", "txId": tx_id},
            headers={"X-API-KEY": api_key},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        results.append(response.json()["payment"])

    threads = [
        threading.Thread(target=attempt, args=(order["orderId"],)) for order in orders
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(payment["status"] for payment in results)
    assert statuses == ["awaiting-payment"] * 3 + ["completed"]
    codes = {payment.get("failureReason", {}).get("code") for payment in results}
    assert codes == {None, "tx-already-used"}


@pytest.fixture
def down_runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    chains_file = tmp_path / "chains.toml"
    token = "0x" + "11" * 20
    chains_file.write_text(
        '[[chains]]\nname = "down"\nchain_id = 5\n'
        f'rpc_url = "http://127.0.0.1:{free_port()}"\n'
        f'[chains.tokens.usdc]\naddress = "{token}"\ndecimals = 6\n'
    )
    runtime = Runtime.build(
        make_settings(database_url, tmp_path, chains_file=chains_file)
    )
    runtime.start()
    seed_catalog(runtime)
    yield runtime
    runtime.close()


def test_chain_down_keeps_in_progress(down_runtime: Runtime) -> None:
    with down_runtime.session_factory() as session, session.begin():
        project = get_or_create_project(session, down_runtime.settings, "p")
        _key, key = create_api_key(session, project, "development", list(ALL_SCOPES))
    with TestClient(
        create_app(runtime=down_runtime), raise_server_exceptions=False
    ) as client:
        body = order_body()
        body["payment"]["method"] = "down"
        created = client.post(ORDERS, json=body, headers={"X-API-KEY": key})
        assert created.status_code == 201, created.text
        order_id = created.json()["order"]["orderId"]
        response = submit(client, order_id, "0x" + "34" * 32, key)
        assert response.status_code == 200, response.text
        assert response.json()["payment"]["status"] == "in-progress"
    run_jobs(down_runtime)
    (job,) = jobs(down_runtime, "payment.recheck")
    assert job.status == "queued"
    assert job.attempts == 0
    assert "chain unavailable" in (job.last_error or "")
    assert stored(down_runtime, order_id).payment_state == "in-progress"
