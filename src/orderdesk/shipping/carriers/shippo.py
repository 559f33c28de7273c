"""Shippo track_updated webhooks.

Shippo posts `{"event": "track_updated", "test": ..., "data": <Track>}` where the
Track has `tracking_number`, `carrier` (a token such as "usps"), `eta`,
`tracking_status` (the latest status) and `tracking_history[]`, each status being
`{object_id, status, substatus {code, text}, status_details, status_date,
location {city, state, zip, country}}`. A body that is the Track itself is read the
same way. Other event types are acknowledged and ignored.

Authentication, as Shippo documents it, is any of an IP allowlist, a self-generated
token in the webhook URL (`?token=...`) and HMAC. Two settings cover the last two,
and when both are set both must pass:

- `carrier_shippo_secret`: the HMAC secret. Shippo sends `Shippo-Auth-Signature:
  t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." followed by the raw body>`. A
  timestamp more than five minutes from our clock is rejected, so a captured request
  cannot be replayed later.
- `carrier_shippo_token`: the token the webhook URL carries in its `token` query
  parameter.

Each status has a Shippo `object_id`, which is its dedupe key.
"""

from __future__ import annotations

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
    id_dedupe_key,
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

PROVIDER = "shippo"
SIGNATURE_HEADER = "shippo-auth-signature"
TOKEN_PARAMETER = "token"  # noqa: S105 - a query parameter name
SIGNATURE_TOLERANCE_SECONDS = 300
TRACK_EVENT = "track_updated"

STATUSES: StatusTable = {
    "PRE_TRANSIT": S.PENDING,
    "TRANSIT": S.SHIPPED,
    "DELIVERED": S.DELIVERED,
    "RETURNED": S.RETURNED_TO_SENDER,
    "FAILURE": S.EXCEPTION,
    "UNKNOWN": None,
}

# (status, substatus.code) pairs more specific than the status alone. Shippo groups
# each substatus under one status, and an unlisted one keeps its status's meaning.
SUB_STATUSES: SubStatusTable = {
    ("TRANSIT", "out_for_delivery"): S.OUT_FOR_DELIVERY,
    ("TRANSIT", "delivery_attempted"): S.DELIVERY_ATTEMPTED,
    ("TRANSIT", "notice_left"): S.DELIVERY_ATTEMPTED,
    ("TRANSIT", "location_inaccessible"): S.DELIVERY_ATTEMPTED,
    ("TRANSIT", "reschedule_delivery"): S.DELIVERY_ATTEMPTED,
    ("TRANSIT", "pickup_available"): S.AVAILABLE_FOR_PICKUP,
    ("TRANSIT", "address_issue"): S.EXCEPTION,
    ("TRANSIT", "contact_carrier"): S.EXCEPTION,
    ("TRANSIT", "delayed"): S.EXCEPTION,
    ("TRANSIT", "package_damaged"): S.EXCEPTION,
    ("TRANSIT", "package_held"): S.EXCEPTION,
}


class ShippoAdapter:
    name = PROVIDER

    def verify(self, request: SignedRequest, secrets: Mapping[str, str | None]) -> bool:
        secret = secrets.get("carrier_shippo_secret")
        token = secrets.get("carrier_shippo_token")
        if secret:
            _verify_signature(request, secret)
        if token:
            given = request.query.get(TOKEN_PARAMETER)
            if not given:
                raise SignatureInvalid(PROVIDER, "URL has no token query parameter")
            if not same_text(given, token):
                raise SignatureInvalid(PROVIDER, "URL token does not match")
        return bool(secret or token)

    def parse(self, document: Any, now: datetime) -> list[CarrierUpdate]:
        body = require_object(PROVIDER, document, "body")
        event = body.get("event")
        if event is not None and event != TRACK_EVENT:
            return []
        if "data" in body:
            track = require_object(PROVIDER, body["data"], "data")
            return [parse_track(track, "data", now)]
        return [parse_track(body, "body", now)]


