"""Shippo: status table, track parsing, Shippo-Auth-Signature and the URL token."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tests.shipping.carriers.payloads import (
    SHIPPO_SECRET,
    SHIPPO_TOKEN,
    encode,
    shippo_event,
    shippo_headers,
    shippo_status,
)

from orderdesk.shipping.carriers.base import (
    CarrierPayloadInvalid,
    SignatureInvalid,
    SignedRequest,
    map_status,
)
from orderdesk.shipping.carriers.shippo import ADAPTER, STATUSES, SUB_STATUSES

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
BOTH = {"carrier_shippo_secret": SHIPPO_SECRET, "carrier_shippo_token": SHIPPO_TOKEN}


@pytest.mark.parametrize(
    ("status", "substatus", "expected"),
    [
        ("PRE_TRANSIT", "information_received", "pending"),
        ("TRANSIT", "package_departed", "shipped"),
        ("DELIVERED", "delivered", "delivered"),
        ("RETURNED", "return_to_sender", "returned-to-sender"),
        ("RETURNED", "package_unclaimed", "returned-to-sender"),
        ("FAILURE", "package_lost", "exception"),
        ("FAILURE", "package_undeliverable", "exception"),
        ("UNKNOWN", "other", None),
        ("TRANSIT", "out_for_delivery", "out-for-delivery"),
        ("TRANSIT", "delivery_attempted", "delivery-attempted"),
        ("TRANSIT", "notice_left", "delivery-attempted"),
        ("TRANSIT", "location_inaccessible", "delivery-attempted"),
        ("TRANSIT", "reschedule_delivery", "delivery-attempted"),
        ("TRANSIT", "pickup_available", "available-for-pickup"),
        ("TRANSIT", "address_issue", "exception"),
        ("TRANSIT", "contact_carrier", "exception"),
        ("TRANSIT", "delayed", "exception"),
        ("TRANSIT", "package_damaged", "exception"),
        ("TRANSIT", "package_held", "exception"),
    ],
)
def test_shippo_status_row(status: str, substatus: str, expected: str | None) -> None:
    assert map_status(STATUSES, SUB_STATUSES, status, substatus) == expected


def test_shippo_tables_fully_tested() -> None:
    assert len(STATUSES) == 6
    assert len(SUB_STATUSES) == 11


def test_shippo_track_parsed() -> None:
    transit = shippo_status(
        "TRANSIT", "2026-03-02T10:00:00Z", "Departed", "package_departed", "st_2"
    )
    label = shippo_status("PRE_TRANSIT", "2026-03-01T09:00:00Z", "Label", None, "st_1")
    document = shippo_event(
        "9102969010383081813033", [label, transit], eta="2026-03-04T18:00:00Z"
    )
    [update] = ADAPTER.parse(document, NOW)
    assert update.carrier == "usps"
    assert update.tracking_number == "9102969010383081813033"
    # tracking_status repeats the last history entry and is stored once.
    assert [event.dedupe_key for event in update.events] == [
        "shippo:id:st_1",
        "shippo:id:st_2",
    ]
    assert [event.status for event in update.events] == ["pending", "shipped"]
    assert update.events[1].location == "San Francisco, CA, 94103, US"
    assert update.events[1].description == "Departed"
    assert update.estimate is not None
    assert update.estimate.upper_bound == datetime(2026, 3, 4, 18, tzinfo=UTC)


def test_shippo_bare_track_parsed() -> None:
    status = shippo_status(
        "DELIVERED", "2026-03-03T15:00:00-08:00", "Delivered", "delivered"
    )
    track = shippo_event("9400100000000000000000", [status])["data"]
    [update] = ADAPTER.parse(track, NOW)
    assert update.events[0].occurred_at == datetime(2026, 3, 3, 23, tzinfo=UTC)
    assert update.events[0].dedupe_key.startswith("shippo:sha256:")


def test_shippo_other_event_ignored() -> None:
    assert ADAPTER.parse({"event": "transaction_created", "data": {}}, NOW) == []


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"event": "track_updated", "data": []}, "data"),
        ({"event": "track_updated", "data": {}}, "data.tracking_number"),
        (
            {
                "event": "track_updated",
                "data": {"tracking_number": "94001", "tracking_history": "x"},
            },
            "data.tracking_history",
        ),
        (
            shippo_event("94001", [{"status": "TRANSIT", "status_date": None}]),
            "data.tracking_history.0.status_date",
        ),
    ],
)
def test_shippo_wrong_shape_rejected(document: object, field: str) -> None:
    with pytest.raises(CarrierPayloadInvalid) as caught:
        ADAPTER.parse(document, NOW)
    assert caught.value.details is not None
    assert caught.value.details[0]["field"] == field


def _request(
    body: bytes, headers: dict[str, str], query: dict[str, str] | None = None
) -> SignedRequest:
    lowered = {key.lower(): value for key, value in headers.items()}
    return SignedRequest(body, lowered, query or {}, NOW)


def test_shippo_signature_and_token_accepted() -> None:
    body = encode(shippo_event("94001", []))
    headers = shippo_headers(body, timestamp=int(NOW.timestamp()))
    assert (
        ADAPTER.verify(_request(body, headers, {"token": SHIPPO_TOKEN}), BOTH) is True
    )


def test_shippo_stale_signature_rejected() -> None:
    body = encode(shippo_event("94001", []))
    headers = shippo_headers(body, timestamp=int(NOW.timestamp()) - 301)
    with pytest.raises(SignatureInvalid, match="seconds from the server clock"):
        ADAPTER.verify(
            _request(body, headers), {"carrier_shippo_secret": SHIPPO_SECRET}
        )


@pytest.mark.parametrize(
    "header",
    [None, "v1=abc", "t=1772712000", "t=soon,v1=abc", "t=1772712000,v1=" + "0" * 64],
)
def test_shippo_bad_signature_rejected(header: str | None) -> None:
    headers = {} if header is None else {"Shippo-Auth-Signature": header}
    with pytest.raises(SignatureInvalid):
        ADAPTER.verify(
            _request(b"{}", headers), {"carrier_shippo_secret": SHIPPO_SECRET}
        )


@pytest.mark.parametrize(
    "query", [{}, {"token": "wrong"}, {"token": SHIPPO_TOKEN + "x"}]
)
def test_shippo_bad_token_rejected(query: dict[str, str]) -> None:
    with pytest.raises(SignatureInvalid):
        ADAPTER.verify(
            _request(b"{}", {}, query), {"carrier_shippo_token": SHIPPO_TOKEN}
        )


def test_shippo_token_needs_signature_too() -> None:
    # With both configured, a right token does not excuse a missing signature.
    with pytest.raises(SignatureInvalid):
        ADAPTER.verify(_request(b"{}", {}, {"token": SHIPPO_TOKEN}), BOTH)


def test_shippo_without_secret_unchecked() -> None:
    assert ADAPTER.verify(_request(b"{}", {}), {}) is False
