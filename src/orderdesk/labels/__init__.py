"""Return labels: the 4 x 6 inch PDF and the providers that issue tracking numbers."""

from orderdesk.labels.exceptions import (
    LabelConfigurationError,
    LabelError,
    LabelProviderError,
    MissingBuyerAddress,
)
from orderdesk.labels.pdf import Address, ReturnLabel, render_return_label
from orderdesk.labels.providers import (
    IssuedLabel,
    create_return_label,
    reprint_return_label,
)

__all__ = [
    "Address",
    "IssuedLabel",
    "LabelConfigurationError",
    "LabelError",
    "LabelProviderError",
    "MissingBuyerAddress",
    "ReturnLabel",
    "create_return_label",
    "render_return_label",
    "reprint_return_label",
]
