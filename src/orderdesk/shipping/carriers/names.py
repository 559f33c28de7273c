"""Carrier names as people and providers spell them, reduced to one code per carrier.

"UPS", "United Parcel Service" (a package's carrierName), "UPS" (EasyPost), "ups"
(Shippo's carrier token, AfterShip's slug) all become "ups". A name not in the table
becomes its lower-case letters and digits, so two spellings that differ only in case,
spaces or punctuation still agree.
"""

from __future__ import annotations

import re

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

# Keys are names with everything but lower-case letters and digits removed.
ALIASES: dict[str, str] = {
    "amazon": "amazon",
    "amazonlogistics": "amazon",
    "amazonshipping": "amazon",
    "amzl": "amazon",
    "amazonmws": "amazon",
    "ups": "ups",
    "unitedparcelservice": "ups",
    "upsground": "ups",
    "upsmailinnovations": "ups",
    "usps": "usps",
    "unitedstatespostalservice": "usps",
    "uspostalservice": "usps",
    "fedex": "fedex",
    "federalexpress": "fedex",
    "fedexground": "fedex",
    "fedexexpress": "fedex",
    "fedexsmartpost": "fedex",
    "dhl": "dhl",
    "dhlexpress": "dhl",
    "dhlecommerce": "dhl",
    "dhlglobalmail": "dhl",
}

# Carrier names used when orderdesk records a package itself.
DISPLAY_NAMES: dict[str, str] = {
    "amazon": "Amazon",
    "ups": "UPS",
    "usps": "USPS",
    "fedex": "FedEx",
    "dhl": "DHL",
}


def carrier_code(name: str | None) -> str | None:
    """Return the carrier's code, or None for an empty name."""
    if not name:
        return None
    squashed = _NOT_ALNUM.sub("", name.lower())
    if not squashed:
        return None
    return ALIASES.get(squashed, squashed)
