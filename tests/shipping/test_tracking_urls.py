"""Tracking page links: defaults per carrier, configured templates, bad settings."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from orderdesk.shipping.tracking_urls import (
    InvalidTemplates,
    parse_templates,
    tracking_url,
)


@pytest.mark.parametrize(
    ("carrier", "number", "expected"),
    [
        (
            "Amazon",
            "TBA123456789012",
            "https://track.amazon.com/tracking/TBA123456789012",
        ),
        (
            "UPS",
            "1Z999AA10123456784",
            "https://www.ups.com/track?loc=en_US&tracknum=1Z999AA10123456784",
        ),
        (
            "United Parcel Service",
            "1Z999AA10123456784",
            "https://www.ups.com/track?loc=en_US&tracknum=1Z999AA10123456784",
        ),
        (
            "USPS",
            "9102969010383081813033",
            "https://tools.usps.com/go/TrackConfirmAction?tLabels=9102969010383081813033",
        ),
        (
            "FedEx",
            "449044304137821",
            "https://www.fedex.com/fedextrack/?trknbr=449044304137821",
        ),
        (
            "DHL Express",
            "1234567890",
            "https://www.dhl.com/us-en/home/tracking/tracking-express.html"
            "?submit=1&tracking-id=1234567890",
        ),
    ],
)
def test_default_carrier_links(carrier: str, number: str, expected: str) -> None:
    assert tracking_url(carrier, number) == expected


def test_unknown_carrier_no_link() -> None:
    assert tracking_url("Acme Couriers", "AC123456") is None
    assert tracking_url("", "AC123456") is None
    assert tracking_url("UPS", "") is None


def test_number_is_url_quoted() -> None:
    assert (
        tracking_url("UPS", "1Z 99/9?&")
        == "https://www.ups.com/track?loc=en_US&tracknum=1Z99%2F9%3F%26"
    )


def test_configured_template_wins() -> None:
    settings = SimpleNamespace(
        tracking_url_templates=json.dumps(
            {
                "ups": "https://track.example.com/ups/{number}",
                "Acme Couriers": "https://acme.example.com/t?n={number}",
                "FedEx": None,
            }
        )
    )
    assert tracking_url("UPS", "1Z1", settings) == "https://track.example.com/ups/1Z1"
    assert (
        tracking_url("acme-couriers", "A1", settings)
        == "https://acme.example.com/t?n=A1"
    )
    assert tracking_url("FedEx", "4490", settings) is None
    assert tracking_url("USPS", "9400", settings).startswith("https://tools.usps.com/")


def test_environment_template_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from orderdesk.config import Settings

    monkeypatch.setenv(
        "ORDERDESK_TRACKING_URL_TEMPLATES",
        '{"DHL": "https://dhl.example.com/{number}"}',
    )
    assert tracking_url("DHL", "123", Settings()) == "https://dhl.example.com/123"


def test_invalid_setting_falls_back() -> None:
    settings = SimpleNamespace(tracking_url_templates="{not json")
    assert tracking_url("UPS", "1Z1", settings) == (
        "https://www.ups.com/track?loc=en_US&tracknum=1Z1"
    )


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["https://x.example/{number}"]', "must be a JSON object"),
        ('{"UPS": "https://x.example/track"}', "containing {number}"),
        ('{"UPS": 5}', "containing {number}"),
        ('{"UPS": "ftp://x.example/{number}"}', "http or https URL"),
        ('{"UPS": "javascript:alert({number})"}', "http or https URL"),
        ('{"": "https://x.example/{number}"}', "empty carrier name"),
    ],
)
def test_bad_templates_rejected(raw: str, problem: str) -> None:
    with pytest.raises(
        InvalidTemplates, match=problem.replace("{", r"\{").replace("}", r"\}")
    ):
        parse_templates(raw)
