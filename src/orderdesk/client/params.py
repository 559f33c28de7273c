"""Request shapes, as typed dicts with the API's camelCase keys.

Methods also take any mapping or pydantic model of the same shape (a model is sent
with its aliases, so a `Recipient` read from an order can be sent back). Datetimes
must carry a UTC offset; the SDK sends them as RFC 3339.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NotRequired, TypedDict

from pydantic import BaseModel


class PhysicalAddressParam(TypedDict, total=False):
    name: str
    line1: str
    line2: str
    city: str
    # Required for country US.
    state: str
    postalCode: str
    # ISO 3166-1 alpha-2, such as US.
    country: str


class RecipientParam(TypedDict, total=False):
    """An email or a wallet address, plus the postal address for physical goods."""

    email: str
    walletAddress: str
    physicalAddress: PhysicalAddressParam


class PaymentParam(TypedDict):
    """`method` names a chain the server has configured, `currency` a token on it."""

    method: str
    currency: str
    payerAddress: NotRequired[str]
    receiptEmail: NotRequired[str]


class LineItemParam(TypedDict):
    """`productLocator`: `amazon:<ASIN>`, `amazon:<product URL>` or
    `shopify:<product URL>:<variantId>`. `quantity` is 1 to 10, default 1."""

    productLocator: str
    quantity: NotRequired[int]


class TimeRangeParam(TypedDict, total=False):
    lowerBound: datetime | str | None
    upperBound: datetime | str | None


# Argument types of the methods: the typed dict, any mapping of that shape, or a
# pydantic model.
RecipientInput = RecipientParam | Mapping[str, Any] | BaseModel
PaymentInput = PaymentParam | Mapping[str, Any] | BaseModel
LineItemInput = LineItemParam | Mapping[str, Any] | BaseModel
TimeRangeInput = TimeRangeParam | Mapping[str, Any] | BaseModel
