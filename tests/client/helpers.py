"""Devnet payments over HTTP and order arguments shared by the SDK tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from tests.orders.helpers import order_body

from orderdesk.client import Order, OrderDesk, PaymentPreparation
from orderdesk.jobs.worker import Worker
from orderdesk.runtime import Runtime

# The total of order_body() with the sample catalog: 2 x 24.95 + 49.99, with tax
# and shipping.
ORDER_TOTAL = Decimal("115.38")
TRACKING_NUMBER = "1Z 999 AA1 01 2345 6784"


def order_arguments(payer: str | None = None, **changes: Any) -> dict[str, Any]:
    """Keyword arguments of orders.create for the body of order_body(**changes)."""
    body = order_body(**changes)
    if payer is not None:
        body["payment"]["payerAddress"] = payer
    arguments = {
        "recipient": body.get("recipient"),
        "payment": body["payment"],
        "line_items": body["lineItems"],
    }
    if "locale" in body:
        arguments["locale"] = body["locale"]
    return arguments


def fund_wallet(base_url: str, usdc: str) -> LocalAccount:
    account: LocalAccount = Account.create()
    response = httpx.post(
        f"{base_url}/devnet/faucet",
        json={"address": account.address, "usdc": usdc},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return account


def signed_transfer(wallet: LocalAccount, preparation: PaymentPreparation) -> str:
    """Sign the server's unsigned EIP-1559 transfer and return it as 0x-hex."""
    raw = bytes.fromhex(preparation.serialized_transaction.removeprefix("0x"))
    assert raw[0] == 2, "the prepared transaction is not EIP-1559 (type 2)"
    fields = rlp.decode(raw[1:])
    chain_id, nonce, tip, max_fee, gas, to, value, data = fields[:8]
    transaction: dict[str, Any] = {
        "type": 2,
        "chainId": int.from_bytes(chain_id, "big"),
        "nonce": int.from_bytes(nonce, "big"),
        "maxPriorityFeePerGas": int.from_bytes(tip, "big"),
        "maxFeePerGas": int.from_bytes(max_fee, "big"),
        "gas": int.from_bytes(gas, "big"),
        "to": to_checksum_address(bytes(to)),
        "value": int.from_bytes(value, "big"),
        "data": "0x" + bytes(data).hex(),
        "accessList": [],
    }
    return "0x" + wallet.sign_transaction(transaction).raw_transaction.hex()


def send_transaction_request(raw_transaction: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_sendRawTransaction",
        "params": [raw_transaction],
    }


def transaction_id(rpc_reply: httpx.Response) -> str:
    assert rpc_reply.status_code == 200, rpc_reply.text
    answer = rpc_reply.json()
    assert "result" in answer, answer
    return str(answer["result"])


def pay(sdk: OrderDesk, wallet: LocalAccount, order: Order) -> Order:
    """Sign and send the order's prepared transfer, then submit its id."""
    assert order.payment.preparation is not None, order.payment
    raw = signed_transfer(wallet, order.payment.preparation)
    reply = httpx.post(
        f"{sdk.base_url}/devnet/rpc", json=send_transaction_request(raw), timeout=30
    )
    return sdk.orders.pay(order.order_id, transaction_id(reply))


def paid_order(sdk: OrderDesk, wallet: LocalAccount) -> Order:
    created = sdk.orders.create(**order_arguments(wallet.address))
    paid = pay(sdk, wallet, created.order)
    assert paid.payment.status == "completed", paid.payment
    return paid


def delivered_order(sdk: OrderDesk, wallet: LocalAccount) -> Order:
    """A paid order whose two line items sit in one package delivered 3 hours ago."""
    order = paid_order(sdk, wallet)
    package = sdk.shipments.create(
        order.order_id,
        carrier_name="UPS",
        tracking_number=TRACKING_NUMBER,
        line_items=[0, 1],
    )
    assert package.package_id is not None
    sdk.shipments.add_event(
        order.order_id,
        package.package_id,
        status="delivered",
        occurred_at=datetime.now(UTC) - timedelta(hours=3),
    )
    return sdk.orders.get(order.order_id)


def run_jobs_until(
    runtime: Runtime, done: Callable[[], bool], timeout: float = 30
) -> None:
    """Run the worker in this thread until `done()` is true."""
    worker = Worker(runtime, name="sdk-test-worker")
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s of running jobs")
        if worker.run_once() == 0:
            time.sleep(0.01)
