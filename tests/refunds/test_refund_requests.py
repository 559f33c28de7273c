from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests import factories
from tests.conftest import KeyMaker
from tests.refunds.helpers import (
    refund_request,
    refunds_of,
    set_refund_status,
    shipped_order,
)
from tests.shipping.helpers import (
    ISO_MS,
    ORDERS,
    UUID,
    new_paid_order,
    new_unpaid_order,
    order_events,
    table_counts,
)

from orderdesk.runtime import Runtime

REPLY_FIELDS = {
    "orderId",
    "lineItem",
    "reason",
    "status",
    "refundId",
    "createdAt",
    "updatedAt",
    "amount",
    "origin",
    "rejectionReason",
    "returnLabel",
    "returnReceivedAt",
    "payout",
    "history",
}


def test_refund_returns_request(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(
        runtime,
        line_items=[
            factories.line_item("5.00"),
            factories.line_item("12.50", quantity=3, sales_tax="2.34", shipping="5.00"),
        ],
        delivered_days_ago=2,
    )
    response = refund_request(
        client,
        order.id,
        {"lineItem": 1, "reason": "  Arrived cracked.\nPhotos attached.  "},
        key=api_key,
    )
    assert response.status_code == 201, response.text
    refund = response.json()
    assert set(refund) == REPLY_FIELDS
    assert refund["orderId"] == order.id
    assert refund["lineItem"] == 1
    assert refund["reason"] == "Arrived cracked.\nPhotos attached."
    assert refund["status"] == "refund-request-initiated"
    assert UUID.fullmatch(refund["refundId"])
    assert ISO_MS.fullmatch(refund["createdAt"])
    assert refund["updatedAt"] == refund["createdAt"]
    # 12.50 x 3 + 2.34 tax + 5.00 shipping
    assert refund["amount"] == {"amount": "44.84", "currency": "usdc"}
    assert refund["rejectionReason"] is None
    assert refund["returnLabel"] is None
    assert refund["payout"] is None
    assert refund["origin"] == "buyer"
    assert refund["returnReceivedAt"] is None
    [entry] = refund["history"]
    assert entry["status"] == "refund-request-initiated"
    assert ISO_MS.fullmatch(entry["at"])
    assert entry["actor"].startswith("api_key:")

    [row] = refunds_of(runtime, order.id)
    assert row.id == refund["refundId"]
    assert row.amount == Decimal("44.84")
    assert row.origin == "buyer"
    assert row.reason == "Arrived cracked.\nPhotos attached."


def test_refund_writes_order_event(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund = refund_request(
        client, order.id, {"lineItem": 0, "reason": "x"}, key=api_key
    ).json()
    event = order_events(runtime, order.id)[-1]
    assert event.kind == "refund.requested"
    assert event.subject_id == refund["refundId"]
    assert event.from_state is None
    assert event.to_state == "refund-request-initiated"
    assert event.actor.startswith("api_key:")
    assert event.data == {"lineItem": 0, "amount": refund["amount"]["amount"]}


def test_client_secret_requests_refund(client: TestClient, runtime: Runtime) -> None:
    order = shipped_order(runtime)
    response = refund_request(
        client,
        order.id,
        {"lineItem": 1, "reason": "Wrong size"},
        secret=order.client_secret,
    )
    assert response.status_code == 201, response.text
    assert order_events(runtime, order.id)[-1].actor == "client_secret"


def test_refund_needs_update_scope(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    key = make_key("orders.read", "orders.fulfill", "refunds.review")
    before = table_counts(runtime)
    response = refund_request(client, order.id, {"lineItem": 0, "reason": "x"}, key=key)
    assert response.status_code == 403
    assert "orders.update" in response.json()["message"]
    assert table_counts(runtime) == before


def test_other_project_gets_404(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    key = make_key("orders.update", "orders.read", project="other-project")
    response = refund_request(client, order.id, {"lineItem": 0, "reason": "x"}, key=key)
    assert response.status_code == 404
    assert response.json()["code"] == "order_not_found"
    listing = client.get(f"{ORDERS}/{order.id}/refunds", headers={"X-API-KEY": key})
    assert listing.status_code == 404
    assert refunds_of(runtime, order.id) == []


@pytest.mark.parametrize(
    "line_item",
    [
        True,
        False,
        1.0,
        0.0,
        1.5,
        -0.5,
        "1",
        "0",
        None,
        -1,
        -2,
        2,
        3,
        10**20,
        2**63,
        1e3,
        [0],
        {"i": 0},
    ],
)
def test_invalid_line_item_rejected(
    client: TestClient, api_key: str, runtime: Runtime, line_item: Any
) -> None:
    order = shipped_order(runtime)
    before = table_counts(runtime)
    response = refund_request(
        client, order.id, {"lineItem": line_item, "reason": "x"}, key=api_key
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] is True
    assert error["code"] == "invalid_request"
    assert [detail["field"] for detail in error["details"]] == ["lineItem"]
    assert error["details"][0]["message"]
    assert table_counts(runtime) == before


def test_huge_integer_literal_rejected(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    before = table_counts(runtime)
    for digits in (30, 400, 5000):
        response = client.post(
            f"{ORDERS}/{order.id}/refunds",
            content=b'{"lineItem": 1' + b"0" * digits + b', "reason": "x"}',
            headers={"X-API-KEY": api_key, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, (digits, response.text)
    assert table_counts(runtime) == before


@pytest.mark.parametrize(
    "reason",
    [
        "",
        "   ",
        "\n\t \n",
        "a" * 1001,
        "  " + "a" * 1001 + "  ",
        "nul\x00byte",
        "carriage\rreturn",
        "windows\r\nline",
        "escape \x1b[31mred",
        "bell\x07",
        "delete\x7f",
        "next\x85line",
        "vertical\x0btab",
        "form\x0cfeed",
        "trailing carriage return\r",
        "\x1fleading unit separator",
        "  padded nul \x00  ",
        5,
        None,
        True,
        ["broken"],
        {"text": "broken"},
    ],
)
def test_invalid_reason_rejected(
    client: TestClient, api_key: str, runtime: Runtime, reason: Any
) -> None:
    order = shipped_order(runtime)
    before = table_counts(runtime)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": reason}, key=api_key
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_request"
    assert [detail["field"] for detail in error["details"]] == ["reason"]
    assert table_counts(runtime) == before


@pytest.mark.parametrize(
    ("reason", "stored"),
    [
        ("  " + "a" * 1000 + "\n", "a" * 1000),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("\U0001f4e6" * 1000, "\U0001f4e6" * 1000),
        ("x", "x"),
    ],
)
def test_edge_reasons_accepted(
    client: TestClient, api_key: str, runtime: Runtime, reason: str, stored: str
) -> None:
    order = shipped_order(runtime)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": reason}, key=api_key
    )
    assert response.status_code == 201, response.text
    assert response.json()["reason"] == stored
    assert refunds_of(runtime, order.id)[0].reason == stored


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"lineItem": 0, "reason": "x", "amount": "100.00"}, ["amount"]),
        ({"lineItem": 0, "reason": "x", "lineItems": [1]}, ["lineItems"]),
        ({"reason": "x"}, ["lineItem"]),
        ({"lineItem": 0}, ["reason"]),
        ({}, ["lineItem", "reason"]),
        ([{"lineItem": 0, "reason": "x"}], ["body"]),
        ("lineItem", ["body"]),
        (7, ["body"]),
    ],
)
def test_body_shape_rejected(
    client: TestClient, api_key: str, runtime: Runtime, body: Any, fields: list[str]
) -> None:
    order = shipped_order(runtime)
    before = table_counts(runtime)
    response = refund_request(client, order.id, body, key=api_key)
    assert response.status_code == 400, response.text
    assert sorted(detail["field"] for detail in response.json()["details"]) == fields
    assert table_counts(runtime) == before


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (
            b'{"lineItem": 0, "reason": "\\ud800"}',
            "application/json",
            400,
            "invalid_json",
        ),
        (b'{"lineItem": 0, "reason": "x"', "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b"null", "application/json", 400, "invalid_request"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (
            b'{"lineItem": 0, "reason": "x"}',
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            b'{"lineItem": 0, "reason": "x"}',
            "application/json; charset=utf-8",
            201,
            None,
        ),
    ],
)
def test_raw_body_handling(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    content: bytes,
    content_type: str,
    status: int,
    code: str | None,
) -> None:
    order = shipped_order(runtime)
    before = table_counts(runtime)
    response = client.post(
        f"{ORDERS}/{order.id}/refunds",
        content=content,
        headers={"X-API-KEY": api_key, "Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["code"] == code
        assert table_counts(runtime) == before


def test_unpaid_order_conflicts(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_unpaid_order(runtime)
    before = table_counts(runtime)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "x"}, key=api_key
    )
    assert response.status_code == 409
    assert response.json()["code"] == "order_not_paid"
    assert table_counts(runtime) == before


def test_unshipped_item_conflicts(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    with runtime.session_factory() as session, session.begin():
        factories.make_package(session, order.id, [1])
        # A return parcel holding line item 0 is not a shipment of it.
        factories.make_package(session, order.id, [0], kind="return")
    before = table_counts(runtime)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "x"}, key=api_key
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "line_item_not_shipped"
    assert "Line item 0" in body["message"]
    assert table_counts(runtime) == before
    shipped = refund_request(
        client, order.id, {"lineItem": 1, "reason": "x"}, key=api_key
    )
    assert shipped.status_code == 201


def test_in_transit_item_refundable(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "Lost"}, key=api_key
    )
    assert response.status_code == 201, response.text


