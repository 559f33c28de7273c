"""Return label providers, chosen by the `label_provider` setting.

- `local` (the default) is the merchant's own return carrier account: the
  carrier is `return_carrier` and the tracking number comes from
  `return_tracking_format`, derived from the refund id so a retry issues the same one.
- `easypost` buys a return label through EasyPost's Shipments API.

Both are idempotent per refund id: issuing twice for one refund returns the same
carrier, tracking number and label.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from orderdesk.labels.easypost import EasyPostClient, easypost_reference
from orderdesk.labels.exceptions import (
    LabelConfigurationError,
    LabelProviderError,
    MissingBuyerAddress,
)
from orderdesk.labels.pdf import Address, ReturnLabel, render_return_label

DEFAULT_CARRIER = "USPS"
# 22 digits like a USPS Intelligent Mail package barcode: a fixed prefix, 17 digits
# derived from the refund id and a mod-10 check digit.
DEFAULT_TRACKING_FORMAT = "9202{digits:17}{mod10}"
MAX_TRACKING_LENGTH = 60  # the width of the tracking number columns
MIN_GENERATED_CHARACTERS = 10
MAX_PLACEHOLDER_LENGTH = 40

# A sample returns address for development. A merchant sets its own with
# ORDERDESK_RETURNS_ADDRESS, a JSON object with these keys.
SAMPLE_RETURNS_ADDRESS: dict[str, str] = {
    "name": "orderdesk Returns (sample address)",
    "line1": "500 Sample Warehouse Way",
    "line2": "Dock 4",
    "city": "Reno",
    "state": "NV",
    "postalCode": "89502",
    "country": "US",
}


@dataclass(frozen=True)
class IssuedLabel:
    carrier: str
    tracking_number: str
    pdf_bytes: bytes = field(repr=False)


class LabelItem(Protocol):
    """The returned line item: a LineItem row or anything with the same fields."""

    @property
    def name(self) -> str: ...

    @property
    def quantity(self) -> int: ...


def create_return_label(
    refund_id: str,
    order_recipient: Mapping[str, Any] | None,
    item: LabelItem,
    settings: Any,
) -> IssuedLabel:
    """Issue the return label of a refund with the configured provider.

    `order_recipient` is the order's stored recipient, whose `physicalAddress` is
    the sender of the return. Calling again with the same refund id returns the
    same label. Raises a LabelError subclass when no label can be issued.
    """
    if _provider_name(settings) == "local":
        return _issue_local(refund_id, order_recipient, item, settings)
    sender = buyer_address(order_recipient)
    email = (order_recipient or {}).get("email")
    with _easypost(settings) as client:
        bought = client.issue(
            refund_id, sender, email if isinstance(email, str) else None
        )
    return IssuedLabel(
        bought.carrier,
        normalize_tracking_number(bought.tracking_code),
        bought.pdf_bytes,
    )


def reprint_return_label(
    refund_id: str,
    carrier: str,
    tracking_number: str,
    order_recipient: Mapping[str, Any] | None,
    item: LabelItem,
    settings: Any,
) -> bytes:
    """Return the PDF of a label issued before, from the carrier and tracking number
    stored on the refund, without issuing a new one.

    With `local` the PDF is rendered again and comes out byte for byte the same.
    With `easypost` the bought label is downloaded again.
    """
    if _provider_name(settings) == "local":
        sender = buyer_address(order_recipient)
        label = _label(refund_id, carrier, tracking_number, sender, item, settings)
        return rendered_label(label, _font_path(settings))
    with _easypost(settings) as client:
        bought = client.fetch(refund_id)
    if normalize_tracking_number(bought.tracking_code) != normalize_tracking_number(
        tracking_number
    ):
        raise LabelProviderError(
            f"EasyPost shipment {easypost_reference(refund_id)} has tracking number "
            f"{bought.tracking_code}, but refund {refund_id} stores "
            f"{tracking_number}. Check which label the buyer should use.",
            retryable=False,
        )
    return bought.pdf_bytes


def normalize_tracking_number(value: str) -> str:
    """Upper-case with every space removed, the form packages store."""
    return "".join(value.split()).upper()


def returns_address(settings: Any) -> Address:
    """The merchant's returns address from `returns_address` (JSON), else the sample."""
    raw = getattr(settings, "returns_address", None)
    data: Any = SAMPLE_RETURNS_ADDRESS if raw is None else raw
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise _bad_returns_address(f"it is not valid JSON ({exc})") from exc
    if not isinstance(data, Mapping):
        raise _bad_returns_address("it is not a JSON object")
    try:
        return Address.from_mapping(data)
    except ValueError as exc:
        raise _bad_returns_address(str(exc)) from exc


