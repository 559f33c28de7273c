"""Concurrent reviews of one refund through a real server: one move wins."""

from __future__ import annotations

import threading
from typing import Any

import requests
from sqlalchemy import select
from tests.conftest import LiveServer
from tests.refunds.helpers import (
    fund_treasury,
    jobs_of,
    payouts_of,
    refund_row,
    requested_direct,
    run_jobs,
    shipped_order,
    token_transfers,
    usdc_balance,
)
from tests.shipping.helpers import ORDERS, line_items_of, order_events

from orderdesk.payments.amounts import to_base_units
from orderdesk.runtime import Runtime
from orderdesk.shipping.models import Package

CALLERS = 20


def post_together(url: str, key: str, count: int = CALLERS) -> list[requests.Response]:
    """POST `url` from `count` threads released at the same instant."""
    barrier = threading.Barrier(count)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def post() -> None:
        barrier.wait()
        response = requests.post(url, headers={"X-API-KEY": key}, timeout=120)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=post) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def codes(answers: list[requests.Response]) -> list[Any]:
    return sorted((answer.status_code, answer.json().get("code")) for answer in answers)


def return_packages(runtime: Runtime, order_id: str) -> list[Package]:
    with runtime.session_factory() as session:
        query = select(Package).where(
            Package.order_id == order_id, Package.kind == "return"
        )
        return list(session.scalars(query))


def test_twenty_accepts_one_wins(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=1)
    refund_id = requested_direct(runtime, order.id, 0)
    base = f"{live_server.url}{ORDERS}/{order.id}/refunds/{refund_id}"

    accepts = post_together(f"{base}/accept", api_key)
    assert codes(accepts) == [(200, None)] + [(409, "invalid_transition")] * 19
    [winner] = [answer.json() for answer in accepts if answer.status_code == 200]
    assert winner["status"] == "refund-request-accepted"
    assert winner["returnLabel"] is not None
    [parcel] = return_packages(runtime, order.id)
    assert parcel.tracking_number == winner["returnLabel"]["carrierTrackingNumber"]
    assert len(jobs_of(runtime, "mail.send")) == 1
    assert len(jobs_of(runtime, "refund.return_label")) == 1
    moves = [
        e for e in order_events(runtime, order.id) if e.to_state == winner["status"]
    ]
    assert len(moves) == 1

    received = post_together(f"{base}/return-received", api_key)
    assert codes(received) == [(200, None)] + [(409, "return_already_received")] * 19
    assert len(jobs_of(runtime, "refund.payout")) == 1

    treasury = fund_treasury(runtime, "100")
    run_jobs(runtime)
    assert refund_row(runtime, refund_id).status == "refund-request-completed"
    [payout] = payouts_of(runtime, refund_id)
    assert payout.from_address == treasury
    [transfer] = token_transfers(runtime, treasury, payout.to_address)
    amount = line_items_of(runtime, order.id)[0].total
    assert amount is not None
    assert int.from_bytes(bytes(transfer["data"]), "big") == to_base_units(amount, 6)
    assert usdc_balance(runtime, payout.to_address) == to_base_units(amount, 6)
    assert len(jobs_of(runtime, "mail.send")) == 2
