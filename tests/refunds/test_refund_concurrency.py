import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy.orm import Session
from tests.conftest import LiveServer
from tests.refunds.helpers import refunds_of, shipped_order
from tests.shipping.helpers import ORDERS, table_counts

from orderdesk.orders.models import Order
from orderdesk.refunds import services
from orderdesk.refunds.exceptions import RefundAlreadyRequested, ReturnWindowExpired
from orderdesk.runtime import Runtime

WINDOW = timedelta(days=30)


def test_twenty_concurrent_requests_one_refund(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    barrier = threading.Barrier(20)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def post(number: int) -> None:
        barrier.wait()
        response = requests.post(
            f"{live_server.url}{ORDERS}/{order.id}/refunds",
            json={"lineItem": 1, "reason": f"request {number}"},
            headers={"X-API-KEY": api_key},
            timeout=60,
        )
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=post, args=(number,)) for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 19
    [winner] = [answer.json() for answer in answers if answer.status_code == 201]
    losers = [answer.json() for answer in answers if answer.status_code == 409]
    assert {loser["code"] for loser in losers} == {"refund_already_requested"}
    assert all(loser["refund"] == winner for loser in losers)
    [row] = refunds_of(runtime, order.id)
    assert row.id == winner["refundId"]
    assert row.line_item == 1


def test_index_decides_race(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that passed the check before a concurrent one committed still gets
    the 409 with the winner, because the partial unique index rejects its insert."""
    order = shipped_order(runtime)
    with runtime.session_factory() as session, session.begin():
        winner = services.create_refund_request(
            session,
            session.get_one(Order, order.id),
            0,
            "first",
            return_window=WINDOW,
            actor="t",
        )
    before = table_counts(runtime)

    real_find = services.find_active_refund
    calls: list[int] = []

    def find_missing_first(session: Session, order_id: str, line_item: int) -> Any:
        calls.append(line_item)
        # The first look runs as if the winner had not committed yet.
        return None if len(calls) == 1 else real_find(session, order_id, line_item)

    monkeypatch.setattr(services, "find_active_refund", find_missing_first)
    with runtime.session_factory() as session:
        with pytest.raises(RefundAlreadyRequested) as caught:
            services.create_refund_request(
                session,
                session.get_one(Order, order.id),
                0,
                "second",
                return_window=WINDOW,
                actor="t",
            )
        session.rollback()
    assert len(calls) == 2
    assert caught.value.code == "refund_already_requested"
    assert caught.value.extra["refund"]["refundId"] == winner.id
    assert table_counts(runtime) == before


def test_window_boundary_in_service(runtime: Runtime) -> None:
    order = shipped_order(runtime, delivered_days_ago=3)
    with runtime.session_factory() as session:
        row = session.get_one(Order, order.id)
        delivered_at = row.line_items[0].delivered_at
        assert delivered_at is not None
        at_close = delivered_at + timedelta(days=3)
        refund = services.create_refund_request(
            session,
            row,
            0,
            "x",
            return_window=timedelta(days=3),
            actor="t",
            now=at_close,
        )
        assert refund.created_at == at_close
        with pytest.raises(ReturnWindowExpired):
            services.create_refund_request(
                session,
                row,
                1,
                "x",
                return_window=timedelta(days=3),
                actor="t",
                now=at_close + timedelta(milliseconds=1),
            )
        session.rollback()


def test_zero_day_window_closes_at_delivery(runtime: Runtime) -> None:
    order = shipped_order(runtime, delivered_days_ago=0.01)
    with runtime.session_factory() as session:
        with pytest.raises(ReturnWindowExpired):
            services.create_refund_request(
                session,
                session.get_one(Order, order.id),
                0,
                "x",
                return_window=timedelta(0),
                actor="t",
            )
