"""Errors of return labels. All are LabelError, a 503 when one reaches the API."""

from __future__ import annotations

from orderdesk.errors import ServiceUnavailable


class LabelError(ServiceUnavailable):
    """A return label could not be issued."""

    code = "return_label_failed"


class LabelConfigurationError(LabelError):
    code = "return_label_misconfigured"


class MissingBuyerAddress(LabelError):
    status_code = 409
    code = "missing_physical_address"


class LabelProviderError(LabelError):
    """The label provider failed or rejected a request.

    `retryable` is False when repeating the same request cannot succeed, such as a
    rejected address or a missing rate.
    """

    code = "return_label_provider_failed"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        provider_code: str | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.provider_code = provider_code
        self.retryable = retryable
