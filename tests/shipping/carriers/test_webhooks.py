"""Carrier webhooks through HTTP: each provider's payloads move packages, and the
tracking response shows the result field by field.

Secrets are set both as settings and as ORDERDESK_* variables, so the tests run
whether or not config.Settings declares the carrier fields.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.shipping.carriers.payloads import (
    AFTERSHIP_SECRET,
    EASYPOST_SECRET,
    SHIPPO_SECRET,
    SHIPPO_TOKEN,
    WEBHOOKS,
    aftership_checkpoint,
    aftership_event,
    aftership_headers,
    easypost_detail,
    easypost_event,
    easypost_headers,
    encode,
    shippo_event,
    shippo_headers,
    shippo_status,
)
from tests.shipping.helpers import (
    hours_ago,
    iso,
    line_items_of,
    new_paid_order,
    order_row,
    shipped,
    table_counts,
    tracking,
)

from orderdesk.runtime import Runtime
from orderdesk.shipping.models import TrackingEvent

SECRETS = {
    "carrier_easypost_secret": EASYPOST_SECRET,
    "carrier_shippo_secret": SHIPPO_SECRET,
    "carrier_shippo_token": SHIPPO_TOKEN,
    "carrier_aftership_secret": AFTERSHIP_SECRET,
}
UPS = "1Z999AA10123456784"
USPS = "9102969010383081813033"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(SECRETS)


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"ORDERDESK_{name.upper()}", value)


def post_easypost(client: TestClient, document: Any) -> Any:
    body = encode(document)
    return client.post(
        f"{WEBHOOKS}/easypost", content=body, headers=easypost_headers(body)
    )


def post_shippo(client: TestClient, document: Any) -> Any:
    body = encode(document)
    return client.post(
        f"{WEBHOOKS}/shippo?token={SHIPPO_TOKEN}",
        content=body,
        headers=shippo_headers(body),
    )


def post_aftership(client: TestClient, document: Any) -> Any:
    body = encode(document)
    return client.post(
        f"{WEBHOOKS}/aftership", content=body, headers=aftership_headers(body)
    )


def at(hours: float) -> str:
    """A carrier timestamp `hours` ago, whole seconds, in the Z form."""
    return iso(hours_ago(hours)).replace(".000Z", "Z")


def ms(carrier_time: str) -> str:
    """The API's form of a carrier time: milliseconds and Z."""
    return iso(datetime.fromisoformat(carrier_time))


def ship_one(
    client: TestClient, key: str, runtime: Runtime, carrier: str, number: str
) -> str:
    order = new_paid_order(runtime, items=2)
    shipped(client, key, order.id, [0, 1], number=number, carrier=carrier)
    return order.id


def expect_ok(response: Any, **counts: int) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["received"] is True
    for name, value in counts.items():
        assert body[name] == value, (name, body)


# One payload per status of ours, for each provider.

EASYPOST_CASES = [
    ("pre_transit", "label_created", "pending"),
    ("in_transit", "departed_facility", "shipped"),
    ("out_for_delivery", "out_for_delivery", "out-for-delivery"),
    ("in_transit", "delivery_exception", "delivery-attempted"),
    ("available_for_pickup", "arrived_at_pickup_location", "available-for-pickup"),
    ("delivered", "arrived_at_destination", "delivered"),
    ("failure", "lost", "exception"),
    ("return_to_sender", "return", "returned-to-sender"),
]
SHIPPO_CASES = [
    ("PRE_TRANSIT", "information_received", "pending"),
    ("TRANSIT", "package_departed", "shipped"),
    ("TRANSIT", "out_for_delivery", "out-for-delivery"),
    ("TRANSIT", "delivery_attempted", "delivery-attempted"),
    ("TRANSIT", "pickup_available", "available-for-pickup"),
    ("DELIVERED", "delivered", "delivered"),
    ("FAILURE", "package_lost", "exception"),
    ("RETURNED", "return_to_sender", "returned-to-sender"),
]
AFTERSHIP_CASES = [
    ("InfoReceived", "InfoReceived_001", "pending"),
    ("InTransit", "InTransit_007", "shipped"),
    ("OutForDelivery", "OutForDelivery_001", "out-for-delivery"),
    ("AttemptFail", "AttemptFail_001", "delivery-attempted"),
    ("AvailableForPickup", "AvailableForPickup_001", "available-for-pickup"),
    ("Delivered", "Delivered_001", "delivered"),
    ("Exception", "Exception_013", "exception"),
    ("Exception", "Exception_011", "returned-to-sender"),
]


