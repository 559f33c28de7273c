"""Convert between catalog decimals and a token's integer base units, exactly."""

from __future__ import annotations

from decimal import Decimal


def to_base_units(amount: Decimal, decimals: int) -> int:
    """Return amount x 10**decimals; raise ValueError if that is not a whole number."""
    scaled = amount.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more than {decimals} decimals")
    return int(scaled)


def from_base_units(units: int, decimals: int) -> Decimal:
    return Decimal(units).scaleb(-decimals)


def format_amount(amount: Decimal) -> str:
    """Render money with at least two decimals and no exponent: 5 -> "5.00"."""
    if amount == amount.quantize(Decimal("0.01")):
        return format(amount.quantize(Decimal("0.01")), "f")
    return format(amount.normalize(), "f")
