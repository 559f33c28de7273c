"""`orderdesk demo`: the main job over HTTP, as an integration would run it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from eth_account import Account
from eth_utils import to_checksum_address
from rich.console import Console

console = Console(soft_wrap=True)

DEMO_ITEMS = [
    {"productLocator": "amazon:B08N5WRWNW", "quantity": 2},
    {
        "productLocator": "shopify:https://lumen-home.myshopify.com/products/soy-candle:39990001112234"
    },
]
DEMO_RECIPIENT = {
    "email": "jordan.lee@example.com",
    "physicalAddress": {
        "name": "Jordan Lee",
        "line1": "350 Fifth Avenue",
        "line2": "Suite 4100",
        "city": "New York",
        "state": "NY",
        "postalCode": "10118",
        "country": "US",
    },
}
ERC20_TRANSFER_ABI = [
    {
        "name": "transfer",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "to", "type": "address"},
            {"name": "amount", "type": "uint256"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    }
]


# How long to wait for automatic fulfilment before shipping by hand, and for
# any delivery or payout at all.
MANUAL_FALLBACK_SECONDS = 20
DELIVERY_TIMEOUT_SECONDS = 180


class DemoFailed(Exception):
    pass


class DemoClient:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"X-API-KEY": api_key}, timeout=30
        )

    def call(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        """Send one request and return its JSON, raising DemoFailed on any surprise."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DemoFailed(f"{method} {path} failed: {exc}") from exc
        if response.status_code != expected:
            raise DemoFailed(
                f"{method} {path} returned {response.status_code}, "
                f"expected {expected}: "
                f"{response.text[:500]}"
            )
        return response.json()


def step(title: str) -> None:
    console.print(f"\n[bold]== {title}[/bold]")


def show(data: Any) -> None:
    console.print_json(json.dumps(data))


def run_demo(base_url: str, api_key: str) -> None:
    client = DemoClient(base_url, api_key)
    wallet = Account.create()
    step(f"Fund a fresh devnet wallet {wallet.address}")
    show(
        client.call(
            "POST",
            "/devnet/faucet",
            200,
            json={"address": wallet.address, "usdc": "500"},
        )
    )

    step("Create an order for two catalog products")
    created = client.call(
        "POST",
        "/api/2022-06-09/orders",
        201,
        json={
            "recipient": DEMO_RECIPIENT,
            "payment": {
                "method": "devnet",
                "currency": "usdc",
                "payerAddress": wallet.address,
            },
            "lineItems": DEMO_ITEMS,
        },
    )
    order = created["order"]
    order_id = order["orderId"]
    console.print(
        f"order {order_id}: quote {order['quote']['status']}, total "
        f"{order['quote']['totalPrice']['amount']} USDC, "
        f"payment {order['payment']['status']}"
    )
    if order["payment"]["status"] != "awaiting-payment":
        raise DemoFailed(
            f"expected payment awaiting-payment, got {order['payment']['status']}"
        )

    step("Sign the prepared transfer and send it through /devnet/rpc")
    tx_id = _pay(client, base_url, wallet, order)
    console.print(f"sent {tx_id}")
    paid = client.call(
        "POST",
        f"/api/2022-06-09/orders/{order_id}/payment",
        200,
        json={"type": "crypto-tx-id", "txId": tx_id},
    )
    paid = _wait_for_payment(client, order_id, paid)
    console.print(f"payment {paid['payment']['status']}, phase {paid['phase']}")

    step("Wait for the fulfilment provider to ship and deliver the order")
    tracking = _wait_for_delivery(client, order_id)
    show(tracking)

    step("Request a refund for line item 0")
    refund = client.call(
        "POST",
        f"/api/unstable/orders/{order_id}/refunds",
        201,
        json={"lineItem": 0, "reason": "The bottle arrived dented."},
        headers={"Idempotency-Key": f"demo-{order_id}-0"},
    )
    refund_id = refund["refundId"]
    console.print(
        f"refund {refund_id}: {refund['status']}, {refund['amount']['amount']} USDC"
    )

    step("Accept the refund: a return label is emailed to the buyer")
    accepted = client.call(
        "POST", f"/api/unstable/orders/{order_id}/refunds/{refund_id}/accept", 200
    )
    label = accepted.get("returnLabel") or {}
    console.print(
        f"refund {accepted['status']}; return label {label.get('carrierName')} "
        f"{label.get('carrierTrackingNumber')}"
    )

    step("Ship the return parcel back to the merchant")
    _deliver_return(client, order_id, refund_id)

    step("Wait for the payout to the paying wallet")
    completed = _wait_for_refund(client, order_id, refund_id)
    show(completed.get("payout"))

    step("Refunds of the order")
    show(client.call("GET", f"/api/unstable/orders/{order_id}/refunds", 200))
    console.print(
        "\n[green]demo finished: every step returned what was expected[/green]"
    )