def buyer_address(order_recipient: Mapping[str, Any] | None) -> Address:
    physical = (order_recipient or {}).get("physicalAddress")
    if not isinstance(physical, Mapping):
        raise MissingBuyerAddress(
            "The order has no physical address, so no return label can be made. "
            "Add the buyer's address to the order first."
        )
    try:
        return Address.from_mapping(physical)
    except ValueError as exc:
        raise MissingBuyerAddress(
            f"The order's physical address is incomplete: {exc}. Complete it first."
        ) from exc


def _bad_returns_address(problem: str) -> LabelConfigurationError:
    return LabelConfigurationError(
        f"The returns_address setting is invalid: {problem}. Set "
        "ORDERDESK_RETURNS_ADDRESS to a JSON object with name, line1, line2, city, "
        "state, postalCode and country."
    )


def issues_labels_locally(settings: Any) -> bool:
    """Return whether labels are rendered here (`local`) rather than bought."""
    return _provider_name(settings) == "local"


def _provider_name(settings: Any) -> str:
    name = str(getattr(settings, "label_provider", "local") or "local").lower()
    if name not in ("local", "easypost"):
        raise LabelConfigurationError(
            f"label_provider {name!r} is not supported. Set ORDERDESK_LABEL_PROVIDER "
            "to local or easypost."
        )
    return name


def _carrier(settings: Any) -> str:
    return str(getattr(settings, "return_carrier", None) or DEFAULT_CARRIER)


def _easypost(settings: Any) -> EasyPostClient:
    return EasyPostClient(
        settings, returns=returns_address(settings), carrier=_carrier(settings)
    )


def _font_path(settings: Any) -> Path | None:
    value = getattr(settings, "label_font_path", None)
    return Path(value) if value else None


def _label(
    refund_id: str,
    carrier: str,
    tracking_number: str,
    sender: Address,
    item: LabelItem,
    settings: Any,
) -> ReturnLabel:
    return ReturnLabel(
        rma=refund_id,
        carrier=carrier,
        tracking_number=tracking_number,
        sender=sender,
        recipient=returns_address(settings),
        item_name=item.name,
        item_quantity=item.quantity,
    )


# -- local provider ----------------------------------------------------------------

# Labels a process keeps rendered: the label job renders one, and the email job
# that attaches it usually runs in the same worker right after.
RENDERED_LABELS_MAX = 256


@lru_cache(maxsize=RENDERED_LABELS_MAX)
def rendered_label(label: ReturnLabel, font_path: Path | None) -> bytes:
    """Return the label's PDF, rendered once per process for the same inputs.

    Rendering is deterministic (see `render_return_label`), so a label rendered in
    another process, or again after this cache dropped it, has the same bytes.
    """
    return render_return_label(label, font_path=font_path)


def _issue_local(
    refund_id: str,
    order_recipient: Mapping[str, Any] | None,
    item: LabelItem,
    settings: Any,
) -> IssuedLabel:
    carrier = _carrier(settings)
    template = (
        getattr(settings, "return_tracking_format", None) or DEFAULT_TRACKING_FORMAT
    )
    tracking_number = tracking_number_for(refund_id, template)
    sender = buyer_address(order_recipient)
    label = _label(refund_id, carrier, tracking_number, sender, item, settings)
    pdf = rendered_label(label, _font_path(settings))
    return IssuedLabel(carrier, tracking_number, pdf)