def check_single_event(
    package: dict[str, Any], status: str, when: str, text: str
) -> None:
    assert package["status"] == status
    assert package["events"] == [
        {
            "status": status,
            "occurredAt": ms(when),
            "description": text,
            "location": package["events"][0]["location"],
        }
    ]
    assert package["events"][0]["location"]
    if status == "delivered":
        assert package["deliveryTimeRange"] == {
            "lowerBound": ms(when),
            "upperBound": ms(when),
        }


@pytest.mark.parametrize(("status", "detail", "expected"), EASYPOST_CASES)
def test_easypost_status_via_webhook(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    status: str,
    detail: str,
    expected: str,
) -> None:
    order_id = ship_one(client, api_key, runtime, "UPS", UPS)
    when = at(2)
    detail_body = easypost_detail(status, when, f"Carrier says {detail}", detail)
    expect_ok(post_easypost(client, easypost_event(UPS, [detail_body])), recorded=1)
    [package] = tracking(client, api_key, order_id)
    check_single_event(package, expected, when, f"Carrier says {detail}")
    assert package["events"][0]["location"] == "OAKLAND, CA, US"


@pytest.mark.parametrize(("status", "substatus", "expected"), SHIPPO_CASES)
def test_shippo_status_via_webhook(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    status: str,
    substatus: str,
    expected: str,
) -> None:
    order_id = ship_one(client, api_key, runtime, "USPS", USPS)
    when = at(2)
    entry = shippo_status(status, when, f"Carrier says {substatus}", substatus, "st_1")
    expect_ok(post_shippo(client, shippo_event(USPS, [entry])), recorded=1)
    [package] = tracking(client, api_key, order_id)
    check_single_event(package, expected, when, f"Carrier says {substatus}")
    assert package["events"][0]["location"] == "San Francisco, CA, 94103, US"


@pytest.mark.parametrize(("tag", "subtag", "expected"), AFTERSHIP_CASES)
def test_aftership_status_via_webhook(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    tag: str,
    subtag: str,
    expected: str,
) -> None:
    order_id = ship_one(client, api_key, runtime, "United Parcel Service", UPS)
    when = at(2)
    checkpoint = aftership_checkpoint(tag, when, f"Carrier says {subtag}", subtag)
    expect_ok(post_aftership(client, aftership_event(UPS, [checkpoint])), recorded=1)
    [package] = tracking(client, api_key, order_id)
    check_single_event(package, expected, when, f"Carrier says {subtag}")
    assert package["events"][0]["location"] == "Brooklyn, NY, USA"


# A whole journey, a resend and an out-of-order pair, per provider.


def test_easypost_journey_completes_order(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "UPS", "1z 999 aa1 0123456784")
    estimate = at(-24)
    history = [easypost_detail("pre_transit", at(30), "Label created", "label_created")]
    expect_ok(
        post_easypost(client, easypost_event(UPS, history, est_delivery_date=estimate))
    )
    history.append(
        easypost_detail("in_transit", at(20), "Departed facility", "departed_facility")
    )
    expect_ok(
        post_easypost(client, easypost_event(UPS, history, est_delivery_date=estimate))
    )

    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "shipped"
    assert package["deliveryTimeRange"] == {
        "lowerBound": ms(estimate),
        "upperBound": ms(estimate),
    }

    history.append(easypost_detail("out_for_delivery", at(3), "Out for delivery", None))
    history.append(easypost_detail("delivered", at(1), "Delivered, front door", None))
    expect_ok(
        post_easypost(client, easypost_event(UPS, history)), recorded=2, duplicates=2
    )

    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "delivered"
    assert package["packageTracking"] == {
        "carrierName": "UPS",
        "carrierTrackingNumber": UPS,
    }
    delivered = ms(history[-1]["datetime"])
    assert package["deliveryTimeRange"] == {
        "lowerBound": delivered,
        "upperBound": delivered,
    }
    assert package["events"] == [
        {
            "status": status,
            "occurredAt": ms(entry["datetime"]),
            "description": entry["message"],
            "location": "OAKLAND, CA, US",
        }
        for status, entry in zip(
            ["pending", "shipped", "out-for-delivery", "delivered"],
            history,
            strict=True,
        )
    ]
    assert [item.delivery_status for item in line_items_of(runtime, order_id)] == [
        "completed",
        "completed",
    ]
    assert order_row(runtime, order_id).phase == "completed"


