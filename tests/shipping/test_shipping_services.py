from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.shipping.helpers import hours_ago, new_paid_order, new_unpaid_order

from orderdesk.orders.models import Order, OrderEvent
from orderdesk.runtime import Runtime
from orderdesk.shipping.exceptions import InvalidShipment, OrderNotPaid, PackageExists
from orderdesk.shipping.models import TrackingEvent
from orderdesk.shipping.services import (
    TimeRange,
    find_package_by_tracking_number,
    list_packages,
    record_package,
    record_tracking_event,
)


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    with runtime.session_factory() as session:
        yield session


def load(session: Session, order_id: str) -> Order:
    return session.get_one(Order, order_id)


def test_record_without_http(runtime: Runtime, session: Session) -> None:
    created = new_paid_order(runtime)
    order = load(session, created.id)
    package = record_package(
        session, order, "FedEx", "7749 1234 5678", [1], actor="fulfilment:simulated"
    )
    update = record_tracking_event(
        session,
        package,
        "shipped",
        hours_ago(3),
        "Picked up",
        "Memphis, TN",
        source="simulated",
        actor="fulfilment:simulated",
    )
    session.commit()
    assert update.created is True
    assert update.previous_status == "pending"
    assert update.status == "shipped"
    assert update.status_changed is True
    assert update.event.source == "simulated"
    assert update.package.status == "shipped"
    actors = {
        e.actor
        for e in session.scalars(
            select(OrderEvent).where(OrderEvent.order_id == created.id)
        )
    }
    assert actors == {"fulfilment:simulated"}


def test_provider_event_id_dedupes(runtime: Runtime, session: Session) -> None:
    order = load(session, new_paid_order(runtime).id)
    package = record_package(session, order, "UPS", "1ZPROVIDER01", [0])
    first = record_tracking_event(
        session, package, "shipped", hours_ago(2), dedupe_key="easypost:evt_1"
    )
    # A resend of the same provider event with an edited description is the same event.
    again = record_tracking_event(
        session, package, "shipped", hours_ago(2), "edited", dedupe_key="easypost:evt_1"
    )
    session.commit()
    assert again.created is False
    assert again.event.id == first.event.id
    assert again.status_changed is False
    rows = session.scalars(
        select(TrackingEvent).where(TrackingEvent.package_id == package.id)
    )
    assert len(list(rows)) == 1


def test_find_by_tracking_number(runtime: Runtime, session: Session) -> None:
    order = load(session, new_paid_order(runtime).id)
    ups = record_package(
        session, order, "United Parcel Service", "1Z999AA10123456784", [0]
    )
    session.commit()
    assert find_package_by_tracking_number(session, "1z 999 aa1 01 2345 6784") is ups
    assert find_package_by_tracking_number(session, "1Z999AA10123456784", "ups") is ups
    assert find_package_by_tracking_number(session, "1Z999AA10123456784", "UPS") is ups
    assert find_package_by_tracking_number(session, "1Z999AA10123456784", "DHL") is None
    assert find_package_by_tracking_number(session, "1Z999AA10123456785") is None
    assert find_package_by_tracking_number(session, "!!") is None
    assert find_package_by_tracking_number(session, "1Z999AA10123456784", "  ") is None


def test_find_ambiguous_number_none(runtime: Runtime, session: Session) -> None:
    order = load(session, new_paid_order(runtime).id)
    ups = record_package(session, order, "UPS", "123456789012", [0])
    dhl = record_package(session, order, "DHL", "123456789012", [1])
    session.commit()
    assert find_package_by_tracking_number(session, "123456789012") is None
    assert find_package_by_tracking_number(session, "123456789012", "ups") is ups
    assert (
        find_package_by_tracking_number(session, "123456789012", "dhl express") is dhl
    )


def test_duplicate_across_orders_raises(runtime: Runtime, session: Session) -> None:
    first_id, second_id = new_paid_order(runtime).id, new_paid_order(runtime).id
    first, second = load(session, first_id), load(session, second_id)
    record_package(session, first, "UPS", "1ZDUPLICATE1", [0])
    with pytest.raises(PackageExists) as caught:
        record_package(session, second, "ups", "1zduplicate1", [0])
    assert "package" not in caught.value.body()


def test_unpaid_order_raises(runtime: Runtime, session: Session) -> None:
    order = load(session, new_unpaid_order(runtime).id)
    with pytest.raises(OrderNotPaid):
        record_package(session, order, "UPS", "1ZUNPAID0001", [0])


@pytest.mark.parametrize(
    ("line_items", "field"),
    [
        ([], "lineItems"),
        ([0, 0], "lineItems"),
        ([True], "lineItems.0"),
        ([5], "lineItems.0"),
    ],
)
def test_service_checks_line_items(
    runtime: Runtime, session: Session, line_items: list[int], field: str
) -> None:
    order = load(session, new_paid_order(runtime).id)
    with pytest.raises(InvalidShipment) as caught:
        record_package(session, order, "UPS", "1ZCHECKS0001", line_items)
    assert caught.value.details == [
        {"field": field, "message": caught.value.details[0]["message"]}
    ]


def test_service_rejects_naive_times(runtime: Runtime, session: Session) -> None:
    order = load(session, new_paid_order(runtime).id)
    package = record_package(session, order, "UPS", "1ZNAIVE00001", [0])
    naive = datetime(2026, 1, 1, 12, 0)  # noqa: DTZ001 - the case under test
    with pytest.raises(InvalidShipment, match="occurredAt"):
        record_tracking_event(session, package, "shipped", naive)
    with pytest.raises(InvalidShipment, match="deliveryTimeRange.upperBound"):
        record_tracking_event(
            session,
            package,
            "shipped",
            hours_ago(1),
            delivery_time_range=TimeRange(None, naive),
        )
    with pytest.raises(InvalidShipment, match="status"):
        record_tracking_event(session, package, "lost", hours_ago(1))
    with pytest.raises(InvalidShipment, match="dedupeKey"):
        record_tracking_event(
            session, package, "shipped", hours_ago(1), dedupe_key="k" * 129
        )


def test_time_cut_to_milliseconds(runtime: Runtime, session: Session) -> None:
    order = load(session, new_paid_order(runtime).id)
    package = record_package(session, order, "UPS", "1ZMILLIS0001", [0])
    base = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)
    first = record_tracking_event(
        session, package, "shipped", base + timedelta(microseconds=400)
    )
    second = record_tracking_event(
        session, package, "shipped", base + timedelta(microseconds=900)
    )
    assert first.event.occurred_at == base
    assert second.created is False


def test_list_packages_oldest_first(runtime: Runtime, session: Session) -> None:
    order = load(session, new_paid_order(runtime).id)
    numbers = ["1ZORDER00003", "1ZORDER00001", "1ZORDER00002"]
    for number in numbers:
        record_package(session, order, "UPS", number, [0])
    session.commit()
    assert [p.tracking_number for p in list_packages(session, order.id)] == numbers