_FORMAT_TOKEN = re.compile(r"\{(digits|alnum):(\d+)\}|\{(mod10)\}|([A-Za-z0-9])")
_ALPHABETS = {"digits": string.digits, "alnum": string.digits + string.ascii_uppercase}


def tracking_number_for(refund_id: str, template: str) -> str:
    """Derive the tracking number of a refund from a `return_tracking_format` template.

    The template is letters and digits, printed as they are (upper-cased), and:
    - `{digits:N}`: N decimal digits derived from the refund id;
    - `{alnum:N}`: N characters of 0-9 and A-Z derived from the refund id;
    - `{mod10}`: the USPS mod-10 check digit of the digits before it.

    N is 1 to 40; the result is at most 60 characters and must contain at least 10
    derived characters. The same refund id and template always give the same
    number. Raises LabelConfigurationError for a template outside these rules.

    NOTE: the numbers are not registered with any carrier. The merchant's carrier
    account has to accept them, or else a provider such as EasyPost is needed.
    """
    tokens = _parse_tracking_format(template)
    output: list[str] = []
    for index, (kind, value) in enumerate(tokens):
        if kind == "literal":
            output.append(value.upper())
        elif kind == "mod10":
            output.append(_mod10_check_digit("".join(output), template))
        else:
            output.append(_derived(refund_id, index, int(value), _ALPHABETS[kind]))
    return "".join(output)


def _parse_tracking_format(template: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    length = 0
    generated = 0
    while position < len(template):
        match = _FORMAT_TOKEN.match(template, position)
        if match is None:
            raise _bad_format(
                template, f"{template[position]!r} at position {position}"
            )
        kind, count, check, literal = match.groups()
        if literal:
            tokens.append(("literal", literal))
            length += 1
        elif check:
            tokens.append(("mod10", ""))
            length += 1
        else:
            if not 1 <= int(count) <= MAX_PLACEHOLDER_LENGTH:
                raise _bad_format(
                    template, f"{{{kind}:{count}}} needs 1 to 40 characters"
                )
            tokens.append((kind, count))
            length += int(count)
            generated += int(count)
        position = match.end()
    if length > MAX_TRACKING_LENGTH:
        raise _bad_format(template, f"it makes {length} characters, more than 60")
    if generated < MIN_GENERATED_CHARACTERS:
        raise _bad_format(
            template,
            f"it derives {generated} characters, fewer than 10, so numbers collide",
        )
    return tokens


def _bad_format(template: str, problem: str) -> LabelConfigurationError:
    return LabelConfigurationError(
        f"return_tracking_format {template!r} is invalid: {problem}. Use letters, "
        "digits, {digits:N}, {alnum:N} and {mod10}, for example "
        f"{DEFAULT_TRACKING_FORMAT}."
    )


def _derived(refund_id: str, index: int, count: int, alphabet: str) -> str:
    # One SHA-256 digest gives 256 bits: enough for 40 characters of either alphabet.
    seed = f"orderdesk-return-tracking\x00{refund_id}\x00{index}".encode()
    value = int.from_bytes(hashlib.sha256(seed).digest(), "big")
    characters = []
    for _ in range(count):
        value, remainder = divmod(value, len(alphabet))
        characters.append(alphabet[remainder])
    return "".join(characters)


def _mod10_check_digit(preceding: str, template: str) -> str:
    """Compute the USPS mod-10 check digit, weighting digits 3 and 1 from the last."""
    if not preceding.isdigit():
        raise _bad_format(template, "{mod10} must follow digits only")
    total = sum(
        int(digit) * (3 if position % 2 == 0 else 1)
        for position, digit in enumerate(reversed(preceding))
    )
    return str((10 - total % 10) % 10)
