"""Tracking page links per carrier, for packages recorded without a trackingUrl.

Templates hold `{number}`, replaced by the URL-quoted tracking number. The setting
`tracking_url_templates`, a JSON object of carrier name to template, adds carriers
or replaces a default. A carrier mapped to null or "" gets no link. Carrier names
match in any spelling that `carriers.names.carrier_code` reduces to the same code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

import structlog

from orderdesk.shipping.carriers.names import carrier_code
from orderdesk.shipping.carriers.settings import read_setting

log = structlog.get_logger(__name__)

PLACEHOLDER = "{number}"

DEFAULT_TEMPLATES: dict[str, str] = {
    # Amazon Logistics numbers (TBA...) are tracked through the order's page; this
    # is the public search for a bare number.
    "amazon": "https://track.amazon.com/tracking/{number}",
    "ups": "https://www.ups.com/track?loc=en_US&tracknum={number}",
    "usps": "https://tools.usps.com/go/TrackConfirmAction?tLabels={number}",
    "fedex": "https://www.fedex.com/fedextrack/?trknbr={number}",
    "dhl": "https://www.dhl.com/us-en/home/tracking/tracking-express.html"
    "?submit=1&tracking-id={number}",
}


class InvalidTemplates(ValueError):
    """The tracking_url_templates setting is not a JSON object of URL templates."""


def tracking_url(
    carrier: str | None, number: str, settings: Any | None = None
) -> str | None:
    """Return the carrier's tracking page for `number`, or None for a carrier with
    no template. `settings` supplies `tracking_url_templates` when given."""
    code = carrier_code(carrier)
    if code is None or not number:
        return None
    template = templates(settings).get(code)
    if not template:
        return None
    return template.replace(PLACEHOLDER, quote(number.replace(" ", ""), safe=""))


def templates(settings: Any | None = None) -> Mapping[str, str | None]:
    """Return the defaults with the configured templates laid over them.

    A setting that is not valid JSON is logged and ignored, so a typo in
    configuration costs links, never a failed shipment.
    """
    raw = read_setting(settings, "tracking_url_templates")
    if not raw:
        return DEFAULT_TEMPLATES
    try:
        return _merged(raw if isinstance(raw, str) else json.dumps(raw))
    except InvalidTemplates as exc:
        log.error("tracking_url_templates_invalid", error=str(exc))
        return DEFAULT_TEMPLATES


@lru_cache(maxsize=8)
def _merged(raw: str) -> Mapping[str, str | None]:
    merged: dict[str, str | None] = dict(DEFAULT_TEMPLATES)
    merged.update(parse_templates(raw))
    return merged


def parse_templates(raw: str) -> dict[str, str | None]:
    """Parse the setting into carrier code -> template, raising InvalidTemplates."""
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidTemplates(
            f"tracking_url_templates is not valid JSON: {exc}"
        ) from exc
    if not isinstance(document, dict):
        raise InvalidTemplates(
            'tracking_url_templates must be a JSON object such as {"UPS": '
            '"https://www.ups.com/track?tracknum={number}"}'
        )
    parsed: dict[str, str | None] = {}
    for name, template in document.items():
        code = carrier_code(name)
        if code is None:
            raise InvalidTemplates(
                f"tracking_url_templates has an empty carrier name {name!r}"
            )
        if template in (None, ""):
            parsed[code] = None
            continue
        check_template(name, template)
        parsed[code] = template
    return parsed


def check_template(name: str, template: Any) -> None:
    if not isinstance(template, str) or PLACEHOLDER not in template:
        raise InvalidTemplates(
            f"the template for {name!r} must be a string containing {PLACEHOLDER}"
        )
    parts = urlsplit(template.replace(PLACEHOLDER, "0"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidTemplates(
            f"the template for {name!r} must be an http or https URL, not {template!r}"
        )
