"""Label providers: the local carrier account, and EasyPost against a local fake."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from pypdf import PdfReader
from tests.labels.fake_easypost import API_KEY, FakeEasyPostServer

from orderdesk.labels import (
    IssuedLabel,
    LabelConfigurationError,
    LabelProviderError,
    MissingBuyerAddress,
    create_return_label,
    reprint_return_label,
)
from orderdesk.labels.providers import (
    SAMPLE_RETURNS_ADDRESS,
    _mod10_check_digit,
    returns_address,
    tracking_number_for,
)

REFUND_ID = "6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f"
OTHER_REFUND_ID = "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a"
RECIPIENT = {
    "email": "jordan@example.com",
    "physicalAddress": {
        "name": "Jordan Lee",
        "line1": "350 Fifth Avenue",
        "city": "New York",
        "state": "NY",
        "postalCode": "10118",
        "country": "US",
    },
}
RETURNS = {
    "name": "Lumen Home Returns",
    "line1": "500 Warehouse Way",
    "city": "Reno",
    "state": "NV",
    "postalCode": "89502",
    "country": "US",
    "phone": "7755550100",
}


@dataclass(frozen=True)
class Item:
    name: str = "Soy Candle"
    quantity: int = 1


def local_settings(**values: Any) -> SimpleNamespace:
    return SimpleNamespace(**values)


def pdf_text(pdf: bytes) -> str:
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


# -- local provider ------------------------------------------------------------------


def test_local_is_the_default() -> None:
    label = create_return_label(REFUND_ID, RECIPIENT, Item(), local_settings())
    assert isinstance(label, IssuedLabel)
    assert label.carrier == "USPS"
    assert re.fullmatch(r"9202\d{18}", label.tracking_number)
    assert label.pdf_bytes.startswith(b"%PDF-")


def test_local_retry_is_identical() -> None:
    first = create_return_label(REFUND_ID, RECIPIENT, Item(), local_settings())
    second = create_return_label(REFUND_ID, RECIPIENT, Item(), local_settings())
    assert first == second
    assert first.pdf_bytes == second.pdf_bytes


def test_local_numbers_differ_by_refund() -> None:
    first = create_return_label(REFUND_ID, RECIPIENT, Item(), local_settings())
    other = create_return_label(OTHER_REFUND_ID, RECIPIENT, Item(), local_settings())
    assert first.tracking_number != other.tracking_number


def test_local_label_shows_everything() -> None:
    settings = local_settings(returns_address=json.dumps(RETURNS), return_carrier="UPS")
    label = create_return_label(REFUND_ID, RECIPIENT, Item("Soy Candle", 3), settings)
    text = pdf_text(label.pdf_bytes)
    assert label.carrier == "UPS"
    assert label.tracking_number in text
    assert REFUND_ID in text
    assert "UPS" in text
    assert "Jordan Lee" in text
    assert "Lumen Home Returns" in text
    assert "Quantity: 3" in text


def test_default_check_digit_is_valid() -> None:
    number = tracking_number_for(REFUND_ID, "9202{digits:17}{mod10}")
    assert number[-1] == _mod10_check_digit(number[:-1], "")


def test_mod10_matches_hand_computation() -> None:
    # From the right: 2*3 + 0*1 + 2*3 + 9*1 = 21, so the check digit is 9.
    assert _mod10_check_digit("9202", "") == "9"
    assert _mod10_check_digit("0", "") == "0"


def test_custom_format_is_applied() -> None:
    settings = local_settings(return_tracking_format="rt{alnum:12}X")
    label = create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    assert re.fullmatch(r"RT[0-9A-Z]{12}X", label.tracking_number)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("9202{digits:5}", "fewer than 10"),
        ("RT-{digits:12}", "'-' at position 2"),
        ("{digits:41}", "1 to 40"),
        ("{digits:40}{alnum:21}", "more than 60"),
        ("AB{mod10}{digits:12}", "{mod10} must follow digits only"),
        ("{digits:12", "'{' at position 0"),
        (" 9202{digits:17}", "' ' at position 0"),
    ],
)
def test_bad_format_is_rejected(template: str, problem: str) -> None:
    settings = local_settings(return_tracking_format=template)
    with pytest.raises(LabelConfigurationError) as raised:
        create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    assert problem in str(raised.value)
    assert "return_tracking_format" in str(raised.value)


def test_sample_returns_address_default() -> None:
    address = returns_address(local_settings())
    assert address.name == SAMPLE_RETURNS_ADDRESS["name"]
    assert address.postal_code == SAMPLE_RETURNS_ADDRESS["postalCode"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"name": "x"}', "no line1"),
    ],
)
def test_bad_returns_address_is_rejected(raw: str, problem: str) -> None:
    with pytest.raises(LabelConfigurationError) as raised:
        returns_address(local_settings(returns_address=raw))
    assert problem in str(raised.value)
    assert "ORDERDESK_RETURNS_ADDRESS" in str(raised.value)


@pytest.mark.parametrize(
    "recipient", [None, {"email": "a@b.c"}, {"physicalAddress": {}}]
)
def test_missing_buyer_address(recipient: dict[str, Any] | None) -> None:
    with pytest.raises(MissingBuyerAddress) as raised:
        create_return_label(REFUND_ID, recipient, Item(), local_settings())
    assert raised.value.status_code == 409


def test_unknown_provider_is_rejected() -> None:
    with pytest.raises(LabelConfigurationError, match="ORDERDESK_LABEL_PROVIDER"):
        create_return_label(
            REFUND_ID, RECIPIENT, Item(), local_settings(label_provider="ups")
        )


def test_local_reprint_matches_original() -> None:
    settings = local_settings()
    label = create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    pdf = reprint_return_label(
        REFUND_ID, label.carrier, label.tracking_number, RECIPIENT, Item(), settings
    )
    assert pdf == label.pdf_bytes


# -- EasyPost ------------------------------------------------------------------------


@pytest.fixture
def easypost() -> Iterator[FakeEasyPostServer]:
    with FakeEasyPostServer() as server:
        yield server


def easypost_settings(server: FakeEasyPostServer, **values: Any) -> SimpleNamespace:
    defaults: dict[str, Any] = {
        "label_provider": "easypost",
        "easypost_api_key": API_KEY,
        "easypost_base_url": server.api_url,
        "easypost_timeout_seconds": 5.0,
        "returns_address": json.dumps(RETURNS),
    }
    defaults.update(values)
    return SimpleNamespace(**defaults)


def test_easypost_buys_return_label(easypost: FakeEasyPostServer) -> None:
    label = create_return_label(
        REFUND_ID, RECIPIENT, Item(), easypost_settings(easypost)
    )
    assert label.carrier == "USPS"
    assert label.tracking_number == "9400100000000000000001"
    assert label.pdf_bytes.startswith(b"%PDF-")
    assert "USPS RETURN" in pdf_text(label.pdf_bytes)


def test_easypost_request_shape(easypost: FakeEasyPostServer) -> None:
    create_return_label(REFUND_ID, RECIPIENT, Item(), easypost_settings(easypost))
    create = next(r for r in easypost.fake.requests if r.method == "POST")
    shipment = create.body["shipment"]
    assert create.path == "/v2/shipments"
    assert shipment["is_return"] is True
    assert shipment["reference"] == f"orderdesk-refund-{REFUND_ID}"
    # Given as for the outbound parcel; EasyPost swaps them for a return.
    assert shipment["to_address"]["street1"] == "350 Fifth Avenue"
    assert shipment["to_address"]["zip"] == "10118"
    assert shipment["to_address"]["email"] == "jordan@example.com"
    assert shipment["from_address"]["name"] == "Lumen Home Returns"
    assert shipment["from_address"]["phone"] == "7755550100"
    assert shipment["options"]["label_format"] == "PDF"
    assert set(shipment["parcel"]) == {"length", "width", "height", "weight"}
    expected = "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()
    assert create.authorization == expected


def test_easypost_picks_cheapest_carrier_rate(easypost: FakeEasyPostServer) -> None:
    create_return_label(REFUND_ID, RECIPIENT, Item(), easypost_settings(easypost))
    shipment = next(iter(easypost.fake.shipments.values()))
    # UPS Ground is cheaper, but the configured carrier is USPS.
    assert shipment["selected_rate"]["carrier"] == "USPS"
    assert shipment["selected_rate"]["service"] == "GroundAdvantage"


def test_easypost_retry_reuses_shipment(easypost: FakeEasyPostServer) -> None:
    settings = easypost_settings(easypost)
    first = create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    second = create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    assert first == second
    assert len(easypost.fake.shipments) == 1
    assert easypost.fake.count("POST", "/v2/shipments") == 2  # one create, one buy
    assert easypost.fake.count("POST", "/v2/shipments/shp_") == 1


def test_easypost_resumes_after_failed_buy(easypost: FakeEasyPostServer) -> None:
    settings = easypost_settings(easypost)
    failure = {
        "error": {"code": "INTERNAL_SERVER_ERROR", "message": "Oops", "errors": []}
    }
    easypost.fake.buy_failures.append((500, failure))
    with pytest.raises(LabelProviderError) as raised:
        create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    assert raised.value.retryable is True
    assert raised.value.http_status == 500
    label = create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    assert label.tracking_number == "9400100000000000000001"
    assert len(easypost.fake.shipments) == 1


def test_easypost_key_not_sent_to_files(easypost: FakeEasyPostServer) -> None:
    create_return_label(REFUND_ID, RECIPIENT, Item(), easypost_settings(easypost))
    downloads = [r for r in easypost.fake.requests if r.path.startswith("/files/")]
    assert len(downloads) == 1
    assert downloads[0].authorization is None


def test_easypost_converts_png_label(easypost: FakeEasyPostServer) -> None:
    easypost.fake.label_file_type = "image/png"
    label = create_return_label(
        REFUND_ID, RECIPIENT, Item(), easypost_settings(easypost)
    )
    assert label.pdf_bytes.startswith(b"%PDF-")
    assert easypost.fake.count("GET", "/v2/shipments/shp_") == 1


def test_easypost_bad_key_is_explained(easypost: FakeEasyPostServer) -> None:
    settings = easypost_settings(easypost, easypost_api_key="EZTK_wrong")
    with pytest.raises(LabelProviderError) as raised:
        create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    message = str(raised.value)
    assert "HTTP 401 APIKEY.INVALID" in message
    assert "ORDERDESK_EASYPOST_API_KEY" in message
    assert "EZTK_wrong" not in message
    assert raised.value.retryable is False


def test_easypost_field_errors_are_listed(easypost: FakeEasyPostServer) -> None:
    error = {
        "error": {
            "code": "ADDRESS.VERIFY.FAILURE",
            "message": "Address not found",
            "errors": [{"field": "street1", "message": "House number is missing"}],
        }
    }
    easypost.fake.create_failures.append((422, error))
    with pytest.raises(LabelProviderError) as raised:
        create_return_label(REFUND_ID, RECIPIENT, Item(), easypost_settings(easypost))
    message = str(raised.value)
    assert "HTTP 422 ADDRESS.VERIFY.FAILURE: Address not found" in message
    assert "street1: House number is missing" in message
    assert raised.value.retryable is False


def test_easypost_missing_carrier_rate(easypost: FakeEasyPostServer) -> None:
    settings = easypost_settings(easypost, return_carrier="FedEx")
    with pytest.raises(LabelProviderError) as raised:
        create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    assert "no FedEx rate" in str(raised.value)
    assert "UPS Ground" in str(raised.value)
    assert easypost.fake.count("POST", "/v2/shipments/shp_") == 0


def test_easypost_timeout_is_reported(easypost: FakeEasyPostServer) -> None:
    easypost.fake.delay_seconds = 1.0
    settings = easypost_settings(easypost, easypost_timeout_seconds=0.2)
    with pytest.raises(LabelProviderError, match="GET .* timed out after 0.2 s"):
        create_return_label(REFUND_ID, RECIPIENT, Item(), settings)


def test_easypost_unreachable_is_reported() -> None:
    settings = SimpleNamespace(
        label_provider="easypost",
        easypost_api_key=API_KEY,
        easypost_base_url="http://127.0.0.1:9/v2",
        easypost_timeout_seconds=2.0,
    )
    with pytest.raises(LabelProviderError, match="ConnectError"):
        create_return_label(REFUND_ID, RECIPIENT, Item(), settings)


def test_easypost_needs_api_key() -> None:
    settings = SimpleNamespace(label_provider="easypost")
    with pytest.raises(LabelConfigurationError, match="ORDERDESK_EASYPOST_API_KEY"):
        create_return_label(REFUND_ID, RECIPIENT, Item(), settings)


def test_easypost_reprint_downloads_again(easypost: FakeEasyPostServer) -> None:
    settings = easypost_settings(easypost)
    label = create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    pdf = reprint_return_label(
        REFUND_ID, "USPS", "9400 1000 0000 0000 000001", RECIPIENT, Item(), settings
    )
    assert pdf == label.pdf_bytes
    assert len(easypost.fake.shipments) == 1
    assert easypost.fake.count("POST", "/v2/shipments/shp_") == 1


def test_easypost_reprint_never_buys(easypost: FakeEasyPostServer) -> None:
    with pytest.raises(LabelProviderError, match="no bought shipment"):
        reprint_return_label(
            REFUND_ID, "USPS", "9400", RECIPIENT, Item(), easypost_settings(easypost)
        )
    assert easypost.fake.shipments == {}


def test_easypost_reprint_checks_tracking(easypost: FakeEasyPostServer) -> None:
    settings = easypost_settings(easypost)
    create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    with pytest.raises(LabelProviderError, match="stores 9999"):
        reprint_return_label(REFUND_ID, "USPS", "9999", RECIPIENT, Item(), settings)