def test_easypost_resend_stored_once(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "UPS", UPS)
    document = easypost_event(
        UPS,
        [
            easypost_detail("pre_transit", at(30), "Label created"),
            easypost_detail("in_transit", at(20), "Departed facility"),
        ],
    )
    expect_ok(post_easypost(client, document), recorded=2, duplicates=0)
    before = tracking(client, api_key, order_id)
    counts = table_counts(runtime)
    expect_ok(post_easypost(client, document), recorded=0, duplicates=2)
    assert tracking(client, api_key, order_id) == before
    assert table_counts(runtime) == counts


def test_easypost_late_shipped_keeps_delivered(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "UPS", UPS)
    delivered = easypost_detail("delivered", at(2), "Delivered")
    expect_ok(post_easypost(client, easypost_event(UPS, [delivered])), recorded=1)
    late = easypost_detail("in_transit", at(10), "Departed facility")
    expect_ok(post_easypost(client, easypost_event(UPS, [late])), recorded=1)
    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "delivered"
    assert [event["status"] for event in package["events"]] == ["shipped", "delivered"]
    assert package["deliveryTimeRange"]["upperBound"] == ms(delivered["datetime"])


def test_shippo_journey_and_resend(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "USPS", USPS)
    eta = at(-30)
    history = [
        shippo_status(
            "PRE_TRANSIT", at(40), "Label created", "information_received", "s1"
        ),
        shippo_status(
            "TRANSIT", at(30), "Accepted at USPS facility", "package_accepted", "s2"
        ),
    ]
    expect_ok(post_shippo(client, shippo_event(USPS, history, eta=eta)), recorded=2)
    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "shipped"
    assert package["deliveryTimeRange"] == {
        "lowerBound": ms(eta),
        "upperBound": ms(eta),
    }

    history += [
        shippo_status("TRANSIT", at(5), "Out for delivery", "out_for_delivery", "s3"),
        shippo_status("TRANSIT", at(4), "Notice left", "delivery_attempted", "s4"),
        shippo_status("DELIVERED", at(1), "Delivered to mailbox", "delivered", "s5"),
    ]
    document = shippo_event(USPS, history)
    expect_ok(post_shippo(client, document), recorded=3, duplicates=2)
    expect_ok(post_shippo(client, document), recorded=0, duplicates=5)

    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "delivered"
    assert [event["status"] for event in package["events"]] == [
        "pending",
        "shipped",
        "out-for-delivery",
        "delivery-attempted",
        "delivered",
    ]
    assert [event["description"] for event in package["events"]] == [
        entry["status_details"] for entry in history
    ]
    delivered = ms(history[-1]["status_date"])
    assert package["deliveryTimeRange"] == {
        "lowerBound": delivered,
        "upperBound": delivered,
    }
    assert order_row(runtime, order_id).phase == "completed"


def test_shippo_out_of_order_pair(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "USPS", USPS)
    later = shippo_status("TRANSIT", at(3), "Out for delivery", "out_for_delivery", "b")
    earlier = shippo_status("TRANSIT", at(9), "Departed", "package_departed", "a")
    expect_ok(post_shippo(client, shippo_event(USPS, [later])), recorded=1)
    expect_ok(post_shippo(client, shippo_event(USPS, [earlier])), recorded=1)
    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "out-for-delivery"
    assert [event["occurredAt"] for event in package["events"]] == [
        ms(earlier["status_date"]),
        ms(later["status_date"]),
    ]


