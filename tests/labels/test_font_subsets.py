"""Font subsets kept across labels give the bytes of a label rendered without them."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import replace

import pytest
from tests.labels.test_pdf import BUYER, DEJAVU, LABEL, page_text

from orderdesk.labels import pdf
from orderdesk.labels.pdf import SUBSET_KEEPERS, render_return_label

pytestmark = pytest.mark.skipif(DEJAVU is None, reason="no DejaVu Sans installed")

CYRILLIC_BUYER = replace(BUYER, name="Иван Петров", city="Москва")
OTHER_ASCII = replace(
    LABEL,
    rma="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    tracking_number="9202000000000000000017",
    item_name="Linen Napkins",
)


# Renders a pickled label from stdin in a new process whose fonts keep no subsets,
# as reportlab alone renders it, and writes the PDF to stdout.
RENDER_UNKEPT = """
import pickle, sys
from orderdesk.labels import pdf
pdf._keep_subsets = lambda font_name: None
label, font_path = pickle.load(sys.stdin.buffer)
sys.stdout.buffer.write(pdf.render_return_label(label, font_path=font_path))
"""


def render_without_keeping(label: pdf.ReturnLabel) -> bytes:
    result = subprocess.run(
        [sys.executable, "-c", RENDER_UNKEPT],
        input=pickle.dumps((label, DEJAVU)),
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def render(label: pdf.ReturnLabel) -> bytes:
    return render_return_label(label, font_path=DEJAVU)


@pytest.mark.parametrize(
    "label",
    [LABEL, OTHER_ASCII, replace(LABEL, sender=CYRILLIC_BUYER)],
    ids=["ascii", "other-ascii", "cyrillic"],
)
def test_kept_subset_gives_same_bytes(label: pdf.ReturnLabel) -> None:
    # Fill the keepers first, so the label below reuses at least subset 0.
    render(LABEL)
    kept = render(label)
    assert kept == render_without_keeping(label)


def test_ascii_labels_share_subsets() -> None:
    fonts = pdf._load_fonts(str(DEJAVU))
    keeper = SUBSET_KEEPERS[fonts.regular]
    render(LABEL)
    before = keeper.kept.cache_info()
    render(OTHER_ASCII)
    after = keeper.kept.cache_info()
    assert after.misses == before.misses
    assert after.hits > before.hits


def test_cyrillic_name_prints_with_kept_subsets() -> None:
    render(LABEL)
    text = page_text(render(replace(LABEL, sender=CYRILLIC_BUYER)))
    assert "Иван Петров" in text
    assert "Москва" in text
