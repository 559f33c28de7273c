"""Shared parts of the carrier feed adapters: the parsed update, status tables,
parsing helpers and signature checks.

An adapter turns one provider's webhook body into `CarrierUpdate`s written in our
vocabulary (`PackageStatus`). Each provider's status words sit in tables in its own
module; `map_status` reads them, trying the (status, sub-status) pair first and the
status alone second. A status that maps to None carries no news about the parcel
(such as "unknown") and its events are skipped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

import structlog

from orderdesk.errors import InvalidInput, Unauthorized
from orderdesk.shipping.services import (
    MAX_CLOCK_SKEW,
    MAX_DEDUPE_KEY_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_LOCATION_LENGTH,
)
from orderdesk.shipping.statuses import PackageStatus

log = structlog.get_logger(__name__)

StatusTable = Mapping[str, PackageStatus | None]
SubStatusTable = Mapping[tuple[str, str], PackageStatus]


class CarrierPayloadInvalid(InvalidInput):
    """A webhook body that is not JSON or not shaped as the provider documents."""

    code = "invalid_carrier_payload"

    def __init__(self, provider: str, field_name: str, problem: str) -> None:
        super().__init__(
            f"The {provider} webhook body is invalid at {field_name}: {problem}. "
            f"Send the payload as {provider} documents it.",
            details=[{"field": field_name, "message": problem}],
        )


class SignatureInvalid(Unauthorized):
    code = "invalid_signature"

    def __init__(self, provider: str, problem: str) -> None:
        super().__init__(
            f"The {provider} webhook {problem}. Check that the secret configured for "
            f"{provider} matches the one set on the {provider} webhook."
        )


@dataclass(frozen=True)
class CarrierEvent:
    """One scan or status change from a carrier feed, in our status vocabulary."""

    status: PackageStatus
    occurred_at: datetime
    description: str | None
    location: str | None
    # Stable across resends of the same event, so it is stored once.
    dedupe_key: str
    # The provider's own words, stored with the event for audits.
    raw: dict[str, Any]


@dataclass(frozen=True)
class DeliveryEstimate:
    """A carrier's delivery window; None is an unknown bound."""

    lower_bound: datetime | None
    upper_bound: datetime | None


@dataclass(frozen=True)
class CarrierUpdate:
    """The events and estimate one webhook reports for one parcel."""

    provider: str
    carrier: str | None
    tracking_number: str
    # Oldest first by the time they happened.
    events: list[CarrierEvent]
    estimate: DeliveryEstimate | None = None
    # Entries dropped because their status carries no news or their time is unusable.
    skipped: int = 0


@dataclass(frozen=True)
class SignedRequest:
    """The parts of a webhook request that a signature covers or carries."""

    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, str]
    now: datetime


class CarrierAdapter(Protocol):
    name: str

    def verify(self, request: SignedRequest, secrets: Mapping[str, str | None]) -> bool:
        """Raise SignatureInvalid unless the request is authentic. Return False when
        no secret is configured, so nothing was checked."""
        ...

    def parse(self, document: Any, now: datetime) -> list[CarrierUpdate]:
        """Read a decoded JSON body; raise CarrierPayloadInvalid for a wrong shape.
        Events dated after `now` plus the allowed clock skew are skipped."""
        ...


def map_status(
    statuses: StatusTable,
    sub_statuses: SubStatusTable,
    status: str,
    sub_status: str | None,
) -> PackageStatus | None:
    """Translate a provider status and sub-status. Raises KeyError for a status the
    table does not list, so a new provider word is noticed instead of guessed."""
    if sub_status:
        specific = sub_statuses.get((status, sub_status))
        if specific is not None:
            return specific
    return statuses[status]


def translate(
    provider: str,
    statuses: StatusTable,
    sub_statuses: SubStatusTable,
    status: str,
    sub_status: str | None,
) -> PackageStatus | None:
    """Like `map_status`, but log a status missing from the table and return None,
    so one unfamiliar word skips its event instead of failing the webhook."""
    try:
        return map_status(statuses, sub_statuses, status, sub_status)
    except KeyError:
        log.warning(
            "carrier_status_unmapped",
            provider=provider,
            status=status,
            sub_status=sub_status,
        )
        return None


# Input: JSON helpers that raise CarrierPayloadInvalid with the field path.


