from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import KeyMaker
from tests.shipping.helpers import (
    ISO_MS,
    ORDERS,
    UUID,
    hours_ago,
    iso,
    line_items_of,
    new_paid_order,
    new_unpaid_order,
    order_events,
    ship,
    shipped,
    table_counts,
)

from orderdesk.runtime import Runtime


def test_shipment_returns_package(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=3)
    lower, upper = hours_ago(-24), hours_ago(-48)
    response = ship(
        client,
        api_key,
        order.id,
        [2, 0],
        number=" 1z 999 aa1 01 2345 6784 ",
        carrier="  United   Parcel Service ",
        trackingUrl="https://www.ups.com/track?tracknum=1Z999AA10123456784",
        deliveryTimeRange={"lowerBound": iso(lower), "upperBound": iso(upper)},
    )
    assert response.status_code == 201, response.text

    package = response.json()
    assert set(package) == {
        "packageId",
        "kind",
        "status",
        "packageTracking",
        "deliveryTimeRange",
        "lineItems",
        "trackingUrl",
        "refundId",
        "createdAt",
        "updatedAt",
        "events",
    }
    assert UUID.fullmatch(package["packageId"])
    assert package["kind"] == "outbound"
    assert package["status"] == "pending"
    assert package["packageTracking"] == {
        "carrierName": "United Parcel Service",
        "carrierTrackingNumber": "1Z999AA10123456784",
    }
    assert package["deliveryTimeRange"] == {
        "lowerBound": iso(lower),
        "upperBound": iso(upper),
    }
    assert package["lineItems"] == [0, 2]
    assert (
        package["trackingUrl"]
        == "https://www.ups.com/track?tracknum=1Z999AA10123456784"
    )
    assert package["refundId"] is None
    assert ISO_MS.fullmatch(package["createdAt"])
    assert package["updatedAt"] == package["createdAt"]
    assert package["events"] == []


