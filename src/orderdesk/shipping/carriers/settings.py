"""Read the carrier and fulfilment settings from `config.Settings`."""

from __future__ import annotations

from typing import Any


def read_setting(settings: Any, name: str, default: Any = None) -> Any:
    """Return the setting `name`, else `default`. An empty value counts as unset."""
    value: Any = getattr(settings, name, None) if settings is not None else None
    unwrap = getattr(value, "get_secret_value", None)
    if callable(unwrap):
        value = unwrap()
    return default if value in (None, "") else value