def test_aftership_journey_and_return(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "UPS", UPS)
    checkpoints = [
        aftership_checkpoint("InfoReceived", at(50), "Label created"),
        aftership_checkpoint("InTransit", at(40), "Departure scan", "InTransit_007"),
        aftership_checkpoint(
            "AttemptFail", at(20), "Customer not available", "AttemptFail_002"
        ),
    ]
    expect_ok(post_aftership(client, aftership_event(UPS, checkpoints)), recorded=3)
    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "delivery-attempted"

    checkpoints.append(
        aftership_checkpoint("Exception", at(5), "Returning to sender", "Exception_010")
    )
    expect_ok(
        post_aftership(client, aftership_event(UPS, checkpoints)),
        recorded=1,
        duplicates=3,
    )
    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "returned-to-sender"
    assert package["deliveryTimeRange"] == {"lowerBound": None, "upperBound": None}
    assert [item.delivery_status for item in line_items_of(runtime, order_id)] == [
        "failed",
        "failed",
    ]


def test_aftership_out_of_order_pair(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "UPS", UPS)
    delivered = aftership_checkpoint("Delivered", at(2), "Delivered")
    transit = aftership_checkpoint("InTransit", at(12), "Arrival scan", "InTransit_003")
    expect_ok(post_aftership(client, aftership_event(UPS, [delivered])), recorded=1)
    expect_ok(post_aftership(client, aftership_event(UPS, [transit])), recorded=1)
    expect_ok(post_aftership(client, aftership_event(UPS, [transit])), duplicates=1)
    [package] = tracking(client, api_key, order_id)
    assert package["status"] == "delivered"
    assert [event["status"] for event in package["events"]] == ["shipped", "delivered"]
    assert package["deliveryTimeRange"]["lowerBound"] == ms(
        delivered["checkpoint_time"]
    )


# Refusals: bad signatures, bad bodies, unknown parcels.

Poster = Callable[[TestClient, Any], Any]


@pytest.mark.parametrize(
    ("provider", "document", "headers"),
    [
        (
            "easypost",
            easypost_event(UPS, []),
            {"X-Hmac-Signature": "hmac-sha256-hex=00"},
        ),
        ("easypost", easypost_event(UPS, []), {}),
        ("shippo", shippo_event(UPS, []), {"Shippo-Auth-Signature": "t=1,v1=00"}),
        ("aftership", aftership_event(UPS, []), {"aftership-hmac-sha256": "AAAA"}),
    ],
)
def test_bad_signature_changes_nothing(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    provider: str,
    document: dict[str, Any],
    headers: dict[str, str],
) -> None:
    order_id = ship_one(client, api_key, runtime, "UPS", UPS)
    before = tracking(client, api_key, order_id)
    counts = table_counts(runtime)
    if provider == "easypost":
        document["result"]["tracking_details"] = [
            easypost_detail("delivered", at(1), "Done")
        ]
    body = encode(document)
    response = client.post(
        f"{WEBHOOKS}/{provider}?token={SHIPPO_TOKEN}",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )
    assert response.status_code == 401, response.text
    error = response.json()
    assert error["error"] is True
    assert error["code"] == "invalid_signature"
    assert provider in error["message"]
    assert tracking(client, api_key, order_id) == before
    assert table_counts(runtime) == counts


def test_signed_by_other_secret_rejected(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "UPS", UPS)
    body = encode(
        easypost_event(UPS, [easypost_detail("delivered", at(1), "Delivered")])
    )
    headers = easypost_headers(body, secret="not-the-configured-secret")
    response = client.post(f"{WEBHOOKS}/easypost", content=body, headers=headers)
    assert response.status_code == 401
    assert tracking(client, api_key, order_id)[0]["status"] == "pending"


