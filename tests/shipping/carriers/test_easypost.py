"""EasyPost: status table, tracker parsing and the X-Hmac-Signature check."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from datetime import UTC, datetime

import pytest
from tests.shipping.carriers.payloads import (
    EASYPOST_SECRET,
    easypost_detail,
    easypost_event,
    easypost_headers,
    encode,
)

from orderdesk.shipping.carriers.base import (
    CarrierPayloadInvalid,
    SignatureInvalid,
    SignedRequest,
    map_status,
)
from orderdesk.shipping.carriers.easypost import (
    ADAPTER,
    STATUSES,
    SUB_STATUSES,
)
from orderdesk.shipping.statuses import PackageStatus

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
SECRETS = {"carrier_easypost_secret": EASYPOST_SECRET}


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        ("pre_transit", "label_created", "pending"),
        ("in_transit", "departed_facility", "shipped"),
        ("out_for_delivery", "out_for_delivery", "out-for-delivery"),
        ("available_for_pickup", "arrived_at_pickup_location", "available-for-pickup"),
        ("delivered", "arrived_at_destination", "delivered"),
        ("return_to_sender", "return", "returned-to-sender"),
        ("failure", "lost", "exception"),
        ("cancelled", "cancelled", "exception"),
        ("unknown", "unknown", None),
        ("error", "unknown", None),
        ("in_transit", "out_for_delivery", "out-for-delivery"),
        ("in_transit", "arrived_at_pickup_location", "available-for-pickup"),
        ("in_transit", "delivery_exception", "delivery-attempted"),
        ("out_for_delivery", "delivery_exception", "delivery-attempted"),
        ("in_transit", "return", "returned-to-sender"),
        ("in_transit", "refused", "exception"),
        ("in_transit", "lost", "exception"),
        ("in_transit", "damaged", "exception"),
        ("in_transit", "held", "exception"),
        ("in_transit", "missorted", "exception"),
        ("in_transit", "transit_exception", "exception"),
        ("in_transit", "delayed", "exception"),
        ("in_transit", "weather_delay", "exception"),
        ("pre_transit", "cancelled", "exception"),
    ],
)
def test_easypost_status_row(status: str, detail: str, expected: str | None) -> None:
    assert map_status(STATUSES, SUB_STATUSES, status, detail) == expected


def test_easypost_tables_fully_tested() -> None:
    # Every table row appears in the parametrized cases above.
    assert len(STATUSES) == 10
    assert len(SUB_STATUSES) == 14


def test_easypost_unknown_status_raises() -> None:
    with pytest.raises(KeyError):
        map_status(STATUSES, SUB_STATUSES, "teleported", None)


def test_easypost_tracker_parsed() -> None:
    document = easypost_event(
        "1z 999 aa1 0123456784",
        [
            easypost_detail(
                "in_transit", "2026-03-02T09:00:00Z", "Departed", "departed_facility"
            ),
            easypost_detail(
                "pre_transit",
                "2026-03-01T08:30:00Z",
                "Label created",
                city=None,
                state=None,
            ),
            easypost_detail("unknown", "2026-03-02T10:00:00Z", "Status not available"),
        ],
        est_delivery_date="2026-03-04T17:00:00Z",
    )

    [update] = ADAPTER.parse(document, NOW)

    assert update.provider == "easypost"
    assert update.carrier == "UPS"
    assert update.tracking_number == "1z 999 aa1 0123456784"
    assert update.skipped == 1
    assert [event.status for event in update.events] == ["pending", "shipped"]

    first, second = update.events
    assert first.occurred_at == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert first.location is None
    assert second.description == "Departed"
    assert second.location == "OAKLAND, CA, US"

    assert update.estimate is not None
    assert update.estimate.lower_bound == datetime(2026, 3, 4, 17, tzinfo=UTC)
    assert update.estimate.upper_bound == datetime(2026, 3, 4, 17, tzinfo=UTC)


def test_easypost_dedupe_key_stable() -> None:
    detail = easypost_detail("in_transit", "2026-03-02T09:00:00Z", "Departed")
    [first] = ADAPTER.parse(easypost_event("1Z999AA10123456784", [detail]), NOW)
    [again] = ADAPTER.parse(easypost_event("1z999aa10123456784", [dict(detail)]), NOW)
    other = easypost_detail("in_transit", "2026-03-02T09:00:01Z", "Departed")
    [moved] = ADAPTER.parse(easypost_event("1Z999AA10123456784", [other]), NOW)
    assert first.events[0].dedupe_key == again.events[0].dedupe_key
    assert first.events[0].dedupe_key != moved.events[0].dedupe_key
    assert first.events[0].dedupe_key.startswith("easypost:sha256:")


def test_easypost_future_event_skipped() -> None:
    detail = easypost_detail("delivered", "2026-03-05T13:00:00Z", "Delivered")
    [update] = ADAPTER.parse(easypost_event("1Z999AA10123456784", [detail]), NOW)
    assert update.events == []
    assert update.skipped == 1


def test_easypost_other_event_ignored() -> None:
    document = {"object": "Event", "description": "batch.updated", "result": {}}
    assert ADAPTER.parse(document, NOW) == []


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "body"),
        ({"result": {}}, "description"),
        ({"description": "tracker.updated", "result": "trk"}, "result"),
        ({"description": "tracker.updated", "result": {}}, "result.tracking_code"),
        (
            {
                "description": "tracker.updated",
                "result": {"tracking_code": "1Z9", "tracking_details": {}},
            },
            "result.tracking_details",
        ),
        (
            easypost_event(
                "1Z999", [{"status": "in_transit", "datetime": "yesterday"}]
            ),
            "result.tracking_details.0.datetime",
        ),
        (
            easypost_event(
                "1Z999", [{"status": 3, "datetime": "2026-03-01T00:00:00Z"}]
            ),
            "result.tracking_details.0.status",
        ),
    ],
)
def test_easypost_wrong_shape_rejected(document: object, field: str) -> None:
    with pytest.raises(CarrierPayloadInvalid) as caught:
        ADAPTER.parse(document, NOW)
    assert caught.value.details == [
        {"field": field, "message": caught.value.details[0]["message"]}
    ]
    assert caught.value.status_code == 400


def _request(body: bytes, headers: dict[str, str]) -> SignedRequest:
    return SignedRequest(body, {k.lower(): v for k, v in headers.items()}, {}, NOW)


def test_easypost_signature_accepted() -> None:
    body = encode(easypost_event("1Z999AA10123456784", []))
    assert ADAPTER.verify(_request(body, easypost_headers(body)), SECRETS) is True


def test_easypost_signature_uses_nfkd_secret() -> None:
    body = b'{"description": "tracker.updated"}'
    composed = unicodedata.normalize("NFC", EASYPOST_SECRET)
    decomposed = unicodedata.normalize("NFKD", EASYPOST_SECRET).encode()
    assert composed.encode() != decomposed
    digest = hmac.new(decomposed, body, hashlib.sha256).hexdigest()
    headers = {"X-Hmac-Signature": f"hmac-sha256-hex={digest}"}
    secrets = {"carrier_easypost_secret": composed}
    assert ADAPTER.verify(_request(body, headers), secrets) is True


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hmac-Signature": "hmac-sha256-hex=" + "0" * 64},
        {"X-Hmac-Signature": "garbage"},
    ],
)
def test_easypost_bad_signature_rejected(headers: dict[str, str]) -> None:
    body = encode(easypost_event("1Z999AA10123456784", []))
    with pytest.raises(SignatureInvalid) as caught:
        ADAPTER.verify(_request(body, headers), SECRETS)
    assert caught.value.status_code == 401


def test_easypost_tampered_body_rejected() -> None:
    body = encode(easypost_event("1Z999AA10123456784", []))
    headers = easypost_headers(body)
    with pytest.raises(SignatureInvalid):
        ADAPTER.verify(_request(body + b" ", headers), SECRETS)


def test_easypost_without_secret_unchecked() -> None:
    assert (
        ADAPTER.verify(_request(b"{}", {}), {"carrier_easypost_secret": None}) is False
    )


def test_easypost_status_enum_values() -> None:
    assert all(
        value is None or isinstance(value, PackageStatus) for value in STATUSES.values()
    )
