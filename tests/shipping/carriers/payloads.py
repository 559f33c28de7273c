"""Webhook bodies shaped as each provider documents them, and their signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import unicodedata
from typing import Any

WEBHOOKS = "/webhooks/carriers"
EASYPOST_SECRET = "ep-wébhook-secret"
SHIPPO_SECRET = "shippo-hmac-secret"
SHIPPO_TOKEN = "shippo-url-token-123"
AFTERSHIP_SECRET = "aftership-secret"


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


# EasyPost: an Event whose result is a Tracker with the whole history.


def easypost_detail(
    status: str,
    when: str,
    message: str,
    detail: str | None = None,
    city: str | None = "OAKLAND",
    state: str | None = "CA",
) -> dict[str, Any]:
    return {
        "object": "TrackingDetail",
        "message": message,
        "description": message,
        "status": status,
        "status_detail": detail or status,
        "datetime": when,
        "source": "UPS",
        "tracking_location": {
            "object": "TrackingLocation",
            "city": city,
            "state": state,
            "country": "US" if city else None,
            "zip": None,
        },
    }


def easypost_event(
    number: str,
    details: list[dict[str, Any]],
    *,
    carrier: str = "UPS",
    est_delivery_date: str | None = None,
    description: str = "tracker.updated",
) -> dict[str, Any]:
    last = details[-1] if details else {"status": "unknown", "status_detail": "unknown"}
    return {
        "object": "Event",
        "id": "evt_3f1a2b",
        "mode": "test",
        "description": description,
        "result": {
            "object": "Tracker",
            "id": "trk_c0ffee",
            "tracking_code": number,
            "carrier": carrier,
            "status": last.get("status"),
            "status_detail": last.get("status_detail"),
            "est_delivery_date": est_delivery_date,
            "tracking_details": details,
        },
    }


def easypost_headers(body: bytes, secret: str = EASYPOST_SECRET) -> dict[str, str]:
    key = unicodedata.normalize("NFKD", secret).encode()
    digest = hmac.new(key, body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Hmac-Signature": f"hmac-sha256-hex={digest}",
    }


# Shippo: track_updated with the latest status and the history.


def shippo_status(
    status: str,
    when: str,
    details: str,
    substatus: str | None = None,
    object_id: str | None = None,
    city: str = "San Francisco",
) -> dict[str, Any]:
    return {
        "object_id": object_id,
        "status": status,
        "substatus": (
            {"code": substatus, "text": details, "action_required": False}
            if substatus
            else None
        ),
        "status_details": details,
        "status_date": when,
        "location": {"city": city, "state": "CA", "zip": "94103", "country": "US"},
    }


def shippo_event(
    number: str,
    history: list[dict[str, Any]],
    *,
    carrier: str = "usps",
    eta: str | None = None,
) -> dict[str, Any]:
    return {
        "event": "track_updated",
        "test": False,
        "data": {
            "carrier": carrier,
            "tracking_number": number,
            "eta": eta,
            "original_eta": eta,
            "tracking_status": history[-1] if history else None,
            "tracking_history": history,
            "transaction": None,
            "metadata": None,
        },
    }


def shippo_headers(
    body: bytes, secret: str = SHIPPO_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    message = stamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "Shippo-Auth-Signature": f"t={stamp},v1={digest}",
    }


# AfterShip: tracking_update with the tracking and its checkpoints.


def aftership_checkpoint(
    tag: str,
    when: str,
    message: str,
    subtag: str | None = None,
    location: str | None = "Brooklyn, NY, USA",
) -> dict[str, Any]:
    return {
        "slug": "ups",
        "created_at": when,
        "checkpoint_time": when,
        "tag": tag,
        "subtag": subtag or f"{tag}_001",
        "subtag_message": message,
        "message": message,
        "location": location,
        "city": None,
        "state": None,
        "zip": None,
        "country_name": None,
    }


def aftership_event(
    number: str,
    checkpoints: list[dict[str, Any]],
    *,
    slug: str = "ups",
    expected_delivery: str | None = None,
    event: str = "tracking_update",
) -> dict[str, Any]:
    last = (
        checkpoints[-1] if checkpoints else {"tag": "Pending", "subtag": "Pending_001"}
    )
    return {
        "event": event,
        "event_id": "5a1cf6f4-1f7d-4c8c-8f5b-2f8c2d0b7a11",
        "is_tracking_first_tag": False,
        "ts": int(time.time()),
        "msg": {
            "id": "kmfd9nx0ja4p1",
            "tracking_number": number,
            "slug": slug,
            "tag": last.get("tag"),
            "subtag": last.get("subtag"),
            "expected_delivery": expected_delivery,
            "checkpoints": checkpoints,
        },
    }


def aftership_headers(body: bytes, secret: str = AFTERSHIP_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "aftership-hmac-sha256": base64.b64encode(digest).decode(),
    }
