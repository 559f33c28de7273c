"""AfterShip tracking webhooks.

AfterShip posts `{"event": "tracking_update", "event_id", "ts", "msg": <Tracking>}`
(also for "edd_revise", the estimate changing). The Tracking has `tracking_number`,
`slug` (the carrier, such as "ups"), `tag`, `subtag`, `checkpoints[]`
(`checkpoint_time`, `tag`, `subtag`, `message`, `location` or `city`, `state`,
`zip`, `country_name`, and `hash` in newer versions) and the estimate in
`courier_estimated_delivery_date`, `aftership_estimated_delivery_date` or the older
`expected_delivery`. Other event types are acknowledged and ignored.

Signature: `aftership-hmac-sha256` is the base64 HMAC-SHA256 of the raw body keyed
with the webhook secret.

A checkpoint's `hash` is its dedupe key when present; otherwise its time, tag,
subtag, message and location are hashed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orderdesk.shipping.carriers.base import (
    CarrierEvent,
    CarrierUpdate,
    DeliveryEstimate,
    SignatureInvalid,
    SignedRequest,
    StatusTable,
    SubStatusTable,
    base64_signature,
    clean_description,
    content_dedupe_key,
    id_dedupe_key,
    join_location,
    merge_estimate,
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

PROVIDER = "aftership"
SIGNATURE_HEADER = "aftership-hmac-sha256"
TRACKING_EVENTS = frozenset({"tracking_update", "edd_revise"})

# Checkpoint tags, the nine delivery statuses AfterShip documents.
STATUSES: StatusTable = {
    "Pending": S.PENDING,
    "InfoReceived": S.PENDING,
    "InTransit": S.SHIPPED,
    "OutForDelivery": S.OUT_FOR_DELIVERY,
    "AttemptFail": S.DELIVERY_ATTEMPTED,
    "AvailableForPickup": S.AVAILABLE_FOR_PICKUP,
    "Delivered": S.DELIVERED,
    "Exception": S.EXCEPTION,
    # No carrier news for 30 days and AfterShip stopped tracking: someone must look.
    "Expired": S.EXCEPTION,
}

# (tag, subtag) pairs more specific than the tag alone.
SUB_STATUSES: SubStatusTable = {
    ("Exception", "Exception_010"): S.RETURNED_TO_SENDER,  # returning to sender
    ("Exception", "Exception_011"): S.RETURNED_TO_SENDER,  # returned to sender
}


class AfterShipAdapter:
    name = PROVIDER

    def verify(self, request: SignedRequest, secrets: Mapping[str, str | None]) -> bool:
        secret = secrets.get("carrier_aftership_secret")
        if not secret:
            return False
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            raise SignatureInvalid(
                PROVIDER, "request has no aftership-hmac-sha256 header"
            )
        expected = base64_signature(secret.encode("utf-8"), request.body)
        if not same_text(given.strip(), expected):
            raise SignatureInvalid(
                PROVIDER, "aftership-hmac-sha256 does not match the body"
            )
        return True

    def parse(self, document: Any, now: datetime) -> list[CarrierUpdate]:
        body = require_object(PROVIDER, document, "body")
        event = require_text(PROVIDER, body.get("event"), "event")
        if event not in TRACKING_EVENTS:
            return []
        tracking = require_object(PROVIDER, body.get("msg"), "msg")
        return [parse_tracking(tracking, now)]


def parse_tracking(tracking: dict[str, Any], now: datetime) -> CarrierUpdate:
    number = require_text(
        PROVIDER, tracking.get("tracking_number"), "msg.tracking_number"
    )
    slug = optional_text(PROVIDER, tracking.get("slug"), "msg.slug")
    checkpoints = require_list(PROVIDER, tracking.get("checkpoints"), "msg.checkpoints")
    events: dict[str, CarrierEvent] = {}
    skipped = 0
    for position, entry in enumerate(checkpoints):
        event = _parse_checkpoint(number, entry, f"msg.checkpoints.{position}")
        if event is None or not usable_time(event.occurred_at, now):
            skipped += 1
            continue
        events.setdefault(event.dedupe_key, event)
    ordered = sorted(events.values(), key=lambda item: item.occurred_at)
    return CarrierUpdate(PROVIDER, slug, number, ordered, _estimate(tracking), skipped)


def _parse_checkpoint(number: str, entry: Any, path: str) -> CarrierEvent | None:
    checkpoint = require_object(PROVIDER, entry, path)
    tag = require_text(PROVIDER, checkpoint.get("tag"), f"{path}.tag")
    subtag = optional_text(PROVIDER, checkpoint.get("subtag"), f"{path}.subtag")
    occurred_at = parse_carrier_time(
        PROVIDER, checkpoint.get("checkpoint_time"), f"{path}.checkpoint_time"
    )
    message = optional_text(PROVIDER, checkpoint.get("message"), f"{path}.message")
    mapped = translate(PROVIDER, STATUSES, SUB_STATUSES, tag, subtag)
    if mapped is None:
        return None

    location = _location(checkpoint, path)
    event_hash = checkpoint.get("hash")
    if isinstance(event_hash, str) and event_hash.strip():
        key = id_dedupe_key(PROVIDER, event_hash.strip())
    else:
        parts = (occurred_at.isoformat(), tag, subtag, message, location)
        key = content_dedupe_key(PROVIDER, number.upper(), *parts)

    return CarrierEvent(
        status=mapped,
        occurred_at=occurred_at,
        description=clean_description(message),
        location=location,
        dedupe_key=key,
        raw={
            "tag": tag,
            "subtag": subtag,
            "checkpoint_time": checkpoint["checkpoint_time"],
        },
    )


def _location(checkpoint: dict[str, Any], path: str) -> str | None:
    """Return the checkpoint's `location`, or else its city, state, zip and country."""
    place = optional_text(PROVIDER, checkpoint.get("location"), f"{path}.location")
    if place:
        return join_location(place)
    country = checkpoint.get("country_name") or checkpoint.get("country_iso3")
    return join_location(
        checkpoint.get("city"), checkpoint.get("state"), checkpoint.get("zip"), country
    )


def _estimate(tracking: dict[str, Any]) -> DeliveryEstimate | None:
    """Read the courier's estimate first, then AfterShip's own, then the old field."""
    for name in (
        "courier_estimated_delivery_date",
        "aftership_estimated_delivery_date",
    ):
        block = tracking.get(name)
        if not isinstance(block, dict):
            continue
        lower = parse_estimate(
            PROVIDER, block.get("estimated_delivery_date_min"), f"msg.{name}.min"
        )
        upper = parse_estimate(
            PROVIDER, block.get("estimated_delivery_date_max"), f"msg.{name}.max"
        )
        single = parse_estimate(
            PROVIDER,
            block.get("estimated_delivery_date"),
            f"msg.{name}.estimated_delivery_date",
        )
        window = merge_estimate(lower or single, upper or single)
        if window is not None:
            return window
    return parse_estimate(
        PROVIDER, tracking.get("expected_delivery"), "msg.expected_delivery"
    )


ADAPTER = AfterShipAdapter()
