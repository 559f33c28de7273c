"""Checks and normal forms of shipment and tracking input, shared by every caller.

Each check raises InvalidShipment naming the API field, so an HTTP caller gets a 400
with details and a carrier feed gets the same rule.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from orderdesk.orders.models import Order
from orderdesk.shipping.carriers.names import carrier_code
from orderdesk.shipping.exceptions import InvalidShipment
from orderdesk.shipping.schemas import first_control_character
from orderdesk.shipping.statuses import PackageStatus, parse_status
from orderdesk.timefmt import iso

# How far in the future an event may claim to be, for carriers whose clocks run fast.
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_CARRIER_LENGTH = 60
MAX_URL_LENGTH = 1000
MAX_DESCRIPTION_LENGTH = 1000
MAX_LOCATION_LENGTH = 300
MAX_DEDUPE_KEY_LENGTH = 128
# After spaces are removed and letters upper-cased: 4 to 40 letters, digits and inner
# hyphens. That covers UPS (1Z + 16), USPS (20 to 22 digits), FedEx, DHL and the
# hyphenated numbers of some regional carriers.
TRACKING_NUMBER = re.compile(r"[A-Z0-9][A-Z0-9-]{2,38}[A-Z0-9]", re.ASCII)


@dataclass(frozen=True)
class TimeRange:
    """A delivery estimate, where None is an unknown bound."""

    lower_bound: datetime | None = None
    upper_bound: datetime | None = None


def normalize_tracking_number(value: str) -> str:
    """Return the number upper-cased without spaces, raising InvalidShipment when it
    is not 4 to 40 letters, digits and inner hyphens."""
    field = "carrierTrackingNumber"
    if not isinstance(value, str):
        raise InvalidShipment(field, "must be a string")
    number = value.replace(" ", "").upper()
    if not TRACKING_NUMBER.fullmatch(number):
        raise InvalidShipment(
            field,
            f"{value[:60]!r} must be 4 to 40 letters, digits and hyphens once spaces "
            "are removed, such as 1Z999AA10123456784",
        )
    return number


def normalize_carrier(value: str) -> tuple[str, str]:
    """Return the carrier name trimmed with runs of spaces collapsed, and its carrier
    code ("United Parcel Service" and "ups" are both "ups").

    Raises InvalidShipment for a name that is empty, longer than 60 characters, has
    control characters or has no letter or digit.
    """
    field = "carrierName"
    if not isinstance(value, str):
        raise InvalidShipment(field, "must be a string")
    if first_control_character(value) is not None:
        raise InvalidShipment(field, "must not contain control characters")
    name = " ".join(value.split())
    if not name or len(name) > MAX_CARRIER_LENGTH:
        raise InvalidShipment(
            field, f"must be 1 to {MAX_CARRIER_LENGTH} characters, such as UPS"
        )
    code = carrier_code(name)
    if code is None:
        raise InvalidShipment(
            field, f"{name!r} must contain a letter or digit, such as UPS"
        )
    return name, code


def clean_text(
    value: str | None, field: str, max_length: int, *, multiline: bool
) -> str | None:
    """Trim free text and turn empty text into None. Only a multiline text may
    contain newline and tab, and no text may contain other control characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidShipment(field, "must be a string or null")
    # Checked before trimming, because strip() also removes some control characters.
    character = first_control_character(value, "\n\t" if multiline else "")
    if character is not None:
        allowed = " other than newline and tab" if multiline else ""
        raise InvalidShipment(
            field, f"must not contain control characters{allowed} (found {character!r})"
        )
    value = value.strip()
    if not value:
        return None
    if len(value) > max_length:
        raise InvalidShipment(field, f"must be at most {max_length} characters")
    return value


def check_tracking_url(value: str | None) -> str | None:
    if value is None:
        return None
    field = "trackingUrl"
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        raise InvalidShipment(
            field, f"must be a URL of at most {MAX_URL_LENGTH} characters"
        )
    if any(character.isspace() for character in value) or first_control_character(
        value
    ):
        raise InvalidShipment(field, "must not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidShipment(field, f"{value[:60]!r} must be an http or https URL")
    return value


def check_time_range(time_range: TimeRange | None, field: str) -> TimeRange | None:
    """Return the range in UTC, raising InvalidShipment for a naive or reversed one."""
    if time_range is None:
        return None
    lower, upper = time_range.lower_bound, time_range.upper_bound
    for name, bound in (("lowerBound", lower), ("upperBound", upper)):
        if bound is not None and bound.tzinfo is None:
            raise InvalidShipment(f"{field}.{name}", "must carry a UTC offset")
    if lower is not None and upper is not None and lower > upper:
        raise InvalidShipment(field, "lowerBound must not be after upperBound")
    return TimeRange(
        lower.astimezone(UTC) if lower else None,
        upper.astimezone(UTC) if upper else None,
    )


def check_line_items(order: Order, line_items: list[int]) -> list[int]:
    """Return the indexes sorted, raising InvalidShipment unless they are unique
    integers of the order's line items."""
    count = len(order.line_items)
    if not isinstance(line_items, list) or not line_items:
        raise InvalidShipment(
            "lineItems", "must be a non-empty array of line item indexes"
        )
    for position, index in enumerate(line_items):
        if type(index) is not int or not 0 <= index < count:
            raise InvalidShipment(
                f"lineItems.{position}",
                f"{index!r} is out of range: the order has {count} line item(s), "
                f"indexes 0 to {count - 1}",
            )
    if len(set(line_items)) != len(line_items):
        raise InvalidShipment("lineItems", "must list each line item index once")
    return sorted(line_items)


def check_status(status: str) -> PackageStatus:
    try:
        return parse_status(status)
    except ValueError as exc:
        raise InvalidShipment("status", str(exc)) from exc


def check_occurred_at(occurred_at: datetime, now: datetime) -> datetime:
    """Return the time in UTC cut to whole milliseconds, raising InvalidShipment for a
    naive time or one more than MAX_CLOCK_SKEW after `now`."""
    if not isinstance(occurred_at, datetime) or occurred_at.tzinfo is None:
        raise InvalidShipment("occurredAt", "must be a time with a UTC offset")
    occurred_at = occurred_at.astimezone(UTC)
    # The API shows milliseconds, so two events it shows alike are stored alike.
    occurred_at = occurred_at.replace(
        microsecond=occurred_at.microsecond // 1000 * 1000
    )
    if occurred_at > now + MAX_CLOCK_SKEW:
        raise InvalidShipment(
            "occurredAt",
            f"{iso(occurred_at)} is in the future (now is {iso(now)}), so send the "
            "time the carrier reported for the event",
        )
    return occurred_at


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
