"""Carrier names reduced to one code per carrier."""

from __future__ import annotations

import pytest

from orderdesk.shipping.carriers.names import carrier_code


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("UPS", "ups"),
        ("  United   Parcel Service ", "ups"),
        ("ups", "ups"),
        ("USPS", "usps"),
        ("U.S. Postal Service", "usps"),
        ("FedEx", "fedex"),
        ("Federal Express", "fedex"),
        ("DHLExpress", "dhl"),
        ("dhl_express", "dhl"),
        ("Amazon Logistics", "amazon"),
        ("amazon", "amazon"),
        ("Acme Couriers", "acmecouriers"),
        ("acme-couriers", "acmecouriers"),
    ],
)
def test_carrier_code_row(name: str, code: str) -> None:
    assert carrier_code(name) == code


@pytest.mark.parametrize("name", [None, "", "  ", "--"])
def test_empty_carrier_no_code(name: str | None) -> None:
    assert carrier_code(name) is None
