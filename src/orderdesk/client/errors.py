"""Exceptions raised by the SDK, one class per HTTP status the API uses.

Every class derives from `OrderDeskError`. An error built from a response carries the
status, the API's `code`, `message` and `details`, and the raw body text. It also
carries the parsed JSON body as `payload`, which keeps fields beyond the standard
ones: a 409 `refund_already_requested` body also contains the existing refund.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from orderdesk.client._retry import parse_retry_after


class ErrorDetail(BaseModel):
    """One invalid input field of a 400 reply: its path and what is wrong with it."""

    model_config = ConfigDict(extra="allow")

    field: str = ""
    message: str = ""


class OrderDeskError(Exception):
    """Base of every SDK error. `status_code` is None when no response arrived."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        details: list[ErrorDetail] | None = None,
        body: str = "",
        payload: Any = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.details = details or []
        self.body = body
        self.payload = payload
        self.response = response

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"{self.status_code} {self.code or 'error'}: {self.message}"


class BadRequest(OrderDeskError):
    """400: the request is invalid; `details` lists the fields to fix."""


class Unauthorized(OrderDeskError):
    """401: the API key or client secret is missing, unknown or revoked."""


class Forbidden(OrderDeskError):
    """403: the API key lacks the scope the request needs."""


class NotFound(OrderDeskError):
    """404: no such order, refund, package or endpoint in this project."""


class Conflict(OrderDeskError):
    """409: the object's state does not allow the request; `code` names the reason."""


class PayloadTooLarge(OrderDeskError):
    """413: the request body is over the server's size limit."""


class UnsupportedMediaType(OrderDeskError):
    """415: the request body is not `application/json`."""


class RateLimited(OrderDeskError):
    """429: the project sent too many requests. `retry_after` is in seconds, or None
    when the reply has no usable `Retry-After` header."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(OrderDeskError):
    """5xx: the server failed. A 500 is a server bug worth reporting."""


class ServiceUnavailable(ServerError):
    """503: the server's database or a dependency is unreachable for now."""


class ConnectionFailed(OrderDeskError):
    """No response arrived: the connection failed or timed out. The httpx error is
    the `__cause__`."""


class InvalidResponse(OrderDeskError):
    """A successful reply whose body the SDK could not decode into its model."""


STATUS_ERRORS: dict[int, type[OrderDeskError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status_code: int) -> type[OrderDeskError]:
    """Return the exception class for an error status."""
    if status_code in STATUS_ERRORS:
        return STATUS_ERRORS[status_code]
    if status_code >= 500:
        return ServerError
    return OrderDeskError


def error_from_response(response: httpx.Response) -> OrderDeskError:
    """Build the exception for an error reply, whatever its body holds."""
    body = response.text
    payload = _json_or_none(body)
    fields = payload if isinstance(payload, dict) else {}
    message = fields.get("message")
    if not isinstance(message, str) or not message:
        message = _fallback_message(response, body)
    code = fields.get("code")
    arguments: dict[str, Any] = {
        "status_code": response.status_code,
        "code": code if isinstance(code, str) else None,
        "details": _details(fields.get("details")),
        "body": body,
        "payload": payload,
        "response": response,
    }
    cls = error_class(response.status_code)
    if cls is RateLimited:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(message, retry_after=retry_after, **arguments)
    return cls(message, **arguments)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _details(value: Any) -> list[ErrorDetail]:
    if not isinstance(value, list):
        return []
    details = []
    for item in value:
        try:
            details.append(ErrorDetail.model_validate(item))
        except ValidationError:
            details.append(ErrorDetail(message=str(item)))
    return details


def _fallback_message(response: httpx.Response, body: str) -> str:
    """Describe a reply without the API's error body, such as a proxy's HTML page."""
    reason = response.reason_phrase or "error"
    snippet = " ".join(body.split())[:200]
    try:
        where = f" from {response.request.method} {response.request.url.path}"
    except RuntimeError:  # a response built by hand has no request
        where = ""
    if snippet:
        return f"HTTP {response.status_code} {reason}{where}: {snippet}"
    return f"HTTP {response.status_code} {reason}{where} with an empty body"