def _verify_signature(request: SignedRequest, secret: str) -> None:
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        raise SignatureInvalid(PROVIDER, "request has no Shippo-Auth-Signature header")
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, value)
    timestamp, signature = fields.get("t", ""), fields.get("v1", "")
    if not timestamp.isdigit() or not signature:
        raise SignatureInvalid(PROVIDER, "Shippo-Auth-Signature is not t=...,v1=...")
    seconds = int(timestamp)
    if seconds > 10**11:
        # Read a millisecond timestamp as seconds rather than rejecting it.
        seconds //= 1000
    if abs(request.now.timestamp() - seconds) > SIGNATURE_TOLERANCE_SECONDS:
        raise SignatureInvalid(
            PROVIDER,
            f"signature timestamp {timestamp} is more than "
            f"{SIGNATURE_TOLERANCE_SECONDS} seconds from the server clock",
        )
    expected = hex_signature(
        secret.encode("utf-8"), timestamp.encode() + b"." + request.body
    )
    if not same_text(signature.lower(), expected):
        raise SignatureInvalid(
            PROVIDER, "Shippo-Auth-Signature does not match the body"
        )


def parse_track(track: dict[str, Any], path: str, now: datetime) -> CarrierUpdate:
    number = require_text(
        PROVIDER, track.get("tracking_number"), f"{path}.tracking_number"
    )
    carrier = optional_text(PROVIDER, track.get("carrier"), f"{path}.carrier")
    estimate = parse_estimate(PROVIDER, track.get("eta"), f"{path}.eta")
    entries: list[tuple[str, Any]] = [
        (f"{path}.tracking_history.{position}", entry)
        for position, entry in enumerate(
            require_list(
                PROVIDER, track.get("tracking_history"), f"{path}.tracking_history"
            )
        )
    ]
    if track.get("tracking_status") is not None:
        # The latest status is usually also the last history entry; the dedupe
        # key stores it once either way.
        entries.append((f"{path}.tracking_status", track["tracking_status"]))

    events: dict[str, CarrierEvent] = {}
    skipped = 0
    for entry_path, entry in entries:
        event = _parse_status(number, entry, entry_path)
        if event is None or not usable_time(event.occurred_at, now):
            skipped += 1
            continue
        events.setdefault(event.dedupe_key, event)
    ordered = sorted(events.values(), key=lambda item: item.occurred_at)
    return CarrierUpdate(PROVIDER, carrier, number, ordered, estimate, skipped)


def _parse_status(number: str, entry: Any, path: str) -> CarrierEvent | None:
    item = require_object(PROVIDER, entry, path)
    status = require_text(PROVIDER, item.get("status"), f"{path}.status").upper()
    code = None
    substatus = item.get("substatus")
    if isinstance(substatus, dict):
        code = optional_text(PROVIDER, substatus.get("code"), f"{path}.substatus.code")
    code = code.lower() if code else None
    occurred_at = parse_carrier_time(
        PROVIDER, item.get("status_date"), f"{path}.status_date"
    )
    details = optional_text(
        PROVIDER, item.get("status_details"), f"{path}.status_details"
    )
    mapped = translate(PROVIDER, STATUSES, SUB_STATUSES, status, code)
    if mapped is None:
        return None

    object_id = item.get("object_id")
    if isinstance(object_id, str) and object_id.strip():
        key = id_dedupe_key(PROVIDER, object_id.strip())
    else:
        parts = (occurred_at.isoformat(), status, code, details)
        key = content_dedupe_key(PROVIDER, number.upper(), *parts)

    return CarrierEvent(
        status=mapped,
        occurred_at=occurred_at,
        description=clean_description(details),
        location=_location(item.get("location")),
        dedupe_key=key,
        raw={"status": status, "substatus": code, "status_date": item["status_date"]},
    )


def _location(location: Any) -> str | None:
    if not isinstance(location, dict):
        return None
    return join_location(
        location.get("city"),
        location.get("state"),
        location.get("zip"),
        location.get("country"),
    )


ADAPTER = ShippoAdapter()
