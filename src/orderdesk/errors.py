"""Domain errors with a stable code, turned into the API's error body at the edge."""

from __future__ import annotations

from typing import Any


class OrderDeskError(Exception):
    """Base of every error a caller can see. Subclasses set the status and code."""

    status_code = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, str]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "error": True,
            "message": self.message,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        body.update(self.extra)
        return body


class InvalidInput(OrderDeskError):
    status_code = 400
    code = "invalid_request"


class Unauthorized(OrderDeskError):
    status_code = 401
    code = "unauthorized"


class Forbidden(OrderDeskError):
    status_code = 403
    code = "missing_scope"


class NotFound(OrderDeskError):
    status_code = 404
    code = "not_found"


class Conflict(OrderDeskError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(OrderDeskError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(OrderDeskError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimited(OrderDeskError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(OrderDeskError):
    status_code = 503
    code = "service_unavailable"
