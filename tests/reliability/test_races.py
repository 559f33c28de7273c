"""Races through real HTTP: many requests released at one instant against a live
uvicorn server, on SQLite and PostgreSQL. Each test checks the responses and then
the rows, mails and on-chain transfers that the race left behind."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import pytest
import requests
from sqlalchemy import select
from tests.conftest import LiveServer
from tests.mail.conftest import (  # noqa: F401 - fixtures
    SmtpServer,
    SmtpServerFactory,
    certificate,
    smtp_server,
)
from tests.orders.helpers import ORDERS as ORDERS_API
from tests.orders.helpers import order_body, seed_catalog
from tests.payments.helpers import devnet_chain, funded_account
from tests.payments.test_submission import pay_order
from tests.refunds.helpers import (
    fund_treasury,
    jobs_of,
    make_jobs_due,
    payouts_of,
    refund_row,
    refunds_of,
    requested_direct,
    shipped_order,
    token_transfers,
)
from tests.refunds.test_review_concurrency import codes, return_packages
from tests.shipping.helpers import (
    ORDERS,
    hours_ago,
    iso,
    line_items_of,
    new_paid_order,
    order_events,
    order_row,
)

from orderdesk.jobs.models import Job
from orderdesk.jobs.worker import Worker
from orderdesk.payments.amounts import to_base_units
from orderdesk.refunds.models import IdempotencyRecord
from orderdesk.refunds.statuses import RefundEvent
from orderdesk.runtime import Runtime
from orderdesk.webhooks.models import WebhookDelivery

T = TypeVar("T")
WEBHOOKS = "/api/unstable/webhooks"
# A loopback port nothing listens on: these tests count deliveries, not send them.
UNUSED_HOOK_URL = "http://127.0.0.1:9/hooks"


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run each call in its own thread, all released by one barrier, and return
    their results in the order of `calls`."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(position: int, call: Callable[[], T]) -> None:
        barrier.wait()
        try:
            results[position] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(position, call))
        for position, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def poster(
    url: str, key: str, body: Any = None, headers: dict[str, str] | None = None
) -> Callable[[], requests.Response]:
    def post() -> requests.Response:
        return requests.post(
            url,
            json=body,
            headers={"X-API-KEY": key, **(headers or {})},
            timeout=120,
        )

    return post


@contextmanager
def background_workers(runtime: Runtime, count: int) -> Iterator[None]:
    """Run `count` workers in threads of this process for the block's duration."""
    workers = [Worker(runtime, name=f"race-worker-{n}") for n in range(count)]
    threads = [threading.Thread(target=worker.run_forever) for worker in workers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(timeout=60)


def wait_for(
    condition: Callable[[], object], description: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{description} did not happen in {timeout} s")
        time.sleep(0.05)


def register_endpoint(server: LiveServer, key: str, events: list[str]) -> None:
    response = requests.post(
        f"{server.url}{WEBHOOKS}",
        json={"url": UNUSED_HOOK_URL, "events": events},
        headers={"X-API-KEY": key},
        timeout=30,
    )
    assert response.status_code == 201, response.text


def deliveries_of(runtime: Runtime, event_type: str) -> list[WebhookDelivery]:
    with runtime.session_factory() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.event_type == event_type)
        return list(session.scalars(query))


def message_ids(smtp: SmtpServer) -> Counter[str]:
    return Counter(str(message["Message-ID"]).strip() for message in smtp.messages)


def unfinished_jobs(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.session_factory() as session:
        rows = session.execute(select(Job.kind, Job.status).where(Job.status != "done"))
        return [(kind, status) for kind, status in rows]


@pytest.fixture
def smtp(smtp_server: SmtpServerFactory) -> SmtpServer:  # noqa: F811
    return smtp_server()


@pytest.fixture
def settings_overrides(smtp: SmtpServer) -> dict[str, object]:
    # A payout that found the treasury empty is retried after 0.2 s, not 30 s.
    return {"smtp_url": f"smtp://127.0.0.1:{smtp.port}", "payout_retry_seconds": 0.2}


# Refund requests


REQUESTS = 50


def test_fifty_requests_distinct_keys(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=1)
    register_endpoint(live_server, api_key, ["orders.refund.initiated"])
    url = f"{live_server.url}{ORDERS}/{order.id}/refunds"
    body = {"lineItem": 1, "reason": "The lid is cracked."}

    answers = at_once(
        [
            poster(url, api_key, body, {"Idempotency-Key": f"request-{number}"})
            for number in range(REQUESTS)
        ]
    )

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * (REQUESTS - 1)
    [winner_at] = [n for n, answer in enumerate(answers) if answer.status_code == 201]
    winner = answers[winner_at].json()
    losers = [answer.json() for answer in answers if answer.status_code == 409]
    assert {loser["code"] for loser in losers} == {"refund_already_requested"}
    assert all(loser["refund"]["refundId"] == winner["refundId"] for loser in losers)
    [row] = refunds_of(runtime, order.id)
    assert row.id == winner["refundId"]
    assert row.line_item == 1
    assert row.status == "refund-request-initiated"
    # Only the winner's key keeps a response: an error response is not stored.
    with runtime.session_factory() as session:
        records = list(session.scalars(select(IdempotencyRecord)))
    assert [record.key for record in records] == [f"request-{winner_at}"]
    assert records[0].status_code == 201
    kinds = [e.kind for e in order_events(runtime, order.id)]
    assert kinds.count(RefundEvent.REQUESTED) == 1
    assert len(deliveries_of(runtime, "orders.refund.initiated")) == 1


def test_fifty_requests_shared_key(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=1)
    register_endpoint(live_server, api_key, ["orders.refund.initiated"])
    url = f"{live_server.url}{ORDERS}/{order.id}/refunds"
    body = {"lineItem": 0, "reason": "Wrong size."}
    post = poster(url, api_key, body, {"Idempotency-Key": "one-key-for-all"})

    answers = at_once([post] * REQUESTS)

    assert [answer.status_code for answer in answers] == [201] * REQUESTS
    bodies = [answer.json() for answer in answers]
    assert all(body == bodies[0] for body in bodies)
    replayed = [a.headers.get("Idempotent-Replayed") for a in answers]
    assert Counter(replayed) == {"true": REQUESTS - 1, None: 1}
    [row] = refunds_of(runtime, order.id)
    assert row.id == bodies[0]["refundId"]
    with runtime.session_factory() as session:
        records = list(session.scalars(select(IdempotencyRecord)))
    assert [(r.key, r.status_code) for r in records] == [("one-key-for-all", 201)]
    kinds = [e.kind for e in order_events(runtime, order.id)]
    assert kinds.count(RefundEvent.REQUESTED) == 1
    assert len(deliveries_of(runtime, "orders.refund.initiated")) == 1


# Review: accept and return-received


ACCEPTS = 20


def test_twenty_accepts_one_label_mail_payout(
    live_server: LiveServer, api_key: str, runtime: Runtime, smtp: SmtpServer
) -> None:
    order = shipped_order(runtime, delivered_days_ago=1)
    payer = order_row(runtime, order.id).paid_from
    assert payer is not None
    refund_id = requested_direct(runtime, order.id, 0)
    base = f"{live_server.url}{ORDERS}/{order.id}/refunds/{refund_id}"
    domain = "orderdesk.localhost"
    accepted_id = f"<refund-{refund_id}-accepted@{domain}>"
    completed_id = f"<refund-{refund_id}-completed@{domain}>"

    # Two workers run jobs while the requests race, as in a deployment.
    with background_workers(runtime, 2):
        accepts = at_once([poster(f"{base}/accept", api_key)] * ACCEPTS)
        assert codes(accepts) == [(200, None)] + [(409, "invalid_transition")] * (
            ACCEPTS - 1
        )
        [winner] = [a.json() for a in accepts if a.status_code == 200]
        assert winner["returnLabel"] is not None
        wait_for(lambda: accepted_id in message_ids(smtp), "the acceptance email")
        # The label job, due later as a fallback, finds the label issued.
        make_jobs_due(runtime, "refund.return_label")

        received = at_once([poster(f"{base}/return-received", api_key)] * ACCEPTS)
        assert codes(received) == [(200, None)] + [(409, "return_already_received")] * (
            ACCEPTS - 1
        )
        treasury = fund_treasury(runtime, "100")
        wait_for(
            lambda: completed_id in message_ids(smtp) and not unfinished_jobs(runtime),
            "the payout and its receipt email",
        )

    [parcel] = return_packages(runtime, order.id)
    label = winner["returnLabel"]
    assert parcel.tracking_number == label["carrierTrackingNumber"]
    kinds = [e.kind for e in order_events(runtime, order.id)]
    assert kinds.count(RefundEvent.RETURN_LABEL_ISSUED) == 1
    assert kinds.count(RefundEvent.PAYOUT_SIGNED) == 1
    assert message_ids(smtp) == {accepted_id: 1, completed_id: 1}
    assert [job.status for job in jobs_of(runtime, "refund.return_label")] == ["done"]
    assert [job.status for job in jobs_of(runtime, "refund.payout")] == ["done"]

    refund = refund_row(runtime, refund_id)
    assert refund.status == "refund-request-completed"
    [payout] = payouts_of(runtime, refund_id)
    assert payout.status == "confirmed"
    assert payout.from_address == treasury
    [transfer] = token_transfers(runtime, treasury, payer)
    amount = line_items_of(runtime, order.id)[0].total
    assert amount is not None
    assert int.from_bytes(bytes(transfer["data"]), "big") == to_base_units(amount, 6)
    assert order_row(runtime, order.id).refunded_amount == amount
    moves = [e.to_state for e in order_events(runtime, order.id) if e.to_state]
    assert moves.count("refund-request-accepted") == 1
    assert moves.count("refund-request-completed") == 1


# Payments


PAYMENT_ROUNDS = 5


def test_one_tx_for_two_orders(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    seed_catalog(runtime)
    chain = devnet_chain(runtime)
    payer = funded_account(chain, "1000")

    def create() -> dict[str, Any]:
        body = order_body()
        body["payment"]["payerAddress"] = payer.address
        response = requests.post(
            f"{live_server.url}{ORDERS_API}",
            json=body,
            headers={"X-API-KEY": api_key},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return dict(response.json()["order"])

    winners: list[str] = []
    losers: list[str] = []
    for _round in range(PAYMENT_ROUNDS):
        first, second = create(), create()
        assert first["quote"]["totalPrice"] == second["quote"]["totalPrice"]
        tx_id = pay_order(chain, runtime, payer, first)
        payment = {"type": "crypto-tx-id", "txId": tx_id}
        answers = at_once(
            [
                poster(
                    f"{live_server.url}{ORDERS_API}/{o['orderId']}/payment",
                    api_key,
                    payment,
                )
                for o in (first, second)
            ]
        )
        assert [answer.status_code for answer in answers] == [200, 200]
        paid = {a.json()["orderId"]: a.json()["payment"] for a in answers}
        statuses = sorted(p["status"] for p in paid.values())
        assert statuses == ["awaiting-payment", "completed"]
        [winner] = [i for i, p in paid.items() if p["status"] == "completed"]
        [loser] = [i for i, p in paid.items() if p["status"] != "completed"]
        assert paid[loser]["failureReason"]["code"] == "tx-already-used"
        assert paid[winner]["received"]["txId"] == tx_id.lower()
        winners.append(winner)
        losers.append(loser)

    # Whatever the workers still do (rechecks, fulfilment) pays no loser.
    Worker(runtime).run_until_idle()
    for winner, loser in zip(winners, losers, strict=True):
        won, lost = order_row(runtime, winner), order_row(runtime, loser)
        assert won.payment_state == "completed"
        assert lost.payment_state != "completed"
        assert lost.payment_tx_id is None
        assert lost.paid_at is None
        assert lost.received_amount is None
        kinds = [e.kind for e in order_events(runtime, loser)]
        assert "payment.received" not in kinds
        assert kinds.count("payment.failed") == 1
        assert [e.kind for e in order_events(runtime, winner)].count(
            "payment.received"
        ) == 1
    started = sorted(
        job.payload["order_id"] for job in jobs_of(runtime, "fulfilment.start")
    )
    assert started == sorted(winners)


# Tracking events


EVENTS = 30
# The statuses along a parcel's way, with a delivery that later events cannot undo.
ROUTE = (
    ["shipped"] * 6
    + ["exception"]
    + ["shipped"] * 5
    + ["out-for-delivery", "delivery-attempted", "available-for-pickup"]
    + ["shipped"] * 3
    + ["out-for-delivery", "exception", "out-for-delivery", "delivery-attempted"]
    + ["out-for-delivery", "delivered"]
    + ["exception"] * 2
    + ["shipped", "out-for-delivery", "exception", "delivered"]
)


def tracking_events(seed: int) -> list[dict[str, Any]]:
    """EVENTS distinct events oldest first, over the last three days, some with a new
    delivery estimate."""
    assert len(ROUTE) == EVENTS
    rng = random.Random(seed)
    start = hours_ago(72)
    events = []
    for number, status in enumerate(ROUTE):
        occurred = start + timedelta(
            minutes=130 * number, milliseconds=rng.randrange(1000)
        )
        event: dict[str, Any] = {
            "status": status,
            "occurredAt": iso(occurred),
            "description": f"Scan {number}",
            "location": rng.choice(["Reno, NV", "Sparks, NV", "Carson City, NV"]),
        }
        if rng.random() < 0.4:
            lower = occurred + timedelta(days=rng.randrange(1, 4))
            event["deliveryTimeRange"] = {
                "lowerBound": iso(lower),
                "upperBound": iso(lower + timedelta(hours=rng.randrange(2, 9))),
            }
        events.append(event)
    return events


def comparable(tracking: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tracking entries without what differs between two packages."""
    ignored = {"packageId", "packageTracking", "trackingUrl", "createdAt", "updatedAt"}
    return [{k: v for k, v in entry.items() if k not in ignored} for entry in tracking]


def test_shuffled_events_match_serial(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"tracking race seed {seed}")
    events = tracking_events(seed)
    headers = {"X-API-KEY": api_key}

    def new_package(number: str) -> tuple[str, str]:
        order = new_paid_order(runtime, items=1)
        response = requests.post(
            f"{live_server.url}{ORDERS}/{order.id}/shipments",
            json={
                "carrierName": "UPS",
                "carrierTrackingNumber": number,
                "lineItems": [0],
            },
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return order.id, response.json()["packageId"]

    def events_url(order_id: str, package_id: str) -> str:
        return f"{live_server.url}{ORDERS}/{order_id}/shipments/{package_id}/events"

    def tracking_of(order_id: str) -> list[dict[str, Any]]:
        url = f"{live_server.url}{ORDERS}/{order_id}/tracking"
        response = requests.get(url, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return list(response.json())

    serial_order, serial_package = new_package("1Z999AA10000000001")
    for event in events:
        answer = requests.post(
            events_url(serial_order, serial_package),
            json=event,
            headers=headers,
            timeout=30,
        )
        assert answer.status_code == 201, answer.text

    racing_order, racing_package = new_package("1Z999AA10000000002")
    shuffled = random.Random(seed).sample(events, len(events))
    url = events_url(racing_order, racing_package)
    answers = at_once([poster(url, api_key, event) for event in shuffled])
    assert [answer.status_code for answer in answers] == [201] * EVENTS, [
        answer.text for answer in answers if answer.status_code != 201
    ]

    # Newest first, one at a time: the later delivery arrives before the earlier.
    reversed_order, reversed_package = new_package("1Z999AA10000000003")
    for event in reversed(events):
        answer = requests.post(
            events_url(reversed_order, reversed_package),
            json=event,
            headers=headers,
            timeout=30,
        )
        assert answer.status_code == 201, answer.text

    expected = tracking_of(serial_order)
    assert expected[0]["status"] == "delivered"
    assert len(expected[0]["events"]) == EVENTS
    serial_items = line_items_of(runtime, serial_order)
    for other in (racing_order, reversed_order):
        assert comparable(tracking_of(other)) == comparable(expected)
        items = line_items_of(runtime, other)
        assert [i.delivery_status for i in items] == [
            i.delivery_status for i in serial_items
        ]
        # The return window starts at the first delivery, whatever came first.
        assert [i.delivered_at for i in items] == [i.delivered_at for i in serial_items]
        assert order_row(runtime, other).phase == "completed"

    # The same events again, at once: each is a duplicate and changes nothing.
    again = at_once([poster(url, api_key, event) for event in shuffled])
    assert [answer.status_code for answer in again] == [200] * EVENTS
    assert comparable(tracking_of(racing_order)) == comparable(expected)
