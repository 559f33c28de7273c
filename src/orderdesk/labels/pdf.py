"""Render a 4 x 6 inch return label as a PDF with reportlab.

The label carries the buyer's address as the sender, the merchant's returns address
as the recipient, the carrier and tracking number as text and as a Code 128 barcode,
the refund id as the RMA number and the returned item. Each text is wrapped and cut
to fit its box, so long names stay inside the page. Characters the chosen font cannot
draw are replaced (accents dropped, anything else shown as "?") instead of failing.

A TrueType font is still embedded as a subset in every label, so names in any script
the font covers print. Only the work is shared: each font face keeps the subsets it
built, compressed, and a label that needs the same glyphs reuses them. Building and
compressing the subset took most of a label's rendering time, and the kept subset
has the same bytes.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog
from reportlab.graphics.barcode import code128
from reportlab.pdfbase import pdfdoc, pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont, TTFontFace
from reportlab.pdfgen import canvas

log = structlog.get_logger(__name__)

PAGE_WIDTH = 288.0  # 4 in at 72 points per inch
PAGE_HEIGHT = 432.0  # 6 in
MARGIN = 12.0
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN
ELLIPSIS = "\u2026"

# Fonts with wide Unicode coverage, tried in order when no font path is configured.
# Without any of them the label uses Helvetica, which covers Western European text.
FONT_CANDIDATES = (
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/dejavu/DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/TTF/DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    ("/usr/local/share/fonts/DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
)


@dataclass(frozen=True)
class Address:
    """A postal address as a label prints it."""

    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str = ""
    state: str = ""
    phone: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Address:
        """Build an address from API keys (`postalCode`) or snake case (`postal_code`).

        Raises ValueError naming the first missing required key.
        """
        values = {
            "name": data.get("name"),
            "line1": data.get("line1"),
            "line2": data.get("line2"),
            "city": data.get("city"),
            "state": data.get("state"),
            "postal_code": data.get("postalCode", data.get("postal_code")),
            "country": data.get("country"),
            "phone": data.get("phone"),
        }
        for key in ("name", "line1", "city", "postal_code", "country"):
            if not isinstance(values[key], str) or not values[key].strip():
                raise ValueError(f"the address has no {key}")
        return cls(**{key: str(value or "").strip() for key, value in values.items()})

    def lines(self) -> list[str]:
        locality = " ".join(part for part in (self.state, self.postal_code) if part)
        city_line = f"{self.city}, {locality}" if locality else self.city
        return [
            line
            for line in (self.name, self.line1, self.line2, city_line, self.country)
            if line
        ]


@dataclass(frozen=True)
class ReturnLabel:
    """Everything printed on one return label."""

    rma: str
    carrier: str
    tracking_number: str
    sender: Address
    recipient: Address
    item_name: str
    item_quantity: int

    def __post_init__(self) -> None:
        # Code 128 encodes ASCII only, and tracking numbers are stored as upper-case
        # letters and digits, so anything else is a caller's bug.
        number = self.tracking_number
        if not number or not number.isascii() or not number.isprintable():
            raise ValueError(
                f"tracking number {number!r} must be non-empty printable ASCII"
            )


# The subset keeper of each TrueType font the labels registered, by font name.
SUBSET_KEEPERS: dict[str, _SubsetKeeper] = {}


@dataclass(frozen=True)
class _Fonts:
    regular: str
    bold: str
    # Code points the font can draw, or None for a standard font (cp1252 text).
    coverage: frozenset[int] | None


def render_return_label(label: ReturnLabel, *, font_path: Path | None = None) -> bytes:
    """Render the label as a one-page 288 x 432 point PDF and return its bytes.

    The same label always renders to the same bytes (reportlab's invariant mode), so
    a retried job attaches an identical file. `font_path` names a TrueType font for
    non-Latin text. Without it a DejaVu Sans found on the system is used, else
    Helvetica.
    """
    fonts = _load_fonts(str(font_path) if font_path else None)
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(PAGE_WIDTH, PAGE_HEIGHT), invariant=1)
    pdf.setTitle(f"Return label {label.rma}")
    pdf.setAuthor("orderdesk")
    y = PAGE_HEIGHT - MARGIN
    y = _draw_header(pdf, fonts, label, y)
    y = _draw_address(pdf, fonts, "FROM", label.sender, y, size=8, max_lines=6)
    y = _draw_address(pdf, fonts, "SHIP TO", label.recipient, y, size=11, max_lines=7)
    y = _draw_tracking(pdf, fonts, label, y)
    _draw_item(pdf, fonts, label, y)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _draw_header(
    pdf: canvas.Canvas, fonts: _Fonts, label: ReturnLabel, y: float
) -> float:
    y -= 18
    pdf.setFont(fonts.bold, 18)
    pdf.drawString(MARGIN, y, "RETURN")
    carrier = _fit_lines(label.carrier, fonts, fonts.bold, 12, CONTENT_WIDTH - 90, 1)
    pdf.setFont(fonts.bold, 12)
    pdf.drawRightString(PAGE_WIDTH - MARGIN, y + 2, carrier[0])
    return _rule(pdf, y - 8)


def _draw_address(
    pdf: canvas.Canvas,
    fonts: _Fonts,
    heading: str,
    address: Address,
    y: float,
    *,
    size: float,
    max_lines: int,
) -> float:
    y -= 10
    pdf.setFont(fonts.bold, 7)
    pdf.drawString(MARGIN, y, heading)
    indent = 6.0
    lines: list[str] = []
    for field in address.lines():
        width = CONTENT_WIDTH - indent
        lines.extend(_fit_lines(field, fonts, fonts.regular, size, width, 2))
    if len(lines) > max_lines:
        # Keep the city and country lines, which route the parcel, and cut the rest.
        lines = lines[: max_lines - 2] + lines[-2:]
    pdf.setFont(fonts.regular, size)
    for line in lines:
        y -= size + 2
        pdf.drawString(MARGIN + indent, y, line)
    return _rule(pdf, y - 8)


def _draw_tracking(
    pdf: canvas.Canvas, fonts: _Fonts, label: ReturnLabel, y: float
) -> float:
    y -= 12
    pdf.setFont(fonts.bold, 8)
    caption = f"{label.carrier} TRACKING #"
    pdf.drawString(
        MARGIN, y, _fit_lines(caption, fonts, fonts.bold, 8, CONTENT_WIDTH, 1)[0]
    )
    bar_height = 64.0
    barcode = _barcode(label.tracking_number, bar_height)
    y -= bar_height + 6
    barcode.drawOn(pdf, (PAGE_WIDTH - barcode.width) / 2, y)
    y -= 13
    number = label.tracking_number
    size = 11.0
    while (
        size > 5
        and pdfmetrics.stringWidth(number, "Courier-Bold", size) > CONTENT_WIDTH
    ):
        size -= 0.5
    pdf.setFont("Courier-Bold", size)
    pdf.drawCentredString(PAGE_WIDTH / 2, y, number)
    return _rule(pdf, y - 8)


def _draw_item(pdf: canvas.Canvas, fonts: _Fonts, label: ReturnLabel, y: float) -> None:
    y -= 12
    pdf.setFont(fonts.bold, 9)
    for line in _fit_lines(f"RMA: {label.rma}", fonts, fonts.bold, 9, CONTENT_WIDTH, 2):
        pdf.drawString(MARGIN, y, line)
        y -= 11
    pdf.setFont(fonts.regular, 8)
    item = f"Item: {label.item_name}"
    for line in _fit_lines(item, fonts, fonts.regular, 8, CONTENT_WIDTH, 3):
        pdf.drawString(MARGIN, y, line)
        y -= 10
    pdf.drawString(MARGIN, y, f"Quantity: {label.item_quantity}")
    pdf.setFont(fonts.regular, 7)
    pdf.drawCentredString(
        PAGE_WIDTH / 2, MARGIN, "Pack the item securely and attach this label."
    )


def _rule(pdf: canvas.Canvas, y: float) -> float:
    pdf.setLineWidth(0.8)
    pdf.line(MARGIN, y, PAGE_WIDTH - MARGIN, y)
    return y


def _barcode(value: str, bar_height: float) -> code128.Code128:
    """Build a Code 128 barcode scaled to the content width, never wider.

    The quiet zones are 10 modules wide, the usual Code 128 minimum, in place of
    reportlab's default of at least a quarter inch, so long numbers keep wider bars.
    """
    probe = code128.Code128(value, barWidth=1.0, lquiet=0, rquiet=0)
    modules = probe.width + 20
    # Up to 1.4 points per module (about 19 mil) keeps short numbers easy to scan.
    # NOTE: a 60-character number shrinks below 0.5 points per module, which many
    # scanners cannot read. The printed number below the bars stays legible.
    bar_width = min(1.4, CONTENT_WIDTH / modules)
    quiet = 10 * bar_width
    return code128.Code128(
        value, barWidth=bar_width, barHeight=bar_height, lquiet=quiet, rquiet=quiet
    )


def _fit_lines(
    text: str, fonts: _Fonts, font: str, size: float, width: float, max_lines: int
) -> list[str]:
    """Wrap text to `width` points in at most `max_lines` lines, cutting the last
    line with an ellipsis when the text does not fit. Words wider than a line are
    broken between characters."""
    words = _printable(" ".join(text.split()), fonts).split(" ")
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if _width(candidate, font, size) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while _width(current, font, size) > width:
            cut = _longest_prefix(current, font, size, width)
            lines.append(current[:cut])
            current = current[cut:]
    lines.append(current)
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1]
    while last and _width(last + ELLIPSIS, font, size) > width:
        last = last[:-1]
    kept[-1] = last.rstrip() + ELLIPSIS
    return kept


def _longest_prefix(text: str, font: str, size: float, width: float) -> int:
    cut = len(text)
    while cut > 1 and _width(text[:cut], font, size) > width:
        cut -= 1
    return cut


def _width(text: str, font: str, size: float) -> float:
    return float(pdfmetrics.stringWidth(text, font, size))


def _printable(text: str, fonts: _Fonts) -> str:
    """Replace characters the font cannot draw by their accent-free form (with
    Helvetica, "Ő" becomes "O"), or by "?" when there is none."""
    return "".join(
        char if _drawable(char, fonts) else _fallback(char, fonts) for char in text
    )


def _fallback(char: str, fonts: _Fonts) -> str:
    decomposed = unicodedata.normalize("NFKD", char)
    kept = "".join(
        c for c in decomposed if _drawable(c, fonts) and not unicodedata.combining(c)
    )
    return kept or "?"


def _drawable(char: str, fonts: _Fonts) -> bool:
    if not char.isprintable():
        return False
    if fonts.coverage is not None:
        return ord(char) in fonts.coverage
    try:
        char.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


@lru_cache(maxsize=8)
def _load_fonts(font_path: str | None) -> _Fonts:
    """Register a TrueType font (the configured one, else a known system one) once."""
    if font_path:
        try:
            return _register(Path(font_path), Path(font_path))
        except (OSError, TTFError) as exc:
            log.warning("label_font_unusable", font_path=font_path, error=str(exc))
    for regular, bold in FONT_CANDIDATES:
        path = Path(regular)
        if path.is_file():
            bold_path = path.with_name(bold)
            return _register(path, bold_path if bold_path.is_file() else path)
    return _Fonts("Helvetica", "Helvetica-Bold", None)


def _register(regular: Path, bold: Path) -> _Fonts:
    regular_name = f"orderdesk-{regular.stem}"
    bold_name = f"orderdesk-{bold.stem}-bold"
    regular_font = TTFont(regular_name, str(regular))
    bold_font = TTFont(bold_name, str(bold))
    pdfmetrics.registerFont(regular_font)
    pdfmetrics.registerFont(bold_font)
    _keep_subsets(regular_name)
    _keep_subsets(bold_name)
    # A character counts as drawable only when both weights have a glyph for it.
    coverage = frozenset(regular_font.face.charToGlyph) & frozenset(
        bold_font.face.charToGlyph
    )
    return _Fonts(regular_name, bold_name, coverage)


# Font subsets a process keeps per font face. With reportlab's ASCII-readable
# subsets (the default), code points 32 to 127 sit in fixed places of subset 0, so
# every label whose text is ASCII embeds the same subset and shares one entry.
FONT_SUBSETS_MAX = 64


class _SubsetKeeper:
    """Makes a font face build each distinct font subset once per process.

    For every PDF, reportlab cuts a TrueType subset of the glyphs the document uses
    out of the font and compresses it, which took most of a label's rendering time.
    Both steps depend only on the face and the subset's code points, so a kept
    subset gives the same bytes as a new one.
    """

    def __init__(self, face: TTFontFace) -> None:
        self.face = face
        self._build_subset = face.makeSubset
        self._add_subset_objects = face.addSubsetObjects
        self.kept = lru_cache(maxsize=FONT_SUBSETS_MAX)(self._build)
        face.makeSubset = self.make_subset
        face.addSubsetObjects = self.add_subset_objects

    def _build(self, code_points: tuple[int, ...]) -> tuple[bytes, bytes]:
        data = self._build_subset(list(code_points))
        return data, pdfdoc.PDFZCompress.encode(data)

    def make_subset(self, subset: list[int]) -> bytes:
        return self.kept(tuple(subset))[0]

    def add_subset_objects(self, doc: Any, fontname: str, subset: list[int]) -> Any:
        descriptor = self._add_subset_objects(doc, fontname, subset)
        if doc.compression:
            _use_compressed(doc, descriptor, self.kept(tuple(subset))[1])
        return descriptor


def _keep_subsets(font_name: str) -> None:
    """Give the face of the registered font `font_name` a subset keeper, once.

    reportlab (5.1) ignores a TrueType font registered under a name already taken,
    and resolves a new name whose face was registered before to the earlier font.
    So the keeper goes on the face that the name resolves to.
    """
    face = pdfmetrics.getFont(font_name).face
    keeper = next((kept for kept in SUBSET_KEEPERS.values() if kept.face is face), None)
    SUBSET_KEEPERS[font_name] = keeper or _SubsetKeeper(face)


def _use_compressed(doc: Any, descriptor: Any, compressed: bytes) -> None:
    """Put the kept compressed bytes in the font file stream of `descriptor`.

    reportlab writes a stream whose dictionary names its Filter as it is, so the
    stream is not compressed again when the document is saved.
    """
    font_file = doc.idToObject[doc.idToObject[descriptor.name].dict["FontFile2"].name]
    font_file.content = compressed
    font_file.dictionary["Filter"] = pdfdoc.PDFArray(
        [pdfdoc.PDFName(pdfdoc.PDFZCompress.pdfname)]
    )