def test_inside_return_window(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    assert runtime.settings.return_window_days == 30
    order = shipped_order(runtime, delivered_days_ago=29.9)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "x"}, key=api_key
    )
    assert response.status_code == 201, response.text


def test_return_window_expired(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=30.1)
    before = table_counts(runtime)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "x"}, key=api_key
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "return_window_expired"
    assert ISO_MS.fullmatch(body["deliveredAt"])
    assert ISO_MS.fullmatch(body["returnWindowClosedAt"])
    assert "30 days" in body["message"]
    assert table_counts(runtime) == before


@pytest.mark.parametrize(
    "status",
    ["refund-request-initiated", "refund-request-accepted", "refund-request-completed"],
)
def test_active_request_blocks_another(
    client: TestClient, api_key: str, runtime: Runtime, status: str
) -> None:
    order = shipped_order(runtime)
    first = refund_request(
        client, order.id, {"lineItem": 0, "reason": "first"}, key=api_key
    ).json()
    set_refund_status(runtime, first["refundId"], status)
    before = table_counts(runtime)
    response = refund_request(
        client, order.id, {"lineItem": 0, "reason": "again"}, key=api_key
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "refund_already_requested"
    assert body["refund"] == {**first, "status": status}
    assert first["refundId"] in body["message"]
    assert table_counts(runtime) == before
    other_item = refund_request(
        client, order.id, {"lineItem": 1, "reason": "x"}, key=api_key
    )
    assert other_item.status_code == 201


def test_new_request_after_rejection(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    first = refund_request(
        client, order.id, {"lineItem": 0, "reason": "first"}, key=api_key
    ).json()
    set_refund_status(runtime, first["refundId"], "refund-request-rejected")
    second = refund_request(
        client, order.id, {"lineItem": 0, "reason": "second"}, key=api_key
    )
    assert second.status_code == 201, second.text
    history = client.get(
        f"{ORDERS}/{order.id}/refunds", headers={"X-API-KEY": api_key}
    ).json()
    assert [refund["reason"] for refund in history] == ["first", "second"]
    assert [refund["status"] for refund in history] == [
        "refund-request-rejected",
        "refund-request-initiated",
    ]


def test_list_refunds_oldest_first(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, items=3)
    url = f"{ORDERS}/{order.id}/refunds"
    assert client.get(url, headers={"X-API-KEY": api_key}).json() == []
    created = [
        refund_request(
            client, order.id, {"lineItem": index, "reason": f"r{index}"}, key=api_key
        ).json()
        for index in (2, 0, 1)
    ]
    listing = client.get(url, headers={"X-API-KEY": api_key})
    assert listing.status_code == 200
    assert listing.json() == created
    filtered = client.get(url, params={"lineItem": "0"}, headers={"X-API-KEY": api_key})
    assert filtered.status_code == 200
    assert filtered.json() == [created[1]]
    by_secret = client.get(
        url, params={"lineItem": 2}, headers={"Authorization": order.client_secret}
    )
    assert by_secret.json() == [created[0]]


@pytest.mark.parametrize(
    "query",
    [
        "lineItem=01",
        "lineItem=-1",
        "lineItem=1.0",
        "lineItem=%2B1",
        "lineItem=true",
        "lineItem=",
        "lineItem=%201",
        "lineItem=abc",
        "lineItem=2",
        "lineItem=99999999999",
        "lineItem=0&lineItem=1",
        "lineItem=%D9%A1",
    ],
)
def test_list_bad_line_item_query(
    client: TestClient, api_key: str, runtime: Runtime, query: str
) -> None:
    order = shipped_order(runtime)
    response = client.get(
        f"{ORDERS}/{order.id}/refunds?{query}", headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_request"
    assert [detail["field"] for detail in error["details"]] == ["lineItem"]


def test_list_needs_read_scope(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    key = make_key("orders.update")
    response = client.get(f"{ORDERS}/{order.id}/refunds", headers={"X-API-KEY": key})
    assert response.status_code == 403
    assert "orders.read" in response.json()["message"]
