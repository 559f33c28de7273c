"""Carrier tracking feeds: one adapter per provider, chosen by name.

The package imports no adapter until one is asked for, so modules that only need
carrier names (tracking URLs, the shipment services) stay free of import cycles.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orderdesk.shipping.carriers.base import CarrierAdapter

PROVIDERS = ("easypost", "shippo", "aftership")


def get_adapter(provider: str) -> CarrierAdapter | None:
    """Return the adapter for a provider name, or None for an unknown name."""
    if provider not in PROVIDERS:
        return None
    module = import_module(f"orderdesk.shipping.carriers.{provider}")
    adapter: CarrierAdapter = module.ADAPTER
    return adapter
