import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import KeyMaker, LiveServer
from tests.shipping.helpers import (
    ORDERS,
    hours_ago,
    iso,
    new_paid_order,
    order_events,
    post_event,
    shipped,
    table_counts,
)

from orderdesk.runtime import Runtime
from orderdesk.shipping.models import Package, TrackingEvent


def events_in_db(runtime: Runtime, package_id: str) -> list[TrackingEvent]:
    with runtime.session_factory() as session:
        query = select(TrackingEvent).where(TrackingEvent.package_id == package_id)
        return list(session.scalars(query.order_by(TrackingEvent.id)))


def package_row(runtime: Runtime, package_id: str) -> Package:
    with runtime.session_factory() as session:
        return session.get_one(Package, package_id)


@pytest.fixture
def parcel(client: TestClient, api_key: str, runtime: Runtime) -> dict[str, Any]:
    """A paid order with one package holding both of its line items."""
    order = new_paid_order(runtime)
    package = shipped(client, api_key, order.id, [0, 1])
    return {"order_id": order.id, "package_id": package["packageId"]}


def send(
    client: TestClient,
    key: str,
    parcel: dict[str, Any],
    status: str,
    when: Any,
    **kw: Any,
) -> Any:
    return post_event(
        client, key, parcel["order_id"], parcel["package_id"], status, when, **kw
    )