def test_shippo_wrong_token_rejected(client: TestClient, runtime: Runtime) -> None:
    body = encode(shippo_event(USPS, []))
    response = client.post(
        f"{WEBHOOKS}/shippo?token=guess", content=body, headers=shippo_headers(body)
    )
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'"tracker.updated"', "invalid_carrier_payload"),
        (
            b'{"description": "tracker.updated", "result": []}',
            "invalid_carrier_payload",
        ),
        (
            b'{"description": "tracker.updated", "result": {"tracking_code": 7}}',
            "invalid_carrier_payload",
        ),
    ],
)
def test_easypost_bad_body_400(
    client: TestClient, runtime: Runtime, raw: bytes, code: str
) -> None:
    counts = table_counts(runtime)
    response = client.post(
        f"{WEBHOOKS}/easypost", content=raw, headers=easypost_headers(raw)
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert table_counts(runtime) == counts


def test_deep_nesting_is_400(client: TestClient) -> None:
    # Parsed, or refused by the decoder's recursion limit: a 400 either way.
    raw = b"[" * 30_000 + b"]" * 30_000
    response = client.post(
        f"{WEBHOOKS}/easypost", content=raw, headers=easypost_headers(raw)
    )
    assert response.status_code == 400
    assert response.json()["code"] in ("invalid_json", "invalid_carrier_payload")


def test_oversized_body_413(client: TestClient) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    response = client.post(
        f"{WEBHOOKS}/aftership", content=raw, headers=aftership_headers(raw)
    )
    assert response.status_code == 413


def test_aftership_wrong_shape_400(client: TestClient) -> None:
    document = aftership_event(UPS, [{"tag": "InTransit", "checkpoint_time": "soon"}])
    response = post_aftership(client, document)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_carrier_payload"
    assert body["details"][0]["field"] == "msg.checkpoints.0.checkpoint_time"


def test_wrong_content_type_415(client: TestClient) -> None:
    body = encode(easypost_event(UPS, []))
    headers = {**easypost_headers(body), "Content-Type": "text/plain"}
    response = client.post(f"{WEBHOOKS}/easypost", content=body, headers=headers)
    assert response.status_code == 415


def test_unknown_provider_404(client: TestClient) -> None:
    response = client.post(f"{WEBHOOKS}/fedex", json={})
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "unknown_carrier_provider"
    assert "easypost, shippo, aftership" in body["message"]


def test_unknown_tracking_number_acknowledged(
    client: TestClient, runtime: Runtime
) -> None:
    counts = table_counts(runtime)
    document = easypost_event(
        "1ZNOSUCH0000000000", [easypost_detail("delivered", at(1), "x")]
    )
    expect_ok(post_easypost(client, document), recorded=0, unmatched=1)
    assert table_counts(runtime) == counts


def test_carrier_spelling_still_matches(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "United Parcel Service", UPS)
    checkpoint = aftership_checkpoint("InTransit", at(3), "Departure scan")
    expect_ok(
        post_aftership(client, aftership_event(UPS.lower(), [checkpoint])), recorded=1
    )
    assert tracking(client, api_key, order_id)[0]["status"] == "shipped"


def test_feed_carrier_spelling_differs(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id = ship_one(client, api_key, runtime, "Amazon", "TBA123456789012")
    checkpoint = aftership_checkpoint("InTransit", at(3), "Departure scan")
    document = aftership_event("TBA123456789012", [checkpoint], slug="amazon-fba-us")
    expect_ok(post_aftership(client, document), recorded=1, unmatched=0)
    assert tracking(client, api_key, order_id)[0]["status"] == "shipped"


def test_number_shared_by_carriers(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    ups_order = ship_one(client, api_key, runtime, "UPS", "ABC123456789")
    dhl_order = ship_one(client, api_key, runtime, "DHL", "ABC123456789")
    checkpoint = aftership_checkpoint("InTransit", at(3), "Departure scan")
    document = aftership_event("ABC123456789", [checkpoint], slug="dhl")
    expect_ok(post_aftership(client, document), recorded=1)
    assert tracking(client, api_key, dhl_order)[0]["status"] == "shipped"
    assert tracking(client, api_key, ups_order)[0]["status"] == "pending"


def test_event_rows_carry_provider(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    ship_one(client, api_key, runtime, "USPS", USPS)
    entry = shippo_status("TRANSIT", at(2), "Departed", "package_departed", "st_9")
    expect_ok(post_shippo(client, shippo_event(USPS, [entry])), recorded=1)
    with runtime.session_factory() as session:
        event = session.scalars(select(TrackingEvent)).one()
        assert event.source == "shippo"
        assert event.dedupe_key == "shippo:id:st_9"
        assert event.raw == {
            "status": "TRANSIT",
            "substatus": "package_departed",
            "status_date": entry["status_date"],
        }
        assert session.scalar(select(func.count()).select_from(TrackingEvent)) == 1
