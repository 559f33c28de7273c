"""Wire shapes of shipments and tracking: strict request bodies and the package body.

The request models check JSON types and cap each string's length as sent. Trimmed
lengths, characters and ranges that depend on the order are checked by the services,
so callers without HTTP get the same rules.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orderdesk.shipping.models import Package, TrackingEvent
from orderdesk.shipping.statuses import PackageStatus
from orderdesk.timefmt import Rfc3339Datetime, iso


def json_repr(value: Any, limit: int = 40) -> str:
    """Render a JSON value as the client sent it (true, 1.5, "1"), shortened."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_control_character(text: str, allowed: str = "") -> str | None:
    """Return the first control character (Unicode category Cc) or lone surrogate
    in `text` that is not in `allowed`, or None when there is none."""
    for character in text:
        if character in allowed:
            continue
        if unicodedata.category(character) in ("Cc", "Cs"):
            return character
    return None


def _line_item_index(value: Any) -> int:
    # `type(...) is int` because bool is a subclass of int, and JSON true is no index.
    if type(value) is not int:
        raise PydanticCustomError(
            "line_item_index_type",
            "Must be an integer line item index such as 0, not {value}.",
            {"value": json_repr(value)},
        )
    if value < 0:
        raise PydanticCustomError(
            "line_item_index_negative",
            "Must be 0 or more because line items are counted from 0, not {value}.",
            {"value": value},
        )
    return value


def _strict_text(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "string_type", "Must be a string, not {value}.", {"value": json_repr(value)}
        )
    return value


# A JSON integer of 0 or more, so true, 1.0, 1.5 and "1" are rejected. The upper bound
# depends on the order, so the services check it.
LineItemIndex = Annotated[
    int, PlainValidator(_line_item_index, json_schema_input_type=int)
]
Text = Annotated[str, PlainValidator(_strict_text, json_schema_input_type=str)]


def _max_length(max_length: int) -> PlainValidator:
    """Validate a JSON string of at most `max_length` characters as sent."""

    def validate(value: Any) -> str:
        text = _strict_text(value)
        if len(text) > max_length:
            raise PydanticCustomError(
                "string_too_long",
                "Must be at most {max_length} characters, not {length}.",
                {"max_length": max_length, "length": len(text)},
            )
        return text

    return PlainValidator(validate)


def _max_length_schema(max_length: int) -> WithJsonSchema:
    return WithJsonSchema(
        {"type": "string", "maxLength": max_length}, mode="validation"
    )


# The services' limits, except the tracking number, which has 4 to 40 characters
# once spaces are removed and so may be sent with spaces between its groups.
CarrierName = Annotated[str, _max_length(60), _max_length_schema(60)]
TrackingNumber = Annotated[str, _max_length(64), _max_length_schema(64)]
TrackingUrl = Annotated[str, _max_length(1000), _max_length_schema(1000)]
Description = Annotated[str, _max_length(1000), _max_length_schema(1000)]
Location = Annotated[str, _max_length(300), _max_length_schema(300)]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class TimeRangeIn(StrictBody):
    """The carrier's delivery estimate, where a null or missing bound is unknown."""

    lower_bound: Rfc3339Datetime | None = Field(default=None, alias="lowerBound")
    upper_bound: Rfc3339Datetime | None = Field(default=None, alias="upperBound")

    @model_validator(mode="after")
    def _ordered(self) -> TimeRangeIn:
        if (
            self.lower_bound
            and self.upper_bound
            and self.lower_bound > self.upper_bound
        ):
            raise PydanticCustomError(
                "time_range_order",
                "lowerBound {lower} is after upperBound {upper}. Swap them.",
                {"lower": iso(self.lower_bound), "upper": iso(self.upper_bound)},
            )
        return self


class ShipmentIn(StrictBody):
    carrier_name: CarrierName = Field(alias="carrierName")
    carrier_tracking_number: TrackingNumber = Field(alias="carrierTrackingNumber")
    line_items: list[LineItemIndex] = Field(
        alias="lineItems", min_length=1, max_length=100
    )
    tracking_url: TrackingUrl | None = Field(default=None, alias="trackingUrl")
    delivery_time_range: TimeRangeIn | None = Field(
        default=None, alias="deliveryTimeRange"
    )

    @field_validator("line_items")
    @classmethod
    def _unique_line_items(cls, line_items: list[int]) -> list[int]:
        repeated = sorted({i for i in line_items if line_items.count(i) > 1})
        if repeated:
            raise PydanticCustomError(
                "line_items_repeated",
                "Lists index {repeated} more than once. List each index once.",
                {"repeated": ", ".join(map(str, repeated))},
            )
        return line_items


def _status(value: Any) -> PackageStatus:
    allowed = ", ".join(status.value for status in PackageStatus)
    if isinstance(value, str) and value in PackageStatus._value2member_map_:
        return PackageStatus(value)
    raise PydanticCustomError(
        "package_status",
        "{value} is not a package status. Use one of {allowed}.",
        {"value": json_repr(value), "allowed": allowed},
    )


class TrackingEventIn(StrictBody):
    status: Annotated[
        PackageStatus,
        PlainValidator(_status),
        WithJsonSchema(
            {"type": "string", "enum": [status.value for status in PackageStatus]},
            mode="validation",
        ),
    ]
    occurred_at: Rfc3339Datetime = Field(alias="occurredAt")
    description: Description | None = None
    location: Location | None = None
    delivery_time_range: TimeRangeIn | None = Field(
        default=None, alias="deliveryTimeRange"
    )


def event_body(event: TrackingEvent) -> dict[str, Any]:
    return {
        "status": event.status,
        "occurredAt": iso(event.occurred_at),
        "description": event.description,
        "location": event.location,
    }


def delivery_time_range_body(package: Package) -> dict[str, str | None]:
    """Shape the estimate as the API shows it. Both bounds are the delivery time once
    the package is delivered, and null once it went back to the sender."""
    if package.status == PackageStatus.DELIVERED:
        delivered = iso(package.status_at)
        return {"lowerBound": delivered, "upperBound": delivered}
    if package.status == PackageStatus.RETURNED_TO_SENDER:
        return {"lowerBound": None, "upperBound": None}
    return {
        "lowerBound": iso(package.lower_bound),
        "upperBound": iso(package.upper_bound),
    }


def package_body(package: Package) -> dict[str, Any]:
    """Shape a package as one entry of the tracking array, which is also the reply
    when a package or event is recorded. Events are oldest first by occurredAt."""
    events = sorted(package.events, key=lambda event: (event.occurred_at, event.id))
    return {
        "packageId": package.id,
        "kind": package.kind,
        "status": package.status,
        "packageTracking": {
            "carrierName": package.carrier_name,
            "carrierTrackingNumber": package.tracking_number,
        },
        "deliveryTimeRange": delivery_time_range_body(package),
        "lineItems": list(package.line_items),
        "trackingUrl": package.tracking_url,
        "refundId": package.refund_id,
        "createdAt": iso(package.created_at),
        "updatedAt": iso(package.updated_at),
        "events": [event_body(event) for event in events],
    }
