"""AfterShip: tag table, tracking parsing and the aftership-hmac-sha256 check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.shipping.carriers.payloads import (
    AFTERSHIP_SECRET,
    aftership_checkpoint,
    aftership_event,
    aftership_headers,
    encode,
)

from orderdesk.shipping.carriers.aftership import ADAPTER, STATUSES, SUB_STATUSES
from orderdesk.shipping.carriers.base import (
    CarrierPayloadInvalid,
    SignatureInvalid,
    SignedRequest,
    map_status,
)

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
SECRETS = {"carrier_aftership_secret": AFTERSHIP_SECRET}


@pytest.mark.parametrize(
    ("tag", "subtag", "expected"),
    [
        ("Pending", "Pending_001", "pending"),
        ("InfoReceived", "InfoReceived_001", "pending"),
        ("InTransit", "InTransit_007", "shipped"),
        ("OutForDelivery", "OutForDelivery_001", "out-for-delivery"),
        ("AttemptFail", "AttemptFail_002", "delivery-attempted"),
        ("AvailableForPickup", "AvailableForPickup_001", "available-for-pickup"),
        ("Delivered", "Delivered_002", "delivered"),
        ("Exception", "Exception_013", "exception"),
        ("Expired", "Expired_001", "exception"),
        ("Exception", "Exception_010", "returned-to-sender"),
        ("Exception", "Exception_011", "returned-to-sender"),
    ],
)
def test_aftership_status_row(tag: str, subtag: str, expected: str) -> None:
    assert map_status(STATUSES, SUB_STATUSES, tag, subtag) == expected


def test_aftership_tables_fully_tested() -> None:
    assert len(STATUSES) == 9
    assert len(SUB_STATUSES) == 2


def test_aftership_tracking_parsed() -> None:
    checkpoints = [
        aftership_checkpoint("InTransit", "2026-03-02T10:00:00+08:00", "Departed"),
        aftership_checkpoint(
            "InfoReceived", "2026-03-01T09:00:00", "Label", location=None
        ),
    ]
    checkpoints[1].update(city="Reno", state="NV", country_name="United States")
    document = aftership_event(
        "1Z999AA10123456784", checkpoints, expected_delivery="2026-03-04"
    )
    [update] = ADAPTER.parse(document, NOW)
    assert update.carrier == "ups"
    assert [event.status for event in update.events] == ["pending", "shipped"]
    label, departed = update.events
    # A checkpoint time without an offset is read as UTC.
    assert label.occurred_at == datetime(2026, 3, 1, 9, tzinfo=UTC)
    assert label.location == "Reno, NV, United States"
    assert departed.occurred_at == datetime(2026, 3, 2, 2, tzinfo=UTC)
    assert departed.location == "Brooklyn, NY, USA"
    assert update.estimate is not None
    # A date alone is the whole day.
    assert update.estimate.lower_bound == datetime(2026, 3, 4, tzinfo=UTC)
    assert update.estimate.upper_bound == datetime(2026, 3, 5, tzinfo=UTC) - timedelta(
        milliseconds=1
    )


def test_aftership_courier_estimate_preferred() -> None:
    document = aftership_event("1Z999AA10123456784", [], expected_delivery="2026-03-09")
    document["msg"]["courier_estimated_delivery_date"] = {
        "estimated_delivery_date": None,
        "estimated_delivery_date_min": "2026-03-06",
        "estimated_delivery_date_max": "2026-03-07",
    }
    [update] = ADAPTER.parse(document, NOW)
    assert update.estimate is not None
    assert update.estimate.lower_bound == datetime(2026, 3, 6, tzinfo=UTC)
    assert update.estimate.upper_bound == datetime(2026, 3, 8, tzinfo=UTC) - timedelta(
        milliseconds=1
    )


def test_aftership_checkpoint_hash_is_key() -> None:
    checkpoint = aftership_checkpoint("InTransit", "2026-03-02T10:00:00Z", "Departed")
    checkpoint["hash"] = "Yx3k8Pq0"
    [update] = ADAPTER.parse(aftership_event("1Z999AA10123456784", [checkpoint]), NOW)
    assert update.events[0].dedupe_key == "aftership:id:Yx3k8Pq0"


def test_aftership_repeated_checkpoint_once() -> None:
    checkpoint = aftership_checkpoint("InTransit", "2026-03-02T10:00:00Z", "Departed")
    document = aftership_event("1Z999AA10123456784", [checkpoint, dict(checkpoint)])
    [update] = ADAPTER.parse(document, NOW)
    assert len(update.events) == 1


def test_aftership_other_event_ignored() -> None:
    assert ADAPTER.parse({"event": "tracking_pending_time", "msg": {}}, NOW) == []


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"msg": {}}, "event"),
        ({"event": "tracking_update", "msg": None}, "msg"),
        (
            {"event": "tracking_update", "msg": {"tracking_number": ""}},
            "msg.tracking_number",
        ),
        (
            aftership_event("1Z9", [{"tag": "InTransit", "checkpoint_time": 5}]),
            "msg.checkpoints.0.checkpoint_time",
        ),
        (
            aftership_event("1Z9", [{"checkpoint_time": "2026-03-01T00:00:00Z"}]),
            "msg.checkpoints.0.tag",
        ),
    ],
)
def test_aftership_wrong_shape_rejected(document: object, field: str) -> None:
    with pytest.raises(CarrierPayloadInvalid) as caught:
        ADAPTER.parse(document, NOW)
    assert caught.value.details is not None
    assert caught.value.details[0]["field"] == field


def _request(body: bytes, headers: dict[str, str]) -> SignedRequest:
    return SignedRequest(body, {k.lower(): v for k, v in headers.items()}, {}, NOW)


def test_aftership_signature_accepted() -> None:
    body = encode(aftership_event("1Z999AA10123456784", []))
    assert ADAPTER.verify(_request(body, aftership_headers(body)), SECRETS) is True


@pytest.mark.parametrize(
    "headers",
    [{}, {"aftership-hmac-sha256": "AAAA"}, {"aftership-hmac-sha256": ""}],
)
def test_aftership_bad_signature_rejected(headers: dict[str, str]) -> None:
    body = encode(aftership_event("1Z999AA10123456784", []))
    with pytest.raises(SignatureInvalid):
        ADAPTER.verify(_request(body, headers), SECRETS)


def test_aftership_other_secret_rejected() -> None:
    body = encode(aftership_event("1Z999AA10123456784", []))
    headers = aftership_headers(body, secret="someone-else")
    with pytest.raises(SignatureInvalid):
        ADAPTER.verify(_request(body, headers), SECRETS)