def test_event_returns_package(
    client: TestClient, api_key: str, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    when = hours_ago(3)
    response = send(
        client,
        api_key,
        parcel,
        "shipped",
        when,
        description="  Picked up by carrier  ",
        location="Secaucus, NJ",
    )
    assert response.status_code == 201, response.text
    package = response.json()
    assert package["packageId"] == parcel["package_id"]
    assert package["status"] == "shipped"
    assert package["events"] == [
        {
            "status": "shipped",
            "occurredAt": iso(when),
            "description": "Picked up by carrier",
            "location": "Secaucus, NJ",
        }
    ]
    assert package["updatedAt"] > package["createdAt"]
    row = package_row(runtime, parcel["package_id"])
    assert row.status == "shipped"
    assert row.status_at == when


def test_offset_converted_to_utc(
    client: TestClient, api_key: str, parcel: dict[str, Any]
) -> None:
    response = send(client, api_key, parcel, "shipped", "2026-01-05T09:30:00.5+05:30")
    assert response.status_code == 201, response.text
    assert response.json()["events"][0]["occurredAt"] == "2026-01-05T04:00:00.500Z"


def test_late_event_never_moves_back(
    client: TestClient, api_key: str, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    delivered_at, shipped_at = hours_ago(1), hours_ago(30)
    assert send(client, api_key, parcel, "delivered", delivered_at).status_code == 201
    response = send(client, api_key, parcel, "shipped", shipped_at)
    assert response.status_code == 201
    package = response.json()
    assert package["status"] == "delivered"
    assert [event["status"] for event in package["events"]] == ["shipped", "delivered"]
    assert package["deliveryTimeRange"] == {
        "lowerBound": iso(delivered_at),
        "upperBound": iso(delivered_at),
    }
    assert package_row(runtime, parcel["package_id"]).status_at == delivered_at


def test_out_of_order_feed_converges(
    client: TestClient, api_key: str, parcel: dict[str, Any]
) -> None:
    feed = [
        ("out-for-delivery", hours_ago(5)),
        ("pending", hours_ago(50)),
        ("shipped", hours_ago(40)),
        ("delivery-attempted", hours_ago(4)),
    ]
    statuses = [send(client, api_key, parcel, s, t).json()["status"] for s, t in feed]
    assert statuses == ["out-for-delivery"] * 3 + ["delivery-attempted"]


def test_repeated_event_stored_once(
    client: TestClient, api_key: str, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    when = hours_ago(2)
    first = send(
        client, api_key, parcel, "shipped", when, description="Picked up", location="NJ"
    )
    assert first.status_code == 201
    before = table_counts(runtime)
    again = send(
        client,
        api_key,
        parcel,
        "shipped",
        when,
        description=" Picked up ",
        location="NJ",
    )
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert table_counts(runtime) == before
    assert len(events_in_db(runtime, parcel["package_id"])) == 1


def test_same_time_other_text_kept(
    client: TestClient, api_key: str, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    when = hours_ago(2)
    assert (
        send(
            client, api_key, parcel, "exception", when, description="Weather"
        ).status_code
        == 201
    )
    second = send(
        client, api_key, parcel, "exception", when, description="Address unclear"
    )
    assert second.status_code == 201
    assert len(second.json()["events"]) == 2
    assert len(events_in_db(runtime, parcel["package_id"])) == 2


def test_exception_after_delivery_kept(
    client: TestClient, api_key: str, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    delivered_at = hours_ago(5)
    send(client, api_key, parcel, "delivered", delivered_at)
    response = send(
        client, api_key, parcel, "exception", hours_ago(1), description="Damaged"
    )
    assert response.status_code == 201
    package = response.json()
    assert package["status"] == "delivered"
    assert [event["status"] for event in package["events"]] == [
        "delivered",
        "exception",
    ]
    kinds = [event.kind for event in order_events(runtime, parcel["order_id"])]
    assert kinds[-1] == "package.event_recorded"


def test_exception_then_progress(
    client: TestClient, api_key: str, parcel: dict[str, Any]
) -> None:
    send(client, api_key, parcel, "shipped", hours_ago(10))
    assert (
        send(client, api_key, parcel, "exception", hours_ago(8)).json()["status"]
        == "exception"
    )
    resumed = send(client, api_key, parcel, "out-for-delivery", hours_ago(2))
    assert resumed.json()["status"] == "out-for-delivery"


def test_status_change_recorded(
    client: TestClient, api_key: str, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    when = hours_ago(2)
    send(client, api_key, parcel, "shipped", when)
    event = order_events(runtime, parcel["order_id"])[-1]
    assert event.kind == "package.status_changed"
    assert event.subject_id == parcel["package_id"]
    assert event.from_state == "pending"
    assert event.to_state == "shipped"
    assert event.actor.startswith("api_key:")
    assert event.data is not None
    assert event.data["occurredAt"] == iso(when)
    assert event.data["source"] == "api"


def test_latest_estimate_by_event_time(
    client: TestClient, api_key: str, parcel: dict[str, Any]
) -> None:
    newer = {"lowerBound": iso(hours_ago(-30)), "upperBound": iso(hours_ago(-40))}
    older = {"lowerBound": iso(hours_ago(-50)), "upperBound": iso(hours_ago(-60))}
    first = send(
        client, api_key, parcel, "shipped", hours_ago(2), deliveryTimeRange=newer
    )
    assert first.json()["deliveryTimeRange"] == newer
    late = send(
        client, api_key, parcel, "pending", hours_ago(20), deliveryTimeRange=older
    )
    assert late.status_code == 201
    assert late.json()["deliveryTimeRange"] == newer
    update = {"lowerBound": None, "upperBound": iso(hours_ago(-70))}
    later = send(
        client,
        api_key,
        parcel,
        "out-for-delivery",
        hours_ago(1),
        deliveryTimeRange=update,
    )
    assert later.json()["deliveryTimeRange"] == update


def test_estimate_null_after_return(
    client: TestClient, api_key: str, parcel: dict[str, Any]
) -> None:
    estimate = {"lowerBound": iso(hours_ago(-30)), "upperBound": iso(hours_ago(-40))}
    send(client, api_key, parcel, "shipped", hours_ago(9), deliveryTimeRange=estimate)
    response = send(client, api_key, parcel, "returned-to-sender", hours_ago(1))
    assert response.json()["status"] == "returned-to-sender"
    assert response.json()["deliveryTimeRange"] == {
        "lowerBound": None,
        "upperBound": None,
    }


def test_small_clock_skew_accepted(
    client: TestClient, api_key: str, parcel: dict[str, Any]
) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=4)
    assert send(client, api_key, parcel, "shipped", soon).status_code == 201


def test_future_event_rejected(
    client: TestClient, api_key: str, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    before = table_counts(runtime)
    later = datetime.now(UTC) + timedelta(minutes=6)
    response = send(client, api_key, parcel, "delivered", later)
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "occurredAt"
    assert "future" in response.json()["message"]
    assert table_counts(runtime) == before


VALID = {"status": "shipped", "occurredAt": "2026-01-05T10:00:00Z"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"carrier": "UPS"}, "carrier"),
        ({"status": None}, "status"),
        ({"status": "Delivered"}, "status"),
        ({"status": "lost"}, "status"),
        ({"status": 3}, "status"),
        ({"occurredAt": None}, "occurredAt"),
        ({"occurredAt": "2026-01-05T10:00:00"}, "occurredAt"),
        ({"occurredAt": "2026-01-05"}, "occurredAt"),
        ({"occurredAt": 1767607200}, "occurredAt"),
        ({"description": 5}, "description"),
        ({"description": "x" * 1001}, "description"),
        ({"description": "bad\x00byte"}, "description"),
        ({"description": "line\r\nend"}, "description"),
        ({"description": "bell\x07"}, "description"),
        ({"location": "Newark,\nNJ"}, "location"),
        ({"location": "tab\there"}, "location"),
        ({"location": "x" * 301}, "location"),
        ({"location": ["NJ"]}, "location"),
        ({"deliveryTimeRange": []}, "deliveryTimeRange"),
        (
            {
                "deliveryTimeRange": {
                    "lowerBound": "2026-01-07T10:00:00Z",
                    "upperBound": "2026-01-06T10:00:00Z",
                }
            },
            "deliveryTimeRange",
        ),
        ({"deliveryTimeRange": {"upperBound": "soon"}}, "deliveryTimeRange.upperBound"),
    ],
)
def test_invalid_event_rejected(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    parcel: dict[str, Any],
    changes: dict[str, Any],
    field: str,
) -> None:
    body = {**VALID, **changes}
    before = table_counts(runtime)
    response = client.post(
        f"{ORDERS}/{parcel['order_id']}/shipments/{parcel['package_id']}/events",
        json=body,
        headers={"X-API-KEY": api_key},
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_request"
    assert field in [detail["field"] for detail in error["details"]]
    assert table_counts(runtime) == before
    assert package_row(runtime, parcel["package_id"]).status == "pending"


def test_text_trimmed_and_emptied(
    client: TestClient, api_key: str, parcel: dict[str, Any]
) -> None:
    response = send(
        client,
        api_key,
        parcel,
        "shipped",
        hours_ago(1),
        description="\n\t",
        location="   ",
    )
    assert response.status_code == 201
    event = response.json()["events"][0]
    assert event["description"] is None
    assert event["location"] is None
    multiline = send(
        client, api_key, parcel, "shipped", hours_ago(2), description="a\n\tb"
    )
    assert multiline.json()["events"][0]["description"] == "a\n\tb"


def test_unknown_package_not_found(
    client: TestClient, api_key: str, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    other = new_paid_order(runtime)
    foreign = shipped(client, api_key, other.id, [0], number="1ZOTHER0001")
    for package_id in (
        "nope",
        "00000000-0000-4000-8000-000000000000",
        foreign["packageId"],
    ):
        response = post_event(
            client, api_key, parcel["order_id"], package_id, "shipped", hours_ago(1)
        )
        assert response.status_code == 404, package_id
        assert response.json()["code"] == "package_not_found"
    assert events_in_db(runtime, foreign["packageId"]) == []


def test_event_needs_fulfill_scope(
    client: TestClient, make_key: KeyMaker, runtime: Runtime, parcel: dict[str, Any]
) -> None:
    key = make_key("orders.read", "orders.update")
    response = send(client, key, parcel, "shipped", hours_ago(1))
    assert response.status_code == 403
    assert "orders.fulfill" in response.json()["message"]
    assert events_in_db(runtime, parcel["package_id"]) == []


def test_concurrent_events_one_package(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    created = requests.post(
        f"{live_server.url}{ORDERS}/{order.id}/shipments",
        json={
            "carrierName": "UPS",
            "carrierTrackingNumber": "1ZRACE0001",
            "lineItems": [0, 1],
        },
        headers={"X-API-KEY": api_key},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    package_id = created.json()["packageId"]
    feed = [
        ("pending", hours_ago(50)),
        ("shipped", hours_ago(40)),
        ("out-for-delivery", hours_ago(6)),
        ("delivered", hours_ago(5)),
        ("exception", hours_ago(4)),
        ("shipped", hours_ago(45)),
    ]
    # Every event is sent three times, all at once.
    bodies = [
        {"status": s, "occurredAt": iso(t), "location": "NJ"} for s, t in feed
    ] * 3
    barrier = threading.Barrier(len(bodies))
    results: list[int] = []

    def post(body: dict[str, Any]) -> None:
        barrier.wait()
        response = requests.post(
            f"{live_server.url}{ORDERS}/{order.id}/shipments/{package_id}/events",
            json=body,
            headers={"X-API-KEY": api_key},
            timeout=60,
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [200] * 12 + [201] * 6
    stored = events_in_db(runtime, package_id)
    assert len(stored) == 6
    assert package_row(runtime, package_id).status == "delivered"
    final = requests.get(
        f"{live_server.url}{ORDERS}/{order.id}/tracking",
        headers={"X-API-KEY": api_key},
        timeout=30,
    ).json()
    assert [event["status"] for event in final[0]["events"]] == [
        "pending",
        "shipped",
        "shipped",
        "out-for-delivery",
        "delivered",
        "exception",
    ]
    changes = [
        e for e in order_events(runtime, order.id) if e.kind.startswith("package.")
    ]
    assert len(changes) == 7
