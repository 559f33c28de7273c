"""Parse product locators into the normalised form the catalog is keyed by."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from orderdesk.errors import InvalidInput

ASIN = re.compile(r"[A-Z0-9]{10}")
_ASIN_IN_PATH = re.compile(r"/(?:dp|gp/product)/([A-Za-z0-9]{10})(?:[/?#]|$)")
_SHOPIFY_PATH = re.compile(r"/products/([A-Za-z0-9][A-Za-z0-9._~%-]*)/?")
_VARIANT = re.compile(r"[0-9]{1,20}")
# Token and collection locators of the public API: "<chain>:<contract>[:<token id>]"
# or "crossmint:<collection id>[:<token id>]".
_TOKEN_LOCATOR = re.compile(r"[a-z0-9-]+:(0x[0-9a-fA-F]{40}|[0-9a-fA-F-]{36})(:.*)?")
MAX_LOCATOR_LENGTH = 600


@dataclass(frozen=True)
class Locator:
    platform: str  # "amazon" or "shopify"
    key: str  # the normalised locator stored in the catalog

    def __str__(self) -> str:
        return self.key


def locator_error(
    raw: str, reason: str, code: str = "invalid_product_locator"
) -> InvalidInput:
    shown = raw if len(raw) <= 120 else raw[:117] + "..."
    return InvalidInput(
        f"productLocator {shown!r} {reason}. Use amazon:<ASIN>, amazon:<product URL> "
        "or shopify:<product URL>:<variant id>.",
        code=code,
    )


def parse_locator(raw: str) -> Locator:
    """Normalise a locator, raising InvalidInput for malformed or unsupported ones."""
    if len(raw) > MAX_LOCATOR_LENGTH:
        raise locator_error(raw, f"is longer than {MAX_LOCATOR_LENGTH} characters")
    platform, _, rest = raw.partition(":")
    if platform == "amazon":
        return Locator("amazon", f"amazon:{_parse_amazon(raw, rest)}")
    if platform == "shopify":
        return Locator("shopify", _parse_shopify(raw, rest))
    if _TOKEN_LOCATOR.fullmatch(raw) or platform == "crossmint":
        raise locator_error(
            raw,
            "is a token or collection locator, which is not supported: orderdesk sells "
            "physical products only",
            code="unsupported_product_locator",
        )
    raise locator_error(raw, "has an unknown platform")


def _parse_amazon(raw: str, rest: str) -> str:
    if ASIN.fullmatch(rest):
        return rest
    if not rest.startswith(("http://", "https://")):
        raise locator_error(raw, "is neither a 10-character upper-case ASIN nor a URL")
    parts = urlsplit(rest)
    host = (parts.hostname or "").lower()
    if not _is_amazon_host(host):
        raise locator_error(raw, f"has host {host!r}, which is not an Amazon store")
    match = _ASIN_IN_PATH.search(parts.path)
    if match is None:
        raise locator_error(raw, "has no ASIN after /dp/ or /gp/product/ in its path")
    return match.group(1).upper()


def _is_amazon_host(host: str) -> bool:
    labels = host.split(".")
    return "amazon" in labels[:-1] and len(labels) >= 2


def _parse_shopify(raw: str, rest: str) -> str:
    url, sep, variant = rest.rpartition(":")
    if not sep or not url.startswith(("http://", "https://")):
        raise locator_error(raw, "must be shopify:<product URL>:<variant id>")
    if not _VARIANT.fullmatch(variant):
        raise locator_error(raw, f"has variant id {variant!r}, which must be digits")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or "." not in host:
        raise locator_error(raw, "has a product URL without a host")
    match = _SHOPIFY_PATH.fullmatch(parts.path)
    if match is None:
        raise locator_error(raw, "has a URL whose path is not /products/<handle>")
    return f"shopify:https://{host}/products/{match.group(1).lower()}:{int(variant)}"
