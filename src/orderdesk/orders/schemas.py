"""Request bodies of the orders API, validated strictly."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from orderdesk.payments.addresses import parse_address

EMAIL = re.compile(
    r"[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
LOCALE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS "
    "MO MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI "
    "WY PR GU VI AS MP AA AE AP".split()
)
US_ZIP = re.compile(r"[0-9]{5}(?:-[0-9]{4})?")
MAX_LINE_ITEMS = 20

Text100 = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]
Text200 = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
# 64 characters of local part, the @ and 255 of domain: the RFC 5321 maxima.
EmailText = Annotated[str, StringConstraints(max_length=320)]
# 0x and 40 hex digits.
AddressText = Annotated[str, StringConstraints(max_length=42)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


def _no_control_characters(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


class PhysicalAddressIn(Strict):
    """A postal address. Missing parts make the quote ask for the address again."""

    name: Text100 | None = None
    line1: Text200 | None = None
    line2: Text200 | None = None
    city: Text100 | None = None
    state: Text100 | None = None
    postal_code: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None
    ) = Field(default=None, alias="postalCode")
    country: Text100 | None = None

    @field_validator("name", "line1", "line2", "city", "state", "postal_code")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return _no_control_characters(value) or None

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if not re.fullmatch(r"[A-Z]{2}", value):
            raise ValueError("must be an ISO 3166-1 alpha-2 country code such as US")
        return value

    def missing_parts(self) -> list[str]:
        required = {
            "name": self.name,
            "line1": self.line1,
            "city": self.city,
            "postalCode": self.postal_code,
            "country": self.country,
        }
        if self.country == "US":
            required["state"] = self.state
        return [name for name, value in required.items() if not value]

    def check_us_formats(self) -> None:
        """Reject US states and ZIP codes that cannot be right."""
        if self.country != "US":
            return
        if self.state and self.state.upper() not in US_STATES:
            raise ValueError(f"state {self.state!r} is not a US state code such as NY")
        if self.postal_code and not US_ZIP.fullmatch(self.postal_code):
            raise ValueError(f"postalCode {self.postal_code!r} is not a US ZIP code")

    def to_json(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "line1": self.line1,
            "line2": self.line2,
            "city": self.city,
            "state": self.state.upper()
            if self.state and self.country == "US"
            else self.state,
            "postalCode": self.postal_code,
            "country": self.country,
        }
        return {key: value for key, value in data.items() if value is not None}


def _email(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > 320 or not EMAIL.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a valid email address")
    return value


class RecipientIn(Strict):
    email: EmailText | None = None
    wallet_address: AddressText | None = Field(default=None, alias="walletAddress")
    physical_address: PhysicalAddressIn | None = Field(
        default=None, alias="physicalAddress"
    )

    _check_email = field_validator("email")(classmethod(lambda cls, v: _email(v)))

    @field_validator("wallet_address")
    @classmethod
    def _wallet(cls, value: str | None) -> str | None:
        return None if value is None else parse_address(value)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.email:
            data["email"] = self.email
        if self.wallet_address:
            data["walletAddress"] = self.wallet_address
        if self.physical_address is not None:
            data["physicalAddress"] = self.physical_address.to_json()
        return data


class PaymentIn(Strict):
    method: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    currency: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    payer_address: AddressText | None = Field(default=None, alias="payerAddress")
    receipt_email: EmailText | None = Field(default=None, alias="receiptEmail")

    _check_email = field_validator("receipt_email")(
        classmethod(lambda cls, v: _email(v))
    )

    @field_validator("payer_address")
    @classmethod
    def _payer(cls, value: str | None) -> str | None:
        return None if value is None else parse_address(value)


class LineItemIn(Strict):
    product_locator: Annotated[str, StringConstraints(min_length=1, max_length=600)] = (
        Field(alias="productLocator")
    )
    quantity: int = Field(default=1, ge=1, le=10)


class OrderCreate(Strict):
    recipient: RecipientIn | None = None
    payment: PaymentIn
    line_items: list[LineItemIn] = Field(
        alias="lineItems", min_length=1, max_length=MAX_LINE_ITEMS
    )
    locale: Annotated[str, StringConstraints(max_length=35)] = "en-US"
    state: Literal["create", "draft"] = "create"

    @field_validator("line_items", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        # The public API takes a single line item object as well as an array.
        if isinstance(value, dict):
            return [value]
        if isinstance(value, list) and not 1 <= len(value) <= MAX_LINE_ITEMS:
            raise ValueError(
                f"must hold 1 to {MAX_LINE_ITEMS} line items, not {len(value)}"
            )
        return value

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        if not LOCALE.fullmatch(value):
            raise ValueError("must be a language tag such as en-US")
        return value

    def items(self) -> list[LineItemIn]:
        return self.line_items


class OrderUpdate(Strict):
    """PATCH body: only these fields may change, and only before payment."""

    recipient: RecipientIn | None = None
    payment: PaymentIn | None = None
    locale: Annotated[str, StringConstraints(max_length=35)] | None = None

    _check_locale = field_validator("locale")(
        classmethod(lambda cls, v: v if v is None else OrderCreate._locale(v))
    )


class PaymentSubmission(Strict):
    type: Literal["crypto-tx-id"]
    tx_id: Annotated[
        str, StringConstraints(max_length=66, pattern=r"^0x[0-9a-fA-F]{64}$")
    ] = Field(alias="txId")
