"""A local label is rendered once per process: issuing it, then attaching it."""

from __future__ import annotations

from tests.labels.test_providers import RECIPIENT, REFUND_ID, Item, local_settings

from orderdesk.labels.providers import (
    create_return_label,
    rendered_label,
    reprint_return_label,
)


def test_reprint_reuses_rendered_pdf() -> None:
    rendered_label.cache_clear()
    settings = local_settings()
    label = create_return_label(REFUND_ID, RECIPIENT, Item("Lamp", 2), settings)
    after_issue = rendered_label.cache_info()
    pdf = reprint_return_label(
        REFUND_ID,
        label.carrier,
        label.tracking_number,
        RECIPIENT,
        Item("Lamp", 2),
        settings,
    )
    after_reprint = rendered_label.cache_info()
    assert pdf == label.pdf_bytes
    assert after_issue.misses == 1
    assert after_reprint.misses == 1
    assert after_reprint.hits == after_issue.hits + 1


def test_cleared_cache_renders_same_bytes() -> None:
    settings = local_settings()
    label = create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    rendered_label.cache_clear()
    again = create_return_label(REFUND_ID, RECIPIENT, Item(), settings)
    assert rendered_label.cache_info().misses == 1
    assert again.pdf_bytes == label.pdf_bytes
