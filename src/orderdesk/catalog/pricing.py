"""Line prices: catalog unit price, per-state sales tax and shipping."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


@dataclass(frozen=True)
class LineCharges:
    unit: Decimal
    sales_tax: Decimal
    shipping: Decimal
    total: Decimal


def sales_tax_rate(
    rates: dict[str, Decimal], country: str, state: str | None
) -> Decimal:
    """Return the rate for a US state; other countries are charged no US sales tax."""
    if country != "US" or not state:
        return Decimal("0")
    return rates.get(state.upper(), Decimal("0"))


def line_charges(
    unit: Decimal, shipping_per_unit: Decimal, quantity: int, rate: Decimal
) -> LineCharges:
    """Price one line. Tax is on the goods only, rounded half-up to the cent."""
    goods = unit * quantity
    tax = (goods * rate).quantize(CENT, rounding=ROUND_HALF_UP)
    shipping = (shipping_per_unit * quantity).quantize(CENT, rounding=ROUND_HALF_UP)
    return LineCharges(
        unit=unit, sales_tax=tax, shipping=shipping, total=goods + tax + shipping
    )
