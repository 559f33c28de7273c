"""A refund from request to payout on both databases, with real SMTP and the devnet:
pay, ship, deliver, request, accept, email the label, deliver the return, pay out."""

from __future__ import annotations

import io
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from pypdf import PdfReader
from tests.mail.conftest import SmtpServer, SmtpServerFactory
from tests.orders.helpers import order_body, seed_catalog
from tests.payments.helpers import devnet_chain, funded_account, receipt, transfer
from tests.refunds.helpers import (
    get_refund_body,
    payouts_of,
    refund_request,
    reviewed,
    run_jobs,
    token_transfers,
    usdc_balance,
)
from tests.shipping.helpers import ISO_MS, hours_ago, post_event, shipped, tracking

from orderdesk.db.base import utcnow
from orderdesk.orders.models import Order
from orderdesk.payments.amounts import to_base_units
from orderdesk.payments.erc20 import decode_transfer_logs
from orderdesk.runtime import Runtime

ORDERS_API = "/api/2022-06-09/orders"


@pytest.fixture
def smtp(smtp_server: SmtpServerFactory) -> SmtpServer:
    return smtp_server()


@pytest.fixture
def settings_overrides(smtp: SmtpServer) -> dict[str, object]:
    return {
        "smtp_url": f"smtp://127.0.0.1:{smtp.port}?starttls=off",
        "payout_recheck_seconds": 0.05,
    }


def paid_order(
    client: TestClient, key: str, runtime: Runtime, payer: LocalAccount
) -> dict[str, Any]:
    """Create an order of the sample catalog and pay it with a devnet transfer."""
    body = order_body()
    body["payment"]["payerAddress"] = payer.address
    created = client.post(ORDERS_API, json=body, headers={"X-API-KEY": key})
    assert created.status_code == 201, created.text
    order = created.json()["order"]
    with runtime.session_factory() as session:
        treasury = session.get_one(Order, order["orderId"]).treasury_address
    total = Decimal(order["quote"]["totalPrice"]["amount"])
    tx_id = transfer(devnet_chain(runtime), payer, treasury, to_base_units(total, 6))
    paid = client.post(
        f"{ORDERS_API}/{order['orderId']}/payment",
        json={"type": "crypto-tx-id", "txId": tx_id},
        headers={"X-API-KEY": key},
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["payment"]["status"] == "completed"
    return paid.json()


def label_text(message: EmailMessage) -> str:
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    pdf = attachment.get_content()
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_refund_request_to_payout(
    client: TestClient, api_key: str, runtime: Runtime, smtp: SmtpServer
) -> None:
    seed_catalog(runtime)
    chain = devnet_chain(runtime)
    payer = funded_account(chain, "1000")
    order = paid_order(client, api_key, runtime, payer)
    order_id = order["orderId"]
    outbound = shipped(client, api_key, order_id, [0, 1])
    delivered = post_event(
        client, api_key, order_id, outbound["packageId"], "delivered", hours_ago(2)
    )
    assert delivered.status_code == 201, delivered.text

    # Request and accept: the reply carries the return label.
    request = refund_request(
        client,
        order_id,
        {"lineItem": 1, "reason": "Left earbud is silent."},
        key=api_key,
    )
    assert request.status_code == 201, request.text
    refund_id = request.json()["refundId"]
    amount = Decimal(request.json()["amount"]["amount"])
    assert amount == Decimal(order["lineItems"][1]["quote"]["totalPrice"]["amount"])
    accepted = reviewed(client, api_key, order_id, refund_id, "accept")
    assert accepted["status"] == "refund-request-accepted"
    label = accepted["returnLabel"]
    assert label["carrierName"] == "USPS"
    number = label["carrierTrackingNumber"]
    assert [entry["status"] for entry in accepted["history"]] == [
        "refund-request-initiated",
        "refund-request-accepted",
    ]

    # The label email reaches the SMTP server with the PDF label attached.
    run_jobs(runtime)
    [label_mail] = smtp.messages
    assert label_mail["To"].addresses[0].addr_spec == "jordan@example.com"
    assert refund_id in label_mail["Subject"]
    text = label_text(label_mail)
    assert number in text
    assert refund_id in text

    # The return parcel is tracked like any package, with kind "return".
    [_, parcel] = tracking(client, api_key, order_id)
    assert parcel["kind"] == "return"
    assert parcel["lineItems"] == [1]
    assert parcel["packageTracking"] == {
        "carrierName": "USPS",
        "carrierTrackingNumber": number,
    }

    # The parcel's delivery starts the payout; the worker pays the payer.
    before = usdc_balance(runtime, payer.address)
    arrived = post_event(
        client, api_key, order_id, parcel["packageId"], "delivered", utcnow()
    )
    assert arrived.status_code == 201, arrived.text
    scheduled = get_refund_body(client, api_key, order_id, refund_id)
    assert scheduled["status"] == "refund-request-accepted"
    assert ISO_MS.fullmatch(scheduled["returnReceivedAt"])
    assert scheduled["payout"]["status"] == "scheduled"
    run_jobs(runtime)

    completed = get_refund_body(client, api_key, order_id, refund_id)
    assert completed["status"] == "refund-request-completed"
    payout = completed["payout"]
    assert payout["status"] == "confirmed"
    assert payout["chain"] == "devnet"
    assert payout["amount"] == format(amount, "f")
    assert payout["currency"] == "usdc"
    assert payout["message"] is None
    assert completed["history"][-1]["status"] == "refund-request-completed"
    assert completed["history"][-1]["actor"] == "system"
    assert usdc_balance(runtime, payer.address) - before == to_base_units(amount, 6)

    mined = receipt(chain, payout["txId"])
    assert mined["status"] == 1
    [moved] = decode_transfer_logs(mined["logs"])
    assert moved.recipient == payer.address
    assert moved.amount == to_base_units(amount, 6)
    [row] = payouts_of(runtime, refund_id)
    assert row.status == "confirmed"
    assert len(token_transfers(runtime, row.from_address, payer.address)) == 1

    read = client.get(f"{ORDERS_API}/{order_id}", headers={"X-API-KEY": api_key})
    assert read.json()["payment"]["refunded"] == {
        "amount": payout["amount"],
        "currency": "usdc",
    }
    receipts = [m for m in smtp.messages if "complete" in m["Subject"]]
    assert len(receipts) == 1
    receipt_text = receipts[0].get_body(preferencelist=("plain",)).get_content()
    assert payout["txId"] in receipt_text
    assert payer.address in receipt_text
