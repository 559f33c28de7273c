"""Events of one order reach one endpoint in emit order, even with two workers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient
from tests.webhooks.conftest import (
    WEBHOOKS,
    Received,
    Receiver,
    all_settled,
    create_endpoint,
    deliveries,
    emit,
)

from orderdesk.jobs.worker import Worker
from orderdesk.runtime import Runtime
from orderdesk.webhooks import events


def run_workers_until(
    runtime: Runtime, done: Callable[[], bool], count: int = 2, timeout: float = 30
) -> None:
    """Run `count` workers in threads, as separate worker processes would, until
    `done()` is true."""
    stop = threading.Event()

    def loop(worker: Worker) -> None:
        while not stop.is_set():
            if worker.run_once() == 0:
                time.sleep(0.005)

    threads = [
        threading.Thread(
            target=loop, args=(Worker(runtime, name=f"w{i}"),), daemon=True
        )
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not done after {timeout} s")
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def step(request: Received) -> tuple[str, int]:
    data = request.payload["data"]
    return data["orderId"], data["step"]


def emit_steps(runtime: Runtime, order_id: str, types: list[str]) -> None:
    for number, event_type in enumerate(types, start=1):
        emit(
            runtime,
            event_type,
            {"orderId": order_id, "step": number},
            order_id=order_id,
        )


STEPS = [
    events.ORDERS_QUOTE_CREATED,
    events.ORDERS_PAYMENT_SUCCEEDED,
    events.ORDERS_DELIVERY_INITIATED,
    events.ORDERS_TRACKING_UPDATED,
]


def test_order_events_arrive_in_order(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_retry_scale = 0.001  # type: ignore[attr-defined]
    create_endpoint(client, api_key, receiver.url)
    first, other = str(uuid.uuid4()), str(uuid.uuid4())
    failures = {"left": 2}

    def behaviour(request: Received) -> int:
        # The first event of the first order fails twice, for about 0.3 s.
        if step(request) == (first, 1) and failures["left"] > 0:
            failures["left"] -= 1
            return 500
        return 200

    receiver.behaviour = behaviour
    emit_steps(runtime, first, STEPS)
    emit_steps(runtime, other, STEPS[:2])

    run_workers_until(runtime, all_settled(runtime))

    seen = [step(r) for r in receiver.requests]
    assert [s for s in seen if s[0] == first] == [
        (first, n) for n in (1, 1, 1, 2, 3, 4)
    ]
    assert [s for s in seen if s[0] == other] == [(other, 1), (other, 2)]
    # The other order is not held back by the first order's retries.
    first_success = len(seen) - seen[::-1].index((first, 1)) - 1
    assert seen.index((other, 2)) < first_success
    assert all(row.status == "delivered" for row in deliveries(runtime))


def test_failed_event_unblocks_next(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_retry_scale = 0.00001  # type: ignore[attr-defined]
    create_endpoint(client, api_key, receiver.url)
    order_id = str(uuid.uuid4())
    receiver.behaviour = lambda r: 500 if step(r) == (order_id, 1) else 200
    emit_steps(runtime, order_id, STEPS[:3])

    run_workers_until(runtime, all_settled(runtime))

    seen = [step(r)[1] for r in receiver.requests]
    assert seen == [1] * 8 + [2, 3]
    assert [row.status for row in deliveries(runtime)] == [
        "failed",
        "delivered",
        "delivered",
    ]


def test_other_endpoint_not_held_back(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_retry_scale = 0.01  # type: ignore[attr-defined]
    create_endpoint(client, api_key, receiver.url + "/down")
    healthy = create_endpoint(client, api_key, receiver.url + "/up")
    order_id = str(uuid.uuid4())
    receiver.behaviour = lambda r: 500 if r.path.endswith("/down") else 200
    emit_steps(runtime, order_id, STEPS[:2])

    def healthy_done() -> bool:
        rows = [d for d in deliveries(runtime) if d.endpoint_id == healthy["id"]]
        return all(d.status == "delivered" for d in rows)

    run_workers_until(runtime, healthy_done)

    down = [step(r)[1] for r in receiver.requests if r.path.endswith("/down")]
    up = [step(r)[1] for r in receiver.requests if r.path.endswith("/up")]
    assert up == [1, 2]
    # The failing endpoint still retries step 1 and has not been sent step 2.
    assert set(down) == {1}


def test_resend_does_not_block(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_retry_scale = 0.01  # type: ignore[attr-defined]
    endpoint = create_endpoint(client, api_key, receiver.url)
    order_id = str(uuid.uuid4())
    emit_steps(runtime, order_id, STEPS[:1])
    run_workers_until(runtime, all_settled(runtime))
    [first] = deliveries(runtime)

    # From now on step 1 fails, so its resend stays pending while step 2 goes out.
    receiver.behaviour = lambda r: 500 if step(r) == (order_id, 1) else 200
    response = client.post(
        f"{WEBHOOKS}/{endpoint['id']}/deliveries/{first.delivery_id}/resend",
        headers={"X-API-KEY": api_key},
    )
    assert response.status_code == 202, response.text
    emit(
        runtime,
        events.ORDERS_PAYMENT_SUCCEEDED,
        {"orderId": order_id, "step": 2},
        order_id=order_id,
    )

    run_workers_until(runtime, lambda: deliveries(runtime)[1].status == "delivered")

    assert deliveries(runtime)[0].status == "pending"
    assert (order_id, 2) in [step(r) for r in receiver.requests]
