"""Fulfilment providers: tracking number formats, the simulated journey, and a run of
the simulation through a worker that is killed half-way."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from tests import factories
from tests.conftest import TEST_SECRET
from tests.shipping.helpers import line_items_of, order_row, table_counts, tracking

from orderdesk.auth.services import get_or_create_project
from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.services import enqueue, retry_job
from orderdesk.jobs.worker import Worker
from orderdesk.runtime import Runtime
from orderdesk.shipping import fulfilment
from orderdesk.shipping.fulfilment import (
    make_tracking_number,
    plan_packages,
    plan_steps,
    ups_check_digit,
    usps_check_digit,
)
from orderdesk.shipping.models import Package, TrackingEvent

SHOP = "shopify:https://lumen-home.myshopify.com/products/soy-candle:39990001112234"
AMAZON = "amazon:B08N5WRWNW"


# Tracking numbers.


def test_ups_check_digit_known_number() -> None:
    # 1Z999AA10123456784 is UPS's published sample number.
    assert ups_check_digit("999AA1012345678") == 4


def test_usps_check_digit_known_number() -> None:
    # A real USPS number from Shippo's tracking documentation.
    assert usps_check_digit("910296901038308181303") == 3


@pytest.mark.parametrize(
    ("carrier", "pattern"),
    [
        ("amazon", r"TBA\d{12}"),
        ("ups", r"1Z[0-9A-Z]{6}0[13]\d{7}\d"),
        ("usps", r"94001\d{17}"),
    ],
)
def test_tracking_number_formats(carrier: str, pattern: str) -> None:
    for order in range(50):
        number = make_tracking_number(carrier, f"order-{order}", order % 3)
        assert re.fullmatch(pattern, number), number
        assert number == make_tracking_number(carrier, f"order-{order}", order % 3)
        if carrier == "ups":
            assert int(number[-1]) == ups_check_digit(number[2:-1])
        if carrier == "usps":
            assert int(number[-1]) == usps_check_digit(number[:-1])


def test_tracking_numbers_differ() -> None:
    numbers = {make_tracking_number("ups", str(uuid.uuid4()), 0) for _ in range(200)}
    assert len(numbers) == 200


# Planning.


def fake_order(order_id: str, locators: list[str], quantity: int = 1) -> Any:
    items = [
        SimpleNamespace(index=index, locator=locator, quantity=quantity)
        for index, locator in enumerate(locators)
    ]
    return SimpleNamespace(id=order_id, line_items=items)


def test_plan_covers_every_line_item() -> None:
    counts = set()
    for seed in range(60):
        order = fake_order(f"order-{seed}", [AMAZON, SHOP, AMAZON, SHOP])
        planned = plan_packages(order)
        assert planned == plan_packages(order)
        assert sorted(i for p in planned for i in p.line_items) == [0, 1, 2, 3]
        assert all(p.line_items for p in planned)
        counts.add(len(planned))
        for package in planned:
            locators = {order.line_items[i].locator for i in package.line_items}
            expected = {"amazon"} if locators == {AMAZON} else {"ups", "usps"}
            assert package.carrier in expected
    assert counts == {1, 2, 3}


def test_single_item_sometimes_split() -> None:
    splits = [
        plan_packages(fake_order(f"order-{seed}", [SHOP], quantity=2))
        for seed in range(30)
    ]
    assert {len(planned) for planned in splits} == {1, 2}
    for planned in splits:
        assert all(package.line_items == [0] for package in planned)


def test_delivery_falls_inside_window() -> None:
    journeys = [
        plan_steps(SimpleNamespace(tracking_number=f"N{n}"), "Here") for n in range(40)
    ]
    assert {len(steps) for steps in journeys} == {5, 7}
    for steps in journeys:
        assert [step.at for step in steps] == sorted(step.at for step in steps)
        delivered = steps[-1]
        assert delivered.status == "delivered"
        window = next(step.window for step in reversed(steps) if step.window)
        assert window[0] <= delivered.at <= window[1]
        if len(steps) == 7:
            assert [step.status for step in steps][3:6] == [
                "out-for-delivery",
                "delivery-attempted",
                "out-for-delivery",
            ]


def interesting_order_id(locators: list[str]) -> str:
    """An order id whose plan has two or more packages and one failed attempt."""
    for seed in range(10_000):
        order_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"orderdesk-test-{seed}"))
        planned = plan_packages(fake_order(order_id, locators))
        attempts = [
            p for p in planned if len(plan_steps(SimpleNamespace(**vars(p)), "x")) == 7
        ]
        if len(planned) >= 2 and attempts:
            return order_id
    raise AssertionError("no order id gives two packages and a failed attempt")


# Runs against the database.


FAST_STEP_SECONDS = 0.05


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"simulated_step_seconds": FAST_STEP_SECONDS}


@pytest.fixture
def fast_clock() -> float:
    return FAST_STEP_SECONDS


def make_simulated_order(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, provider: str = "simulated"
) -> str:
    locators = [AMAZON, SHOP, SHOP]
    order_id = interesting_order_id(locators)
    ids = iter([order_id])
    monkeypatch.setattr(factories, "new_id", lambda: next(ids, str(uuid.uuid4())))
    with runtime.session_factory() as session, session.begin():
        project = get_or_create_project(session, runtime.settings, "test-project")
        project.fulfilment_provider = provider
        specs = [factories.line_item(locator=locator) for locator in locators]
        made = factories.make_paid_order(session, project.id, specs)
        enqueue(session, "fulfilment.start", {"order_id": made.id})
    assert made.id == order_id
    return order_id


def run_until(runtime: Runtime, done: Callable[[], bool], seconds: float = 30) -> None:
    worker = Worker(runtime)
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the simulation did not finish in time"
        if worker.run_once() == 0:
            time.sleep(0.02)


def all_delivered(runtime: Runtime, order_id: str) -> bool:
    with runtime.session_factory() as session:
        statuses = list(
            session.scalars(select(Package.status).where(Package.order_id == order_id))
        )
        queued = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.status.in_(("queued", "running")))
        )
    return bool(statuses) and set(statuses) == {"delivered"} and queued == 0


def check_delivered_once(
    client: TestClient, key: str, runtime: Runtime, order_id: str
) -> None:
    packages = tracking(client, key, order_id)
    assert len(packages) >= 2
    for package in packages:
        steps = plan_steps(
            SimpleNamespace(
                tracking_number=package["packageTracking"]["carrierTrackingNumber"]
            ),
            "x",
        )
        assert package["status"] == "delivered"
        assert [event["status"] for event in package["events"]] == [
            s.status for s in steps
        ]
        delivered = [
            event for event in package["events"] if event["status"] == "delivered"
        ]
        assert len(delivered) == 1
        when = delivered[0]["occurredAt"]
        assert package["deliveryTimeRange"] == {"lowerBound": when, "upperBound": when}
        assert package["trackingUrl"]
        assert (
            package["packageTracking"]["carrierTrackingNumber"]
            in package["trackingUrl"]
        )
        assert package["events"][-1]["location"] == "New York, NY, US"
    assert sorted(i for p in packages for i in p["lineItems"]) == [0, 1, 2]
    assert [item.delivery_status for item in line_items_of(runtime, order_id)] == [
        "completed"
    ] * 3
    assert order_row(runtime, order_id).phase == "completed"
    with runtime.session_factory() as session:
        failed = session.scalar(
            select(func.count()).select_from(Job).where(Job.status == "failed")
        )
        assert failed == 0


def test_simulated_order_delivered(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    fast_clock: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order_id = make_simulated_order(runtime, monkeypatch)
    run_until(runtime, lambda: all_delivered(runtime, order_id))
    check_delivered_once(client, api_key, runtime, order_id)
    events = [event.kind for event in _order_events(runtime, order_id)]
    assert events.count("fulfilment.placed") == 1


def test_rerun_jobs_change_nothing(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    fast_clock: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order_id = make_simulated_order(runtime, monkeypatch)
    run_until(runtime, lambda: all_delivered(runtime, order_id))
    before = tracking(client, api_key, order_id)
    counts = table_counts(runtime)
    with runtime.session_factory() as session, session.begin():
        job_count = session.scalar(select(func.count()).select_from(Job))
        for job in session.scalars(select(Job)):
            retry_job(session, job.id)
    run_until(runtime, lambda: all_delivered(runtime, order_id))
    assert tracking(client, api_key, order_id) == before
    assert table_counts(runtime) == counts
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == job_count


def test_manual_provider_places_nothing(
    client: TestClient, api_key: str, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = make_simulated_order(runtime, monkeypatch, provider="manual")
    Worker(runtime).run_until_idle()
    assert tracking(client, api_key, order_id) == []
    with runtime.session_factory() as session:
        [job] = session.scalars(select(Job)).all()
        assert job.status == "done"


def test_unpaid_order_not_placed(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    with runtime.session_factory() as session, session.begin():
        project = get_or_create_project(session, runtime.settings, "test-project")
        project.fulfilment_provider = "simulated"
        made = factories.make_order(session, project.id, [factories.line_item()])
        enqueue(session, "fulfilment.start", {"order_id": made.id})
    Worker(runtime).run_until_idle()
    assert tracking(client, api_key, made.id) == []


def test_bad_job_payload_is_done(runtime: Runtime) -> None:
    with runtime.session_factory() as session, session.begin():
        enqueue(session, "fulfilment.start", {"order_id": 7})
        enqueue(session, fulfilment.ADVANCE_JOB, {"package_id": "x", "step": True})
    Worker(runtime).run_until_idle()
    with runtime.session_factory() as session:
        assert {job.status for job in session.scalars(select(Job))} == {"done"}


def _order_events(runtime: Runtime, order_id: str) -> list[Any]:
    from tests.shipping.helpers import order_events

    return order_events(runtime, order_id)


# A worker process killed half-way through the simulation, then another one.


def worker_environment(
    settings: Settings, tmp_path: Path, step: float
) -> dict[str, str]:
    return {
        **os.environ,
        "ORDERDESK_DATABASE_URL": settings.database_url,
        "ORDERDESK_TREASURY_SECRET": TEST_SECRET,
        "ORDERDESK_DATA_DIR": str(tmp_path / "var"),
        "ORDERDESK_MAIL_DIR": str(tmp_path / "mail"),
        "ORDERDESK_DEVNET": "false",
        "ORDERDESK_WORKER_POLL_SECONDS": "0.05",
        "ORDERDESK_SIMULATED_STEP_SECONDS": str(step),
        "ORDERDESK_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def worker_process(
    settings: Settings, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "orderdesk.cli", "worker"],
            env=worker_environment(settings, tmp_path, 0.5),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def event_statuses(runtime: Runtime, order_id: str) -> list[str]:
    with runtime.session_factory() as session:
        query = (
            select(TrackingEvent.status)
            .join(Package, Package.id == TrackingEvent.package_id)
            .where(Package.order_id == order_id)
        )
        return list(session.scalars(query))


def test_simulation_survives_worker_kill(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    worker_process: Callable[[], subprocess.Popen[bytes]],
) -> None:
    monkeypatch.setenv("ORDERDESK_SIMULATED_STEP_SECONDS", "0.5")
    order_id = make_simulated_order(runtime, monkeypatch)

    first = worker_process()
    wait_for(
        lambda: "shipped" in event_statuses(runtime, order_id), 60, "a shipped event"
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert not all_delivered(runtime, order_id), (
        "the first worker finished before the kill"
    )
    with runtime.session_factory() as session, session.begin():
        # A job the killed worker held stays claimed until its 60 s lease runs
        # out; end the lease now instead of waiting.
        session.execute(
            update(Job).where(Job.status == "running").values(locked_until=utcnow())
        )

    second = worker_process()
    wait_for(lambda: all_delivered(runtime, order_id), 90, "every package delivered")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    check_delivered_once(client, api_key, runtime, order_id)