def require_object(provider: str, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CarrierPayloadInvalid(
            provider, path, f"expected an object, got {_kind(value)}"
        )
    return value


def require_list(provider: str, value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CarrierPayloadInvalid(
            provider, path, f"expected an array, got {_kind(value)}"
        )
    return value


def require_text(provider: str, value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CarrierPayloadInvalid(
            provider, path, f"expected a non-empty string, got {_kind(value)}"
        )
    return value.strip()


def optional_text(provider: str, value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CarrierPayloadInvalid(
            provider, path, f"expected a string, got {_kind(value)}"
        )
    return value.strip() or None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_carrier_time(provider: str, value: Any, path: str) -> datetime:
    """Parse an ISO 8601 time as carriers send it, returned in UTC.

    A date alone means midnight UTC. A time without an offset is read as UTC: feeds
    send local scan times without one when they lack the scan's time zone, and
    EasyPost documents UTC as its default in that case.
    """
    text = require_text(provider, value, path)
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CarrierPayloadInvalid(
            provider, path, f"{text[:40]!r} is not an ISO 8601 time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_estimate(provider: str, value: Any, path: str) -> DeliveryEstimate | None:
    """Read an estimated delivery: a date is the whole UTC day, a time an instant."""
    if value is None or value == "":
        return None
    moment = parse_carrier_time(provider, value, path)
    if isinstance(value, str) and len(value.strip()) == 10:
        return DeliveryEstimate(moment, moment + timedelta(days=1, milliseconds=-1))
    return DeliveryEstimate(moment, moment)


def merge_estimate(
    lower: DeliveryEstimate | None, upper: DeliveryEstimate | None
) -> DeliveryEstimate | None:
    """Join an earliest and a latest estimate into one window, ordered."""
    if lower is None and upper is None:
        return None
    start = lower.lower_bound if lower else None
    end = upper.upper_bound if upper else None
    if start is not None and end is not None and start > end:
        start, end = end, start
    return DeliveryEstimate(start, end)


def clean_text(value: str | None, max_length: int, *, multiline: bool) -> str | None:
    """Drop control characters (keeping newline and tab in multiline text), collapse
    what is left and cut it to `max_length`, so a carrier's odd text never makes the
    whole webhook fail."""
    if not value:
        return None
    kept = []
    for character in value:
        if multiline and character in "\n\t":
            kept.append(character)
        elif unicodedata.category(character) in ("Cc", "Cs"):
            kept.append(" ")
        else:
            kept.append(character)
    text = "".join(kept).strip()
    if not multiline:
        text = " ".join(text.split())
    return text[:max_length] or None


def clean_description(value: str | None) -> str | None:
    return clean_text(value, MAX_DESCRIPTION_LENGTH, multiline=True)


def join_location(*parts: Any) -> str | None:
    """Join the non-empty parts of a location: "Oakland, CA, 94607, US"."""
    words = [
        str(part).strip() for part in parts if isinstance(part, str) and part.strip()
    ]
    return clean_text(", ".join(words), MAX_LOCATION_LENGTH, multiline=False)


def content_dedupe_key(provider: str, *parts: Any) -> str:
    """Build the dedupe key of an event without a provider id by hashing what makes
    two copies of it the same."""
    canonical = json.dumps([provider, *parts], default=str, separators=(",", ":"))
    return f"{provider}:sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"


def id_dedupe_key(provider: str, event_id: str) -> str:
    """Build the dedupe key from the provider's event id, hashed when too long."""
    key = f"{provider}:id:{event_id}"
    if len(key) <= MAX_DEDUPE_KEY_LENGTH:
        return key
    return f"{provider}:id-sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"


def usable_time(occurred_at: datetime, now: datetime) -> bool:
    """Return whether the shipment service accepts an event of this time: one
    further ahead of `now` than the allowed clock skew is rejected there."""
    return occurred_at <= now + MAX_CLOCK_SKEW


# Signatures.


def hmac_sha256(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def hex_signature(secret: bytes, message: bytes) -> str:
    return hmac_sha256(secret, message).hex()


def base64_signature(secret: bytes, message: bytes) -> str:
    return base64.b64encode(hmac_sha256(secret, message)).decode("ascii")


def same_text(given: str, expected: str) -> bool:
    """Compare a presented signature or token with the expected one in constant time."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
