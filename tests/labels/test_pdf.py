"""The 4 x 6 inch return label PDF, read back with pypdf."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from pypdf import PdfReader
from reportlab.pdfbase import pdfmetrics

from orderdesk.labels.pdf import (
    CONTENT_WIDTH,
    FONT_CANDIDATES,
    Address,
    ReturnLabel,
    _barcode,
    _fit_lines,
    _Fonts,
    _printable,
    render_return_label,
)

RMA = "6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f"
TRACKING = "9202123456789012345678"
BUYER = Address(
    name="Jordan Lee",
    line1="350 Fifth Avenue",
    line2="Floor 21",
    city="New York",
    state="NY",
    postal_code="10118",
    country="US",
)
MERCHANT = Address(
    name="Lumen Home Returns",
    line1="500 Warehouse Way",
    city="Reno",
    state="NV",
    postal_code="89502",
    country="US",
)
LABEL = ReturnLabel(RMA, "USPS", TRACKING, BUYER, MERCHANT, "Soy Candle", 2)
HELVETICA = _Fonts("Helvetica", "Helvetica-Bold", None)
DEJAVU = next(
    (Path(regular) for regular, _ in FONT_CANDIDATES if Path(regular).is_file()), None
)


def page_text(pdf: bytes) -> str:
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_page_is_four_by_six() -> None:
    reader = PdfReader(io.BytesIO(render_return_label(LABEL)))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert (float(box.width), float(box.height)) == (288.0, 432.0)


def test_text_is_extractable() -> None:
    text = page_text(render_return_label(LABEL))
    assert TRACKING in text
    assert f"RMA: {RMA}" in text
    assert "USPS" in text
    assert "Soy Candle" in text
    assert "Quantity: 2" in text


def test_addresses_are_printed() -> None:
    text = page_text(render_return_label(LABEL))
    for line in ("Jordan Lee", "350 Fifth Avenue", "Floor 21", "New York, NY 10118"):
        assert line in text
    for line in ("Lumen Home Returns", "500 Warehouse Way", "Reno, NV 89502"):
        assert line in text
    assert text.index("FROM") < text.index("Jordan Lee") < text.index("SHIP TO")
    assert text.index("SHIP TO") < text.index("Lumen Home Returns")


def test_barcode_bars_are_drawn() -> None:
    page = PdfReader(io.BytesIO(render_return_label(LABEL))).pages[0]
    content = page.get_contents()
    assert content is not None
    # reportlab draws each Code 128 bar as a filled rectangle.
    assert content.get_data().count(b" re") > 30


@pytest.mark.parametrize("value", [TRACKING, "1Z999AA10123456784", "A" * 60])
def test_barcode_fits_the_width(value: str) -> None:
    assert _barcode(value, 64).width <= CONTENT_WIDTH + 0.01


def test_same_label_same_bytes() -> None:
    assert render_return_label(LABEL) == render_return_label(LABEL)


def test_long_values_do_not_crash() -> None:
    huge = Address(
        name="Maximilian " * 40,
        line1="X" * 400,
        line2="Apartment " * 30,
        city="Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
        state="Gwynedd",
        postal_code="LL61 5UJ",
        country="GB",
    )
    label = ReturnLabel(
        "R" * 120, "Carrier " * 20, "9" * 60, huge, huge, "Item " * 200, 10
    )
    text = page_text(render_return_label(label))
    assert "9" * 60 in text
    assert "Quantity: 10" in text
    assert "\u2026" in text


def test_wrapped_lines_fit_the_width() -> None:
    text = "Supercalifragilisticexpialidocious " * 5 + "Z" * 300
    lines = _fit_lines(text, HELVETICA, "Helvetica", 11, 150, 4)
    assert len(lines) == 4
    for line in lines:
        assert pdfmetrics.stringWidth(line, "Helvetica", 11) <= 150
    assert lines[-1].endswith("\u2026")


def test_short_text_is_untouched() -> None:
    assert _fit_lines("Jordan  Lee", HELVETICA, "Helvetica", 11, 150, 2) == [
        "Jordan Lee"
    ]


def test_unsupported_characters_are_replaced() -> None:
    assert _printable("Zoë Őrs 日本", HELVETICA) == "Zoë Ors ??"


def test_non_latin_text_does_not_crash() -> None:
    buyer = replace(BUYER, name="山田 太郎", line1="東京都千代田区 1-1", city="Москва")
    label = replace(LABEL, sender=buyer, item_name="Свеча 日本")
    text = page_text(render_return_label(label))
    assert TRACKING in text
    assert RMA in text


@pytest.mark.skipif(DEJAVU is None, reason="DejaVu Sans is not installed")
def test_cyrillic_kept_with_unicode_font() -> None:
    buyer = replace(BUYER, name="Анна Петрова", city="Москва")
    text = page_text(
        render_return_label(replace(LABEL, sender=buyer), font_path=DEJAVU)
    )
    assert "Анна Петрова" in text
    assert "Москва" in text


def test_missing_font_falls_back(tmp_path: Path) -> None:
    pdf = render_return_label(LABEL, font_path=tmp_path / "missing.ttf")
    assert TRACKING in page_text(pdf)


@pytest.mark.parametrize("number", ["", "9202 ５５", "line\nbreak"])
def test_invalid_tracking_is_rejected(number: str) -> None:
    with pytest.raises(ValueError, match="tracking number"):
        replace(LABEL, tracking_number=number)


def test_address_accepts_api_keys() -> None:
    address = Address.from_mapping(
        {
            "name": "Jordan Lee",
            "line1": "350 Fifth Avenue",
            "city": "New York",
            "state": "NY",
            "postalCode": "10118",
            "country": "US",
        }
    )
    assert address.postal_code == "10118"
    assert address.line2 == ""


def test_address_requires_city() -> None:
    with pytest.raises(ValueError, match="city"):
        Address.from_mapping(
            {"name": "A", "line1": "B", "postal_code": "1", "country": "US"}
        )
