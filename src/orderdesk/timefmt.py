"""RFC 3339 times on the wire: UTC with milliseconds and `Z` out, an offset required in.

Output is always `2026-03-01T17:05:09.120Z`. Input accepts any offset (`Z`, `z`,
`+02:00`, `-00:00`) and converts it to UTC. A time without an offset is rejected,
because it names no instant.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, overload

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

EXAMPLE = "2026-03-01T17:05:09.120Z"

# RFC 3339 section 5.6 `date-time`, with the space separator its note allows.
_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"[Tt ](?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})?",
    re.ASCII,
)


@overload
def iso(value: datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
def iso(value: datetime | None) -> str | None:
    """Format an aware datetime as RFC 3339 UTC with milliseconds, and None as None."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} has no offset. Attach UTC first")
    # In UTC, isoformat() ends with "+00:00", and it writes the year with four
    # digits (with glibc, strftime's %Y writes a year before 1000 with fewer).
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 time and return it in UTC.

    Raises ValueError naming the problem: not the format, an impossible date, or
    no offset. Digits of the fraction past microseconds are dropped, not rounded.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as {EXAMPLE}")
    offset = match["offset"]
    if offset is None:
        raise ValueError(
            f"{text!r} has no UTC offset. Add Z or an offset such as +02:00"
        )
    fraction = (match["fraction"] or "0").ljust(6, "0")[:6]
    try:
        value = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(fraction),
            tzinfo=_offset(offset),
        )
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from exc


def _offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(f"offset {text} is out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def _validate(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "rfc3339_type",
            "Must be a string with an RFC 3339 time and offset, such as {example}.",
            {"example": EXAMPLE},
        )
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "rfc3339_invalid", "{reason}.", {"reason": str(exc)}
        ) from exc


# The longest text _RFC3339 matches: 19 characters of date and time, a point and 9
# digits of fraction, and a 6-character offset.
MAX_RFC3339_LENGTH = 35

# A pydantic field type: an RFC 3339 string in, an aware UTC datetime inside, and the
# millisecond `Z` form out.
Rfc3339Datetime = Annotated[
    datetime,
    PlainValidator(_validate),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "maxLength": MAX_RFC3339_LENGTH},
        mode="validation",
    ),
    PlainSerializer(iso, return_type=str),
]
