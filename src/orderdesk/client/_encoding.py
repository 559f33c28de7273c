"""Turn request arguments into JSON values: models by alias, times as RFC 3339."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel


def format_time(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC; raise ValueError for a naive one,
    which the API rejects because it names no instant."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"datetime {value.isoformat()} has no UTC offset; pass an aware datetime "
            "such as datetime.now(UTC)"
        )
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_json(value: Any) -> Any:
    """Return `value` as JSON-ready data. Pydantic models become their wire shape
    with only the fields that were set, Decimals become strings and datetimes
    RFC 3339 strings. Raise TypeError for anything JSON cannot express."""
    if isinstance(value, BaseModel):
        return to_json(value.model_dump(by_alias=True, exclude_unset=True))
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(
        f"cannot send a {type(value).__name__} as JSON; pass a mapping, list, str, "
        "int, Decimal, datetime or pydantic model"
    )
