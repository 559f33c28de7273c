"""Verify webhook deliveries in a receiver.

orderdesk signs each delivery the way Svix does. The `svix-signature` header contains
one or more space-separated `v1,<signature>` entries, where a signature is the
base64 of HMAC-SHA256 over `"{svix-id}.{svix-timestamp}.{body}"`, keyed with the
base64-decoded part of the `whsec_` secret. Usage, in a web framework's handler::

    from orderdesk.client.webhooks import WebhookVerificationError, verify

    try:
        event = verify(request_body_bytes, request_headers, "whsec_...")
    except WebhookVerificationError:
        return 400
    if event["type"] == "orders.payment.succeeded":
        ...

Pass the body exactly as received: parsing and re-encoding it changes the bytes and
breaks the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
DEFAULT_TOLERANCE_SECONDS = 300
# The Standard Webhooks names, which svix also accepts, after the svix- ones.
_HEADER_NAMES = {
    "id": ("svix-id", "webhook-id"),
    "timestamp": ("svix-timestamp", "webhook-timestamp"),
    "signature": ("svix-signature", "webhook-signature"),
}


class WebhookVerificationError(Exception):
    """The delivery is not proven to come from orderdesk: reject it."""


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> dict[str, Any]:
    """Check a delivery's signature and timestamp and return its parsed JSON body.

    Raises WebhookVerificationError when a header is missing, no signature matches
    `secret`, the timestamp is more than `tolerance_seconds` from now (either way,
    which limits replays), or the body is not a JSON object. Raises ValueError when
    `secret` itself is malformed, which is a configuration error.
    """
    key = secret_key(secret)
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    found = _lowercase(headers)
    message_id = _header(found, "id")
    timestamp = _header(found, "timestamp")
    signatures = _header(found, "signature")

    _check_timestamp(timestamp, tolerance_seconds)
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    if not _any_matches(signatures, expected):
        raise WebhookVerificationError(
            "No signature in svix-signature matches the secret: the body was "
            "changed, or the secret is not this endpoint's."
        )
    return _parse(body)


def secret_key(secret: str) -> bytes:
    """Return the HMAC key of a secret, with or without its `whsec_` prefix."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(
            "The webhook secret is invalid: after whsec_ it must be base64, as "
            "shown when the endpoint was created."
        ) from exc
    if not key:
        raise ValueError("The webhook secret is invalid: it has no key after whsec_.")
    return key


def _lowercase(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(name).lower(): value for name, value in headers.items()}


def _header(headers: dict[str, str], part: str) -> str:
    for name in _HEADER_NAMES[part]:
        value = headers.get(name)
        if value:
            return value
    raise WebhookVerificationError(
        f"The {_HEADER_NAMES[part][0]} header is missing, so the delivery cannot "
        "be verified."
    )


def _check_timestamp(timestamp: str, tolerance_seconds: float) -> None:
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise WebhookVerificationError(
            f"svix-timestamp {timestamp[:40]!r} is not a Unix time in whole seconds."
        )
    age = time.time() - int(timestamp)
    if age > tolerance_seconds:
        raise WebhookVerificationError(
            f"svix-timestamp is {int(age)} s old, over the tolerance of "
            f"{tolerance_seconds} s: the delivery may be a replay."
        )
    if age < -tolerance_seconds:
        raise WebhookVerificationError(
            f"svix-timestamp is {int(-age)} s in the future, over the tolerance of "
            f"{tolerance_seconds} s: check the clocks of sender and receiver."
        )


def _any_matches(header: str, expected: bytes) -> bool:
    """Compare every `v1` entry in constant time, so the time taken does not show
    how much of a forged signature was right."""
    matched = False
    for entry in header.split():
        version, _, signature = entry.partition(",")
        if version != "v1":
            continue
        candidate = signature.encode("utf-8", "replace")
        matched |= hmac.compare_digest(candidate, expected)
    return matched


def _parse(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError(
            "The signed body is invalid JSON, so it is not an orderdesk delivery."
        ) from exc
    if not isinstance(data, dict):
        raise WebhookVerificationError(
            "The signed body is not a JSON object, so it is not an orderdesk delivery."
        )
    return data