def test_shipment_writes_order_event(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    key = make_key("orders.fulfill")
    order = new_paid_order(runtime)
    package = shipped(client, key, order.id, [1])
    events = [
        event
        for event in order_events(runtime, order.id)
        if event.kind == "package.created"
    ]
    assert len(events) == 1
    assert events[0].subject_id == package["packageId"]
    assert events[0].to_state == "pending"
    assert events[0].actor.startswith("api_key:")
    assert events[0].data == {
        "kind": "outbound",
        "carrierName": "UPS",
        "carrierTrackingNumber": "1Z999AA10123456784",
        "lineItems": [1],
    }


def test_shipment_without_estimate(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    package = shipped(
        client, api_key, order.id, [0], deliveryTimeRange={"upperBound": None}
    )
    assert package["deliveryTimeRange"] == {"lowerBound": None, "upperBound": None}
    # With no trackingUrl given, the carrier's default tracking page is used.
    assert package["trackingUrl"] == (
        "https://www.ups.com/track?loc=en_US&tracknum=1Z999AA10123456784"
    )


def test_line_item_split_over_packages(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    first = shipped(client, api_key, order.id, [0, 1], number="1ZSPLIT0001")
    second = shipped(client, api_key, order.id, [0], number="1ZSPLIT0002")
    assert first["packageId"] != second["packageId"]
    assert [item.delivery_status for item in line_items_of(runtime, order.id)] == [
        "in-progress",
        "in-progress",
    ]


@pytest.mark.parametrize(
    ("carrier", "number"),
    [
        ("UPS", "1Z999AA10123456784"),
        ("ups", "1z999aa10123456784"),
        (" UPS ", "1Z 999 AA1 01 2345 6784"),
        ("United Parcel Service", "1Z999AA10123456784"),
    ],
)
def test_duplicate_package_conflicts(
    client: TestClient, api_key: str, runtime: Runtime, carrier: str, number: str
) -> None:
    order = new_paid_order(runtime)
    first = shipped(client, api_key, order.id, [0])
    before = table_counts(runtime)
    response = ship(client, api_key, order.id, [1], number=number, carrier=carrier)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] is True
    assert body["code"] == "package_exists"
    assert "1Z999AA10123456784" in body["message"]
    assert body["package"]["packageId"] == first["packageId"]
    assert table_counts(runtime) == before


def test_duplicate_hides_other_order(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    mine = make_key("orders.fulfill")
    theirs = make_key("orders.fulfill", project="other-project")
    other = new_paid_order(runtime, project="other-project")
    shipped(client, theirs, other.id, [0])
    order = new_paid_order(runtime)
    response = ship(client, mine, order.id, [0])
    assert response.status_code == 409
    assert response.json()["code"] == "package_exists"
    assert "package" not in response.json()


def test_same_number_other_carrier(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    shipped(client, api_key, order.id, [0], carrier="UPS")
    package = shipped(client, api_key, order.id, [1], carrier="DHL")
    assert package["packageTracking"]["carrierName"] == "DHL"


def test_unpaid_order_rejected(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_unpaid_order(runtime)
    before = table_counts(runtime)
    response = ship(client, api_key, order.id, [0])
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "order_not_paid"
    assert order.id in body["message"]
    assert table_counts(runtime) == before


VALID: dict[str, Any] = {
    "carrierName": "UPS",
    "carrierTrackingNumber": "1Z999AA10123456784",
    "lineItems": [0],
}


def with_changes(**changes: Any) -> dict[str, Any]:
    body = dict(VALID)
    for name, value in changes.items():
        if value is ...:
            body.pop(name)
        else:
            body[name] = value
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_changes(extra=1), "extra"),
        (with_changes(carrierName=...), "carrierName"),
        (with_changes(carrierTrackingNumber=...), "carrierTrackingNumber"),
        (with_changes(lineItems=...), "lineItems"),
        (with_changes(lineItems=[]), "lineItems"),
        (with_changes(lineItems=0), "lineItems"),
        (with_changes(lineItems=[True]), "lineItems.0"),
        (with_changes(lineItems=[0, 1.0]), "lineItems.1"),
        (with_changes(lineItems=[1.5]), "lineItems.0"),
        (with_changes(lineItems=["0"]), "lineItems.0"),
        (with_changes(lineItems=[None]), "lineItems.0"),
        (with_changes(lineItems=[-1]), "lineItems.0"),
        (with_changes(lineItems=[0, 2]), "lineItems.1"),
        (with_changes(lineItems=[10**30]), "lineItems.0"),
        (with_changes(lineItems=[1, 0, 1]), "lineItems"),
        (with_changes(carrierName=""), "carrierName"),
        (with_changes(carrierName="   "), "carrierName"),
        (with_changes(carrierName="U" * 61), "carrierName"),
        (with_changes(carrierName="UP\x00S"), "carrierName"),
        (with_changes(carrierName="--"), "carrierName"),
        (with_changes(carrierName=7), "carrierName"),
        (with_changes(carrierName=None), "carrierName"),
        (with_changes(carrierTrackingNumber=123456789), "carrierTrackingNumber"),
        (with_changes(carrierTrackingNumber="ABC"), "carrierTrackingNumber"),
        (with_changes(carrierTrackingNumber="A" * 41), "carrierTrackingNumber"),
        (with_changes(carrierTrackingNumber="1Z99!9AA"), "carrierTrackingNumber"),
        (with_changes(carrierTrackingNumber="1Z999\tAA101"), "carrierTrackingNumber"),
        (with_changes(carrierTrackingNumber="-1Z999AA101"), "carrierTrackingNumber"),
        (with_changes(carrierTrackingNumber="1Z999ÄA101"), "carrierTrackingNumber"),
        (with_changes(carrierTrackingNumber="    "), "carrierTrackingNumber"),
        (with_changes(trackingUrl="ftp://ups.com/x"), "trackingUrl"),
        (with_changes(trackingUrl="javascript:alert(1)"), "trackingUrl"),
        (with_changes(trackingUrl="https://"), "trackingUrl"),
        (with_changes(trackingUrl="https://ups.com/a b"), "trackingUrl"),
        (with_changes(trackingUrl="https://ups.com/" + "a" * 1000), "trackingUrl"),
        (with_changes(trackingUrl=5), "trackingUrl"),
        (with_changes(deliveryTimeRange="tomorrow"), "deliveryTimeRange"),
        (
            with_changes(deliveryTimeRange={"lowerBound": "2026-03-01T10:00:00"}),
            "deliveryTimeRange.lowerBound",
        ),
        (
            with_changes(
                deliveryTimeRange={
                    "lowerBound": "2026-03-02T10:00:00Z",
                    "upperBound": "2026-03-01T10:00:00Z",
                }
            ),
            "deliveryTimeRange",
        ),
        (
            with_changes(deliveryTimeRange={"lowerBound": None, "later": None}),
            "deliveryTimeRange.later",
        ),
    ],
)
def test_invalid_shipment_rejected(
    client: TestClient, api_key: str, runtime: Runtime, body: dict[str, Any], field: str
) -> None:
    order = new_paid_order(runtime)
    before = table_counts(runtime)
    response = client.post(
        f"{ORDERS}/{order.id}/shipments", json=body, headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] is True
    assert error["code"] == "invalid_request"
    assert field in [detail["field"] for detail in error["details"]]
    assert all(detail["message"] for detail in error["details"])
    assert table_counts(runtime) == before


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{", "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b"[]", "application/json", 400, "invalid_request"),
        (b'{"carrierName": "UPS"}', "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_malformed_body_rejected(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    order = new_paid_order(runtime)
    before = table_counts(runtime)
    response = client.post(
        f"{ORDERS}/{order.id}/shipments",
        content=content,
        headers={"X-API-KEY": api_key, "Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert table_counts(runtime) == before


def test_shipment_needs_fulfill_scope(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    key = make_key("orders.read", "orders.update", "orders.create")
    response = ship(client, key, order.id, [0])
    assert response.status_code == 403
    assert "orders.fulfill" in response.json()["message"]


def test_client_secret_cannot_ship(client: TestClient, runtime: Runtime) -> None:
    order = new_paid_order(runtime)
    response = client.post(
        f"{ORDERS}/{order.id}/shipments",
        json=VALID,
        headers={"Authorization": order.client_secret},
    )
    assert response.status_code == 403
    assert "orders.fulfill" in response.json()["message"]


@pytest.mark.parametrize(
    "order_id", ["other", "not-a-uuid", "00000000-0000-4000-8000-000000000000"]
)
def test_unknown_order_not_found(
    client: TestClient, make_key: KeyMaker, runtime: Runtime, order_id: str
) -> None:
    key = make_key("orders.fulfill")
    if order_id == "other":
        order_id = new_paid_order(runtime, project="other-project").id
    before = table_counts(runtime)
    response = ship(client, key, order_id, [0])
    assert response.status_code == 404
    assert response.json()["code"] == "order_not_found"
    assert table_counts(runtime) == before


def test_estimate_bounds_converted(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    package = shipped(
        client,
        api_key,
        order.id,
        [0],
        deliveryTimeRange={
            "lowerBound": "2026-03-02T09:00:00+09:00",
            "upperBound": "2026-03-02T18:30:00.25-05:00",
        },
    )
    assert package["deliveryTimeRange"] == {
        "lowerBound": "2026-03-02T00:00:00.000Z",
        "upperBound": "2026-03-02T23:30:00.250Z",
    }
