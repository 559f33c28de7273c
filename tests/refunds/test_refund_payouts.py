"""Payouts on the devnet: exact amounts, unfunded treasuries, nonces, retries and
transactions proven dead, on both databases."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import structlog
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests.payments.helpers import approve, devnet_chain, funded_account, send, sign
from tests.refunds.helpers import (
    fund_treasury,
    get_refund_body,
    jobs_of,
    make_jobs_due,
    payouts_of,
    received_order,
    refund_row,
    requested,
    reviewed,
    run_jobs,
    token_transfers,
    treasury_of,
    usdc_balance,
)
from tests.shipping.helpers import order_events, order_row

from orderdesk.auth.models import Project
from orderdesk.db.base import utcnow
from orderdesk.orders.models import Order
from orderdesk.payments.amounts import to_base_units
from orderdesk.payments.exceptions import ChainUnavailable
from orderdesk.payments.models import AddressNonce
from orderdesk.payments.treasury import load_master_secret, treasury_account
from orderdesk.refunds import payouts
from orderdesk.runtime import Runtime

COMPLETED = "refund-request-completed"
ACCEPTED = "refund-request-accepted"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"payout_recheck_seconds": 0.05, "payout_retry_seconds": 30.0}


def treasury_key(runtime: Runtime) -> LocalAccount:
    with runtime.session_factory() as session:
        project = session.scalars(
            select(Project).where(Project.name == "test-project")
        ).one()
        index = project.treasury_index
    return treasury_account(load_master_secret(runtime.settings), index)


def units(amount: Decimal) -> int:
    return to_base_units(amount, 6)


def block_broadcasts(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Make every broadcast fail as if the node were down; return what was sent."""
    attempts: list[bytes] = []

    def unreachable(chain: Any, raw: bytes) -> str | None:
        attempts.append(raw)
        raise ChainUnavailable(chain.name, "ConnectionError")

    monkeypatch.setattr(payouts, "_send_raw", unreachable)
    return attempts


