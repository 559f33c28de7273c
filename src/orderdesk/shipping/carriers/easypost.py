"""EasyPost tracker webhooks.

EasyPost posts an Event object whose `description` is "tracker.created" or
"tracker.updated" and whose `result` is a Tracker: `tracking_code`, `carrier`,
`status`, `status_detail`, `est_delivery_date` and the whole history in
`tracking_details[]` (`datetime`, `message`, `status`, `status_detail`,
`tracking_location {city, state, country, zip}`). Other event types are acknowledged
and ignored.

Signature: with a webhook secret set, EasyPost sends `X-Hmac-Signature:
hmac-sha256-hex=<hex HMAC-SHA256 of the raw body>`, keyed with the secret in Unicode
NFKD form encoded as UTF-8.

A tracking detail has no id of its own, so its dedupe key hashes the tracking code,
time, status, detail and message: every resend of the history stores each scan once.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orderdesk.shipping.carriers.base import (
    CarrierEvent,
    CarrierUpdate,
    SignatureInvalid,
    SignedRequest,
    StatusTable,
    SubStatusTable,
    clean_description,
    content_dedupe_key,
    hex_signature,
    join_location,
    optional_text,
    parse_carrier_time,
    parse_estimate,
    require_list,
    require_object,
    require_text,
    same_text,
    translate,
    usable_time,
)
from orderdesk.shipping.statuses import PackageStatus as S

PROVIDER = "easypost"
SIGNATURE_HEADER = "x-hmac-signature"
SIGNATURE_PREFIX = "hmac-sha256-hex="
TRACKER_EVENTS = frozenset({"tracker.created", "tracker.updated"})

# Tracker.status, as EasyPost documents its values.
STATUSES: StatusTable = {
    "pre_transit": S.PENDING,
    "in_transit": S.SHIPPED,
    "out_for_delivery": S.OUT_FOR_DELIVERY,
    "available_for_pickup": S.AVAILABLE_FOR_PICKUP,
    "delivered": S.DELIVERED,
    "return_to_sender": S.RETURNED_TO_SENDER,
    "failure": S.EXCEPTION,
    # A cancelled label never reaches the buyer.
    "cancelled": S.EXCEPTION,
    # No news about the parcel: the carrier has nothing yet, or tracking failed.
    "unknown": None,
    "error": None,
}

# (status, status_detail) pairs more specific than the status alone.
SUB_STATUSES: SubStatusTable = {
    ("in_transit", "out_for_delivery"): S.OUT_FOR_DELIVERY,
    ("in_transit", "arrived_at_pickup_location"): S.AVAILABLE_FOR_PICKUP,
    # Carriers report a failed delivery attempt ("customer not available") as a
    # delivery exception while the parcel is still with them.
    ("in_transit", "delivery_exception"): S.DELIVERY_ATTEMPTED,
    ("out_for_delivery", "delivery_exception"): S.DELIVERY_ATTEMPTED,
    ("in_transit", "return"): S.RETURNED_TO_SENDER,
    ("in_transit", "refused"): S.EXCEPTION,
    ("in_transit", "lost"): S.EXCEPTION,
    ("in_transit", "damaged"): S.EXCEPTION,
    ("in_transit", "held"): S.EXCEPTION,
    ("in_transit", "missorted"): S.EXCEPTION,
    ("in_transit", "transit_exception"): S.EXCEPTION,
    ("in_transit", "delayed"): S.EXCEPTION,
    ("in_transit", "weather_delay"): S.EXCEPTION,
    ("pre_transit", "cancelled"): S.EXCEPTION,
}


class EasyPostAdapter:
    name = PROVIDER

    def verify(self, request: SignedRequest, secrets: Mapping[str, str | None]) -> bool:
        secret = secrets.get("carrier_easypost_secret")
        if not secret:
            return False
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            raise SignatureInvalid(PROVIDER, "request has no X-Hmac-Signature header")
        key = unicodedata.normalize("NFKD", secret).encode("utf-8")
        expected = SIGNATURE_PREFIX + hex_signature(key, request.body)
        if not same_text(given.strip().lower(), expected):
            raise SignatureInvalid(PROVIDER, "X-Hmac-Signature does not match the body")
        return True

    def parse(self, document: Any, now: datetime) -> list[CarrierUpdate]:
        event = require_object(PROVIDER, document, "body")
        description = require_text(PROVIDER, event.get("description"), "description")
        if description not in TRACKER_EVENTS:
            return []
        tracker = require_object(PROVIDER, event.get("result"), "result")
        return [parse_tracker(tracker, now)]


def parse_tracker(tracker: dict[str, Any], now: datetime) -> CarrierUpdate:
    number = require_text(
        PROVIDER, tracker.get("tracking_code"), "result.tracking_code"
    )
    carrier = optional_text(PROVIDER, tracker.get("carrier"), "result.carrier")
    details = require_list(
        PROVIDER, tracker.get("tracking_details"), "result.tracking_details"
    )
    estimate = parse_estimate(
        PROVIDER, tracker.get("est_delivery_date"), "result.est_delivery_date"
    )
    events: list[CarrierEvent] = []
    skipped = 0
    for position, entry in enumerate(details):
        event = _parse_detail(number, entry, f"result.tracking_details.{position}")
        if event is None or not usable_time(event.occurred_at, now):
            skipped += 1
            continue
        events.append(event)
    events.sort(key=lambda item: item.occurred_at)
    return CarrierUpdate(PROVIDER, carrier, number, events, estimate, skipped)


def _parse_detail(number: str, entry: Any, path: str) -> CarrierEvent | None:
    detail = require_object(PROVIDER, entry, path)
    status = require_text(PROVIDER, detail.get("status"), f"{path}.status")
    sub_status = optional_text(
        PROVIDER, detail.get("status_detail"), f"{path}.status_detail"
    )
    occurred_at = parse_carrier_time(
        PROVIDER, detail.get("datetime"), f"{path}.datetime"
    )
    message = optional_text(PROVIDER, detail.get("message"), f"{path}.message")
    mapped = translate(PROVIDER, STATUSES, SUB_STATUSES, status, sub_status)
    if mapped is None:
        return None
    location = detail.get("tracking_location")
    place = None
    if isinstance(location, dict):
        place = join_location(
            location.get("city"),
            location.get("state"),
            location.get("zip"),
            location.get("country"),
        )
    return CarrierEvent(
        status=mapped,
        occurred_at=occurred_at,
        description=clean_description(message),
        location=place,
        dedupe_key=content_dedupe_key(
            PROVIDER,
            number.upper(),
            occurred_at.isoformat(),
            status,
            sub_status,
            message,
        ),
        raw={
            "status": status,
            "status_detail": sub_status,
            "datetime": detail.get("datetime"),
        },
    )


ADAPTER = EasyPostAdapter()
