from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import event
from tests.conftest import KeyMaker, LiveServer
from tests.shipping.helpers import (
    ISO_MS,
    ORDERS,
    hours_ago,
    iso,
    new_paid_order,
    post_event,
    shipped,
    tracking,
)

from orderdesk.runtime import Runtime


@contextmanager
def count_queries(runtime: Runtime) -> Iterator[list[str]]:
    statements: list[str] = []

    def before_execute(*args: Any) -> None:
        statements.append(args[2])

    event.listen(runtime.engine, "before_cursor_execute", before_execute)
    try:
        yield statements
    finally:
        event.remove(runtime.engine, "before_cursor_execute", before_execute)


def test_empty_before_shipping(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    assert tracking(client, api_key, order.id) == []


def test_tracking_every_field(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=3)
    estimate = {"lowerBound": iso(hours_ago(-20)), "upperBound": iso(hours_ago(-30))}
    first = shipped(
        client,
        api_key,
        order.id,
        [1, 0],
        number="1Z AAA 0001",
        trackingUrl="https://ups.example/t/1ZAAA0001",
        deliveryTimeRange=estimate,
    )
    second = shipped(
        client, api_key, order.id, [2], carrier="USPS", number="9400 1000 0000"
    )
    picked_up, delivered = hours_ago(30), hours_ago(2)
    post_event(
        client,
        api_key,
        order.id,
        second["packageId"],
        "delivered",
        delivered,
        location="Home",
    )
    post_event(
        client,
        api_key,
        order.id,
        second["packageId"],
        "shipped",
        picked_up,
        description="Accepted at facility",
    )

    entries = tracking(client, api_key, order.id)
    assert [entry["packageId"] for entry in entries] == [
        first["packageId"],
        second["packageId"],
    ]
    first_entry, second_entry = entries
    assert first_entry == {
        "packageId": first["packageId"],
        "kind": "outbound",
        "status": "pending",
        "packageTracking": {"carrierName": "UPS", "carrierTrackingNumber": "1ZAAA0001"},
        "deliveryTimeRange": estimate,
        "lineItems": [0, 1],
        "trackingUrl": "https://ups.example/t/1ZAAA0001",
        "refundId": None,
        "createdAt": first["createdAt"],
        "updatedAt": first["updatedAt"],
        "events": [],
    }
    assert second_entry["status"] == "delivered"
    assert second_entry["packageTracking"] == {
        "carrierName": "USPS",
        "carrierTrackingNumber": "940010000000",
    }
    assert second_entry["deliveryTimeRange"] == {
        "lowerBound": iso(delivered),
        "upperBound": iso(delivered),
    }
    assert second_entry["lineItems"] == [2]
    # Recorded without a trackingUrl, so the carrier's default page is shown.
    assert second_entry["trackingUrl"] == (
        "https://tools.usps.com/go/TrackConfirmAction?tLabels=940010000000"
    )
    assert ISO_MS.fullmatch(second_entry["updatedAt"])
    assert second_entry["updatedAt"] > second_entry["createdAt"]
    assert second_entry["events"] == [
        {
            "status": "shipped",
            "occurredAt": iso(picked_up),
            "description": "Accepted at facility",
            "location": None,
        },
        {
            "status": "delivered",
            "occurredAt": iso(delivered),
            "description": None,
            "location": "Home",
        },
    ]


def test_client_secret_reads_tracking(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    package = shipped(client, api_key, order.id, [0])
    response = client.get(
        f"{ORDERS}/{order.id}/tracking", headers={"Authorization": order.client_secret}
    )
    assert response.status_code == 200
    assert [entry["packageId"] for entry in response.json()] == [package["packageId"]]


def test_wrong_secret_rejected(client: TestClient, runtime: Runtime) -> None:
    order = new_paid_order(runtime)
    other = new_paid_order(runtime)
    response = client.get(
        f"{ORDERS}/{order.id}/tracking", headers={"Authorization": other.client_secret}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_client_secret"


def test_other_project_not_found(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    key = make_key("orders.read", project="other-project")
    response = client.get(f"{ORDERS}/{order.id}/tracking", headers={"X-API-KEY": key})
    assert response.status_code == 404
    assert response.json()["code"] == "order_not_found"


@pytest.mark.parametrize(
    "scopes", [("orders.fulfill",), ("orders.update", "orders.create")]
)
def test_tracking_needs_read_scope(
    client: TestClient, make_key: KeyMaker, runtime: Runtime, scopes: tuple[str, ...]
) -> None:
    order = new_paid_order(runtime)
    response = client.get(
        f"{ORDERS}/{order.id}/tracking", headers={"X-API-KEY": make_key(*scopes)}
    )
    assert response.status_code == 403
    assert "orders.read" in response.json()["message"]


def test_no_credentials_unauthorized(client: TestClient, runtime: Runtime) -> None:
    order = new_paid_order(runtime)
    response = client.get(f"{ORDERS}/{order.id}/tracking")
    assert response.status_code == 401


def test_query_count_flat(client: TestClient, api_key: str, runtime: Runtime) -> None:
    small = new_paid_order(runtime, items=1)
    large = new_paid_order(runtime, items=4)
    package = shipped(client, api_key, small.id, [0], number="1ZQUERY0000")
    post_event(client, api_key, small.id, package["packageId"], "shipped", hours_ago(3))
    for index in range(4):
        many = shipped(
            client, api_key, large.id, [index], number=f"1ZQUERY000{index + 1}"
        )
        for hours in (5, 4, 3):
            post_event(
                client,
                api_key,
                large.id,
                many["packageId"],
                "shipped",
                hours_ago(hours),
            )

    with count_queries(runtime) as one_package:
        assert len(tracking(client, api_key, small.id)) == 1
    with count_queries(runtime) as four_packages:
        entries = tracking(client, api_key, large.id)
    assert len(entries) == 4
    assert all(len(entry["events"]) == 3 for entry in entries)
    assert len(four_packages) == len(one_package)
    package_queries = [s for s in four_packages if "FROM packages" in s]
    assert len(package_queries) == 1
    assert "tracking_events" in package_queries[0]


def test_public_flow_over_http(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    base = f"{live_server.url}{ORDERS}/{order.id}"
    headers = {"X-API-KEY": api_key}

    empty = requests.get(f"{base}/tracking", headers=headers, timeout=30)
    assert empty.status_code == 200
    assert empty.headers["content-type"] == "application/json"
    assert empty.json() == []

    created = requests.post(
        f"{base}/shipments",
        json={
            "carrierName": "FedEx",
            "carrierTrackingNumber": "7749 1234 5678",
            "lineItems": [0, 1],
        },
        headers=headers,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    package_id = created.json()["packageId"]
    delivered = hours_ago(1)
    for status, when in (("shipped", hours_ago(20)), ("delivered", delivered)):
        answer = requests.post(
            f"{base}/shipments/{package_id}/events",
            json={"status": status, "occurredAt": iso(when), "location": "Austin, TX"},
            headers=headers,
            timeout=30,
        )
        assert answer.status_code == 201, answer.text

    response = requests.get(
        f"{base}/tracking", headers={"Authorization": order.client_secret}, timeout=30
    )
    assert response.status_code == 200
    [entry] = response.json()
    assert entry["status"] == "delivered"
    assert entry["packageTracking"] == {
        "carrierName": "FedEx",
        "carrierTrackingNumber": "774912345678",
    }
    assert entry["deliveryTimeRange"] == {
        "lowerBound": iso(delivered),
        "upperBound": iso(delivered),
    }
    assert entry["kind"] == "outbound"
    assert entry["lineItems"] == [0, 1]
    assert [event["status"] for event in entry["events"]] == ["shipped", "delivered"]
    assert all(event["location"] == "Austin, TX" for event in entry["events"])

    order_view = requests.get(
        f"{live_server.url}/api/2022-06-09/orders/{order.id}",
        headers=headers,
        timeout=30,
    )
    assert order_view.status_code == 200, order_view.text
    body = order_view.json()
    assert [item["delivery"]["status"] for item in body["lineItems"]] == [
        "completed",
        "completed",
    ]
    assert body["phase"] == "completed"
