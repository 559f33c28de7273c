"""Return labels bought through EasyPost's Shipments API, over httpx.

The flow follows EasyPost's documentation: create a Shipment with `is_return: true`
(EasyPost then swaps the addresses), buy the cheapest rate of the configured
carrier, and download the PDF at `postage_label.label_pdf_url`, or `label_url`
when that file is already a PDF. Requests authenticate with the API key as the
Basic-auth user name, and the base URL is configurable for tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import structlog

from orderdesk.labels.exceptions import LabelConfigurationError, LabelProviderError
from orderdesk.labels.pdf import Address

log = structlog.get_logger(__name__)

EASYPOST_BASE_URL = "https://api.easypost.com/v2"
EASYPOST_TIMEOUT_SECONDS = 30.0
# Inches and ounces, the units of EasyPost's Parcel object.
DEFAULT_PARCEL: dict[str, float] = {"length": 10, "width": 8, "height": 4, "weight": 16}
MAX_LABEL_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class PurchasedLabel:
    shipment_id: str
    carrier: str
    tracking_code: str
    pdf_bytes: bytes = field(repr=False)


def easypost_reference(refund_id: str) -> str:
    """Return the Shipment `reference` that ties an EasyPost shipment to a refund."""
    return f"orderdesk-refund-{refund_id}"


class EasyPostClient:
    """Issue return labels through EasyPost's Shipments API over httpx.

    Idempotency: each shipment is created with `reference` set from the refund id,
    and EasyPost accepts a reference in place of a shipment id. Before creating,
    the client retrieves the shipment by that reference, so a retry reuses the
    shipment (and buys it when an earlier attempt stopped before buying).

    NOTE: EasyPost does not document references as unique, and the lookup and the
    create are two requests. Two calls for the same refund at the same moment can
    each create and buy a shipment, so callers issue a refund's label from one job
    or request at a time.
    """

    def __init__(
        self,
        settings: Any,
        *,
        returns: Address,
        carrier: str,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        api_key = getattr(settings, "easypost_api_key", None)
        if not api_key:
            raise LabelConfigurationError(
                "label_provider is easypost but no API key is set. Set "
                "ORDERDESK_EASYPOST_API_KEY."
            )
        self._api_key = str(api_key)
        base_url = getattr(settings, "easypost_base_url", None) or EASYPOST_BASE_URL
        self.base_url = str(base_url).rstrip("/")
        self.timeout = float(
            getattr(settings, "easypost_timeout_seconds", None)
            or EASYPOST_TIMEOUT_SECONDS
        )
        self.carrier = carrier
        self.service = getattr(settings, "easypost_service", None)
        self.parcel = _parcel(settings)
        self.returns = returns
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            headers={"User-Agent": "orderdesk", "Accept": "application/json"},
            follow_redirects=False,
            transport=transport,
        )

    def __enter__(self) -> EasyPostClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def issue(
        self, refund_id: str, sender: Address, email: str | None
    ) -> PurchasedLabel:
        """Create and buy the refund's return shipment, or reuse the one made before."""
        shipment = self._find(easypost_reference(refund_id))
        if shipment is None:
            shipment = self._create(refund_id, sender, email)
            log.info(
                "easypost_shipment_created",
                refund_id=refund_id,
                shipment_id=shipment["id"],
            )
        if not _is_bought(shipment):
            shipment = self._buy(shipment)
            log.info(
                "easypost_label_bought", refund_id=refund_id, shipment_id=shipment["id"]
            )
        return self._issued(shipment)

    def fetch(self, refund_id: str) -> PurchasedLabel:
        """Download the label bought before for the refund. This never buys one."""
        reference = easypost_reference(refund_id)
        shipment = self._find(reference)
        if shipment is None or not _is_bought(shipment):
            raise LabelProviderError(
                f"EasyPost has no bought shipment with reference {reference}, so the "
                f"label of refund {refund_id} cannot be downloaded again.",
                retryable=False,
            )
        return self._issued(shipment)

    def _find(self, reference: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", f"/shipments/{reference}")
        except LabelProviderError as exc:
            if exc.http_status == 404:
                return None
            raise

    def _create(
        self, refund_id: str, sender: Address, email: str | None
    ) -> dict[str, Any]:
        buyer = _easypost_address(sender)
        if email:
            buyer["email"] = email
        # With is_return, EasyPost swaps to_address and from_address, so the
        # addresses are given as for the outbound parcel: merchant to buyer.
        body = {
            "shipment": {
                "reference": easypost_reference(refund_id),
                "is_return": True,
                "to_address": buyer,
                "from_address": _easypost_address(self.returns),
                "parcel": self.parcel,
                # NOTE: the label size is the carrier's default; no size is asked for.
                "options": {"label_format": "PDF"},
            }
        }
        return self._request("POST", "/shipments", json_body=body)

    def _buy(self, shipment: dict[str, Any]) -> dict[str, Any]:
        rate = self._choose_rate(shipment)
        path = f"/shipments/{shipment['id']}/buy"
        return self._request("POST", path, json_body={"rate": {"id": rate["id"]}})

    def _choose_rate(self, shipment: dict[str, Any]) -> dict[str, Any]:
        """Return the cheapest rate of the configured carrier (and service, if set)."""
        rates = [rate for rate in shipment.get("rates") or [] if isinstance(rate, dict)]
        matching = [
            rate
            for rate in rates
            if str(rate.get("carrier", "")).lower() == self.carrier.lower()
            and (not self.service or rate.get("service") == self.service)
        ]
        if not matching:
            offered = sorted({f"{r.get('carrier')} {r.get('service')}" for r in rates})
            requested = (
                f"{self.carrier} {self.service}" if self.service else self.carrier
            )
            raise LabelProviderError(
                f"EasyPost offered no {requested} rate for shipment "
                f"{shipment.get('id')} (offered: {', '.join(offered) or 'none'}). Set "
                "ORDERDESK_RETURN_CARRIER to one of the offered carriers.",
                retryable=False,
            )
        return min(matching, key=lambda rate: _decimal(rate.get("rate")))

    def _issued(self, shipment: dict[str, Any]) -> PurchasedLabel:
        tracking = shipment.get("tracking_code")
        if not isinstance(tracking, str) or not tracking.strip():
            raise LabelProviderError(
                f"EasyPost shipment {shipment.get('id')} was bought but has no "
                "tracking_code."
            )
        selected = shipment.get("selected_rate") or {}
        carrier = str(selected.get("carrier") or self.carrier)
        pdf = self._download(self._label_pdf_url(shipment))
        return PurchasedLabel(str(shipment.get("id")), carrier, tracking.strip(), pdf)

    def _label_pdf_url(self, shipment: dict[str, Any]) -> str:
        label = shipment.get("postage_label") or {}
        url = label.get("label_pdf_url")
        if not url and label.get("label_file_type") == "application/pdf":
            url = label.get("label_url")
        if not url:
            # Ask EasyPost to convert the label (PNG by default) to PDF.
            path = f"/shipments/{shipment['id']}/label?file_format=PDF"
            converted = self._request("GET", path)
            url = (converted.get("postage_label") or {}).get("label_pdf_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise LabelProviderError(
                f"EasyPost shipment {shipment.get('id')} has no PDF label URL: {url!r}."
            )
        return url

    def _download(self, url: str) -> bytes:
        # Label files are public links, so the API key is not sent with them.
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise LabelProviderError(
                        f"Downloading the EasyPost label failed with HTTP "
                        f"{response.status_code}.",
                        http_status=response.status_code,
                    )
                content = bytearray()
                for chunk in response.iter_bytes():
                    content.extend(chunk)
                    if len(content) > MAX_LABEL_BYTES:
                        raise LabelProviderError(
                            "The EasyPost label is larger than 10 MiB."
                        )
        except httpx.HTTPError as exc:
            raise LabelProviderError(
                f"Downloading the EasyPost label failed: {exc!r}."
            ) from exc
        if not content.startswith(b"%PDF-"):
            raise LabelProviderError("The EasyPost label download is not a PDF file.")
        return bytes(content)

    def _request(
        self, method: str, path: str, *, json_body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = self._http.request(
                method, url, json=json_body, auth=(self._api_key, "")
            )
        except httpx.TimeoutException as exc:
            raise LabelProviderError(
                f"EasyPost request {method} {path} timed out after {self.timeout:g} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise LabelProviderError(
                f"EasyPost request {method} {path} failed: {exc!r}."
            ) from exc
        if response.status_code >= 400:
            raise _api_error(response, method, path)
        try:
            body = response.json()
        except ValueError as exc:
            raise LabelProviderError(
                f"EasyPost returned a body that is not JSON for {method} {path}."
            ) from exc
        if not isinstance(body, dict):
            raise LabelProviderError(
                f"EasyPost returned JSON that is not an object for {method} {path}."
            )
        return body


def _api_error(response: httpx.Response, method: str, path: str) -> LabelProviderError:
    """Turn EasyPost's `{"error": {code, message, errors}}` body into an exception."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    details = []
    for item in (error.get("errors") if isinstance(error, dict) else None) or []:
        if isinstance(item, dict):
            details.append(f"{item.get('field')}: {item.get('message')}")
        else:
            details.append(str(item))
    status = response.status_code
    hint = " Check ORDERDESK_EASYPOST_API_KEY." if status == 401 else ""
    text = (
        f"EasyPost rejected {method} {path} with HTTP {status}"
        f"{f' {code}' if code else ''}: {message or response.reason_phrase}"
        f"{' (' + '; '.join(details) + ')' if details else ''}.{hint}"
    )
    return LabelProviderError(
        text,
        http_status=status,
        provider_code=code,
        retryable=status >= 500 or status in (408, 429),
    )


def _is_bought(shipment: dict[str, Any]) -> bool:
    return bool(shipment.get("postage_label")) and bool(shipment.get("tracking_code"))


def _easypost_address(address: Address) -> dict[str, str]:
    values = {
        "name": address.name,
        "street1": address.line1,
        "street2": address.line2,
        "city": address.city,
        "state": address.state,
        "zip": address.postal_code,
        "country": address.country,
        "phone": address.phone,
    }
    return {key: value for key, value in values.items() if value}


def _parcel(settings: Any) -> dict[str, float]:
    """The parcel of every return from `return_parcel` (JSON, inches and ounces).

    NOTE: one parcel size serves every item, because the catalog stores no weights.
    """
    raw = getattr(settings, "return_parcel", None)
    if raw is None:
        return dict(DEFAULT_PARCEL)
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        parcel = {
            key: float(data[key]) for key in ("length", "width", "height", "weight")
        }
    except (ValueError, TypeError, KeyError) as exc:
        raise LabelConfigurationError(
            f"The return_parcel setting is invalid ({exc!r}). Set "
            'ORDERDESK_RETURN_PARCEL to JSON such as {"length": 10, "width": 8, '
            '"height": 4, "weight": 16} (inches and ounces).'
        ) from exc
    if any(value <= 0 for value in parcel.values()):
        raise LabelConfigurationError("Every return_parcel dimension must be positive.")
    return parcel


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal("Infinity")