def test_payout_pays_exact_amount(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order, refund = received_order(client, api_key, runtime)
    payer = order_row(runtime, order.id).paid_from
    assert payer is not None
    treasury = treasury_of(runtime)
    treasury_before = usdc_balance(runtime, treasury)
    run_jobs(runtime)

    amount = order.line_item_totals[0]
    body = get_refund_body(client, api_key, order.id, refund["refundId"])
    assert body["status"] == COMPLETED
    assert body["payout"]["status"] == "confirmed"
    assert usdc_balance(runtime, payer) == units(amount)
    assert treasury_before - usdc_balance(runtime, treasury) == units(amount)
    [payout] = payouts_of(runtime, refund["refundId"])
    assert payout.tx_hash == body["payout"]["txId"]
    assert payout.from_address == treasury
    assert payout.to_address == to_checksum_address(payer)
    assert payout.nonce == 0
    assert payout.attempt == 1
    assert payout.base_units == str(units(amount))
    assert payout.status == "confirmed"
    assert payout.block_number is not None
    with runtime.session_factory() as session:
        nonce = session.get_one(AddressNonce, ("devnet", treasury))
        assert nonce.next_nonce == 1
    assert order_row(runtime, order.id).refunded_amount == amount
    kinds = [event.kind for event in order_events(runtime, order.id)]
    signed = kinds.index("refund.payout_signed")
    assert kinds[signed:] == [
        "refund.payout_signed",
        "refund.status_changed",
        "payment.refunded",
    ]
    [receipt_mail] = [
        job
        for job in jobs_of(runtime, "mail.send")
        if job.payload["kind"] == "refund_completed"
    ]
    assert receipt_mail.status == "done"
    [job] = jobs_of(runtime, "refund.payout")
    assert job.status == "done"


def test_second_refund_grows_refunded(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order, first = received_order(client, api_key, runtime)
    second = requested(client, api_key, order.id, 1)
    reviewed(client, api_key, order.id, second["refundId"], "accept")
    reviewed(client, api_key, order.id, second["refundId"], "return-received")
    run_jobs(runtime)

    refunded = order_row(runtime, order.id).refunded_amount
    assert refunded == sum(order.line_item_totals)
    [one] = payouts_of(runtime, first["refundId"])
    [two] = payouts_of(runtime, second["refundId"])
    assert {one.nonce, two.nonce} == {0, 1}
    response = client.get(
        f"/api/2022-06-09/orders/{order.id}", headers={"X-API-KEY": api_key}
    )
    assert response.json()["payment"]["refunded"]["amount"] == format(refunded, "f")


def test_unfunded_treasury_retries_later(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order, refund = received_order(client, api_key, runtime, fund=None)
    refund_id = refund["refundId"]
    with structlog.testing.capture_logs() as logs:
        run_jobs(runtime)

    body = get_refund_body(client, api_key, order.id, refund_id)
    assert body["status"] == ACCEPTED
    payout = body["payout"]
    assert payout["status"] == "failed-insufficient-funds"
    assert payout["txId"] is None
    assert payout["chain"] == "devnet"
    assert payout["amount"] == refund["amount"]["amount"]
    assert payout["currency"] == "usdc"
    assert treasury_of(runtime) in payout["message"]
    assert "0.00 USDC" in payout["message"]
    assert payouts_of(runtime, refund_id) == []
    [error] = [entry for entry in logs if entry["event"] == "payout_not_funded"]
    assert error["log_level"] == "error"
    assert error["refund_id"] == refund_id
    [job] = jobs_of(runtime, "refund.payout")
    assert job.status == "queued"
    first_wait = job.run_at - utcnow()
    assert timedelta(seconds=25) < first_wait <= timedelta(seconds=30)

    # A second failure doubles the wait and records no second event.
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    [job] = jobs_of(runtime, "refund.payout")
    assert timedelta(seconds=55) < job.run_at - utcnow() <= timedelta(seconds=60)
    assert refund_row(runtime, refund_id).payout_retries == 2
    failures = [
        e for e in order_events(runtime, order.id) if e.kind == "refund.payout_failed"
    ]
    assert len(failures) == 1
    assert failures[0].data["status"] == "failed-insufficient-funds"

    fund_treasury(runtime, "100")
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    done = get_refund_body(client, api_key, order.id, refund_id)
    assert done["status"] == COMPLETED
    assert done["payout"]["message"] is None
    assert refund_row(runtime, refund_id).payout_retries == 0


def test_missing_payer_not_payable(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order, refund = received_order(client, api_key, runtime)
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(Order).where(Order.id == order.id).values(paid_from=None)
        )
    run_jobs(runtime)
    payout = get_refund_body(client, api_key, order.id, refund["refundId"])["payout"]
    assert payout["status"] == "failed-not-payable"
    assert "no recorded payer address" in payout["message"]
    assert payouts_of(runtime, refund["refundId"]) == []


def test_unreachable_node_keeps_signed_tx(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broadcast that fails leaves the committed transaction; the retry sends the
    same raw bytes instead of signing again."""
    order, refund = received_order(client, api_key, runtime)
    refund_id = refund["refundId"]
    attempts = block_broadcasts(monkeypatch)
    run_jobs(runtime)

    [stored] = payouts_of(runtime, refund_id)
    assert stored.status == "signed"
    assert attempts == [stored.raw_transaction]
    body = get_refund_body(client, api_key, order.id, refund_id)
    assert body["status"] == ACCEPTED
    assert body["payout"]["status"] == "submitted"
    assert body["payout"]["txId"] == stored.tx_hash
    assert "could not be reached" in body["payout"]["message"]
    chain = devnet_chain(runtime)
    assert chain.web3.eth.get_transaction_count(stored.from_address, "pending") == 0

    monkeypatch.undo()
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    [sent] = payouts_of(runtime, refund_id)
    assert sent.id == stored.id
    assert sent.tx_hash == stored.tx_hash
    assert sent.status == "confirmed"
    assert refund_row(runtime, refund_id).status == COMPLETED
    payer = order_row(runtime, order.id).paid_from
    assert len(token_transfers(runtime, stored.from_address, payer)) == 1


def test_pending_nonce_starts_allocator(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    """A treasury that signed elsewhere: the nonce row starts from the node's count."""
    order, refund = received_order(client, api_key, runtime)
    chain = devnet_chain(runtime)
    key = treasury_key(runtime)
    for _ in range(2):
        send(chain, sign(chain, key, to=key.address, gas=21_000))
    run_jobs(runtime)
    [payout] = payouts_of(runtime, refund["refundId"])
    assert payout.nonce == 2
    assert payout.status == "confirmed"
    with runtime.session_factory() as session:
        assert session.get_one(AddressNonce, ("devnet", key.address)).next_nonce == 3


def test_allocator_skips_nonce_used_elsewhere(runtime: Runtime) -> None:
    with runtime.session_factory() as session, session.begin():
        assert payouts.allocate_nonce(session, "devnet", "0xA", 4) == 4
        assert payouts.allocate_nonce(session, "devnet", "0xA", 0) == 5
        # The node is ahead of the row: the key signed somewhere else.
        assert payouts.allocate_nonce(session, "devnet", "0xA", 9) == 9
        assert payouts.allocate_nonce(session, "devnet", "0xB", 0) == 0
    with runtime.session_factory() as session:
        assert session.get_one(AddressNonce, ("devnet", "0xA")).next_nonce == 10


def test_taken_nonce_replaces_payout(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stored transaction whose nonce another transaction used is proven dead, and
    only then a new transfer is signed; the payer is paid once."""
    order, refund = received_order(client, api_key, runtime)
    refund_id = refund["refundId"]
    block_broadcasts(monkeypatch)
    run_jobs(runtime)
    [stored] = payouts_of(runtime, refund_id)
    assert stored.nonce == 0
    chain = devnet_chain(runtime)
    key = treasury_key(runtime)
    send(chain, sign(chain, key, to=key.address, gas=21_000, nonce=0))

    monkeypatch.undo()
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    dead, replacement = payouts_of(runtime, refund_id)
    assert dead.id == stored.id
    assert dead.status == "dead"
    assert "Nonce 0" in (dead.message or "")
    assert replacement.attempt == 2
    assert replacement.nonce == 1
    assert replacement.status == "confirmed"
    body = get_refund_body(client, api_key, order.id, refund_id)
    assert body["status"] == COMPLETED
    assert body["payout"]["txId"] == replacement.tx_hash
    payer = order_row(runtime, order.id).paid_from
    assert payer is not None
    assert len(token_transfers(runtime, key.address, payer)) == 1
    assert usdc_balance(runtime, payer) == units(order.line_item_totals[0])
    kinds = [event.kind for event in order_events(runtime, order.id)]
    assert kinds.count("refund.payout_replaced") == 1
    assert kinds.count("refund.payout_signed") == 2


def test_reverted_payout_is_replaced(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transfer that reverted moved nothing: it is dead, and the next one waits for
    funds like the first."""
    order, refund = received_order(client, api_key, runtime, fund="100")
    refund_id = refund["refundId"]
    chain = devnet_chain(runtime)
    key = treasury_key(runtime)
    thief: LocalAccount = funded_account(chain, "1")
    approve(chain, key, thief.address, 2**256 - 1)
    block_broadcasts(monkeypatch)
    run_jobs(runtime)
    [stored] = payouts_of(runtime, refund_id)

    # Empty the treasury between signing and broadcasting.
    drain = keccak(b"transferFrom(address,address,uint256)")[:4] + abi_encode(
        ["address", "address", "uint256"],
        [key.address, Account.create().address, usdc_balance(runtime, key.address)],
    )
    send(chain, sign(chain, thief, to=chain.tokens["usdc"].address, data=drain))
    monkeypatch.undo()
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)

    [dead] = payouts_of(runtime, refund_id)
    assert dead.id == stored.id
    assert dead.status == "dead"
    assert "reverted" in (dead.message or "")
    body = get_refund_body(client, api_key, order.id, refund_id)
    assert body["status"] == ACCEPTED
    assert body["payout"]["status"] == "failed-insufficient-funds"

    fund_treasury(runtime, "100")
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    dead, paid = payouts_of(runtime, refund_id)
    assert paid.status == "confirmed"
    assert paid.nonce == dead.nonce + 1
    payer = order_row(runtime, order.id).paid_from
    assert payer is not None
    assert usdc_balance(runtime, payer) == units(order.line_item_totals[0])


@pytest.mark.parametrize(
    "settings_overrides",
    [{"devnet_confirmations": 3, "payout_recheck_seconds": 0.05}],
)
def test_payout_waits_for_confirmations(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order, refund = received_order(client, api_key, runtime)
    refund_id = refund["refundId"]
    run_jobs(runtime)
    [payout] = payouts_of(runtime, refund_id)
    assert payout.status == "sent"
    body = get_refund_body(client, api_key, order.id, refund_id)
    assert body["status"] == ACCEPTED
    assert body["payout"]["status"] == "submitted"
    assert body["payout"]["txId"] == payout.tx_hash
    assert order_row(runtime, order.id).refunded_amount == 0

    devnet = devnet_chain(runtime).devnet
    assert devnet is not None
    devnet.mine(2)
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    assert refund_row(runtime, refund_id).status == COMPLETED
    assert payouts_of(runtime, refund_id)[0].status == "confirmed"