def _pay(client: DemoClient, base_url: str, wallet: Any, order: dict[str, Any]) -> str:
    """Sign the server's prepared transaction with the wallet and broadcast it."""
    import rlp
    from eth_account.typed_transactions import TypedTransaction

    prepared = order["payment"].get("preparation")
    if not prepared:
        raise DemoFailed("the order has no payment.preparation to sign")
    raw = bytes.fromhex(prepared["serializedTransaction"][2:])
    if raw[0] != 2:
        raise DemoFailed(
            "payment.preparation.serializedTransaction is not an EIP-1559 transaction"
        )
    fields = rlp.decode(raw[1:])
    chain_id, nonce, tip, max_fee, gas, to, value, data = (fields[i] for i in range(8))
    transaction = {
        "type": 2,
        "chainId": int.from_bytes(chain_id, "big"),
        "nonce": int.from_bytes(nonce, "big"),
        "maxPriorityFeePerGas": int.from_bytes(tip, "big"),
        "maxFeePerGas": int.from_bytes(max_fee, "big"),
        "gas": int.from_bytes(gas, "big"),
        "to": to_checksum_address("0x" + to.hex()),
        "value": int.from_bytes(value, "big"),
        "data": "0x" + data.hex(),
        "accessList": [],
    }
    TypedTransaction.from_dict(
        transaction
    )  # raises if the fields are not a valid type 2
    signed = wallet.sign_transaction(transaction)
    answer = client.call(
        "POST",
        "/devnet/rpc",
        200,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_sendRawTransaction",
            "params": ["0x" + signed.raw_transaction.hex()],
        },
    )
    if "result" not in answer:
        raise DemoFailed(f"eth_sendRawTransaction failed: {answer}")
    return str(answer["result"])


def _wait_for_delivery(client: DemoClient, order_id: str) -> list[dict[str, Any]]:
    """Poll tracking until every outbound package is delivered.

    When no package shows up (a project with the manual provider), the demo
    records a shipment and its events itself, as an operator would.
    """
    path = f"/api/unstable/orders/{order_id}/tracking"
    appeared = time.monotonic() + MANUAL_FALLBACK_SECONDS
    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    last: list[str] = []
    while True:
        tracking = client.call("GET", path, 200)
        outbound = [p for p in tracking if p["kind"] == "outbound"]
        statuses = [p["status"] for p in outbound]
        if statuses != last:
            console.print(f"packages: {', '.join(statuses) or 'none yet'}")
            last = statuses
        if outbound and all(status == "delivered" for status in statuses):
            return list(tracking)
        if not outbound and time.monotonic() > appeared:
            console.print("no package was shipped automatically; recording one")
            _record_shipment(client, order_id)
            continue
        if time.monotonic() > deadline:
            raise DemoFailed(
                f"packages still {statuses} after {DELIVERY_TIMEOUT_SECONDS} s"
            )
        time.sleep(1)


def _record_shipment(client: DemoClient, order_id: str) -> None:
    order = client.call("GET", f"/api/2022-06-09/orders/{order_id}", 200)
    package = client.call(
        "POST",
        f"/api/unstable/orders/{order_id}/shipments",
        201,
        json={
            "carrierName": "UPS",
            "carrierTrackingNumber": "1Z999AA1"
            + order_id.replace("-", "")[:10].upper(),
            "lineItems": list(range(len(order["lineItems"]))),
        },
    )
    _post_events(client, order_id, package["packageId"])


def _post_events(client: DemoClient, order_id: str, package_id: str) -> None:
    now = datetime.now(UTC)
    for status, when in (
        ("shipped", now - timedelta(minutes=2)),
        ("delivered", now - timedelta(minutes=1)),
    ):
        client.call(
            "POST",
            f"/api/unstable/orders/{order_id}/shipments/{package_id}/events",
            201,
            json={
                "status": status,
                "occurredAt": when.isoformat(),
                "location": "Reno, NV",
            },
        )


def _deliver_return(client: DemoClient, order_id: str, refund_id: str) -> None:
    tracking = client.call("GET", f"/api/unstable/orders/{order_id}/tracking", 200)
    returns = [
        p for p in tracking if p["kind"] == "return" and p.get("refundId") == refund_id
    ]
    if not returns:
        raise DemoFailed(f"no return parcel is tracked for refund {refund_id}")
    _post_events(client, order_id, returns[0]["packageId"])
    console.print(f"return parcel {returns[0]['packageId']} delivered")


def _wait_for_refund(
    client: DemoClient, order_id: str, refund_id: str
) -> dict[str, Any]:
    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    while True:
        refunds = client.call("GET", f"/api/unstable/orders/{order_id}/refunds", 200)
        refund = next(r for r in refunds if r["refundId"] == refund_id)
        if refund["status"] == "refund-request-completed":
            console.print(f"refund completed: payout {refund['payout']['txId']}")
            return dict(refund)
        if time.monotonic() > deadline:
            raise DemoFailed(f"refund still {refund['status']}: {refund.get('payout')}")
        time.sleep(1)


def _wait_for_payment(
    client: DemoClient, order_id: str, order: dict[str, Any]
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while order["payment"]["status"] != "completed":
        if order["payment"].get("failureReason"):
            raise DemoFailed(f"payment failed: {order['payment']['failureReason']}")
        if time.monotonic() > deadline:
            raise DemoFailed(f"payment still {order['payment']['status']} after 60 s")
        time.sleep(0.5)
        order = client.call("GET", f"/api/2022-06-09/orders/{order_id}", 200)
    return order
