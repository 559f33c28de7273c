"""The OpenAPI description of error responses, shared by every API router.

Every error the API returns has one body (see `orderdesk.errors`): `ErrorBody`
below describes it. Routers list the statuses an operation can return with
`responses=error_responses(...)`, and `install_openapi` removes the 422 response
that FastAPI adds on its own, because invalid input gets 400 in this API, never 422.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

# Snake case, as API.md requires of every error code.
ERROR_CODE_PATTERN = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"


class ErrorDetail(BaseModel):
    """One invalid field of a 400 response."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="Dotted path of the field, or `body`.")
    message: str = Field(description="What is wrong with the field's value.")


class ErrorBody(BaseModel):
    """The body of every error response. Fields other than `error`, `message` and
    `code` appear only with the codes named in their descriptions."""

    model_config = ConfigDict(extra="forbid", title="Error")

    error: Literal[True]
    message: str = Field(
        description="A sentence that names the rejected value and the fix."
    )
    code: str = Field(
        pattern=ERROR_CODE_PATTERN,
        description="A stable snake_case code, such as `order_not_found`.",
    )
    details: list[ErrorDetail] | SkipJsonSchema[None] = Field(
        default=None, description="400 with invalid input: each invalid field."
    )
    refund: dict[str, Any] | SkipJsonSchema[None] = Field(
        default=None,
        description="409 `refund_already_requested`: the request blocking a new one.",
    )
    package: dict[str, Any] | SkipJsonSchema[None] = Field(
        default=None,
        description="409 `package_exists`: the recorded package, when it belongs to "
        "the same order.",
    )
    current_status: str | SkipJsonSchema[None] = Field(
        default=None,
        alias="currentStatus",
        description="409 `invalid_transition`: the refund's status.",
    )
    delivered_at: str | SkipJsonSchema[None] = Field(
        default=None,
        alias="deliveredAt",
        description="409 `return_window_expired`: when the line item was delivered.",
    )
    return_window_closed_at: str | SkipJsonSchema[None] = Field(
        default=None,
        alias="returnWindowClosedAt",
        description="409 `return_window_expired`: when the return window closed.",
    )
    return_received_at: str | SkipJsonSchema[None] = Field(
        default=None,
        alias="returnReceivedAt",
        description="409 `return_already_received`: when the return was received.",
    )


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The input is invalid. The message names the value; `details` lists each "
    "invalid field of a body or query.",
    401: "The credential is missing, malformed, unknown, revoked, of another "
    "environment, or a client secret of another order; or a carrier signature is "
    "invalid.",
    403: "The credential lacks the scope this operation needs; the message names it.",
    404: "No such object in the caller's project. A malformed id and an object of "
    "another project get the same response.",
    409: "The object's state does not allow the request; `code` names the conflict.",
    413: "The request body is larger than 64 KiB.",
    415: "The request body is not sent as application/json.",
    429: "The project's rate limit is used up. Retry after `Retry-After` seconds.",
    503: "The database, the chain node or the label provider is unreachable or busy. "
    "Retry later, after `Retry-After` seconds when it is sent.",
}

_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1},
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """Describe the error responses of an operation, for a route's `responses=`."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status_code in status_codes:
        response: dict[str, Any] = {
            "model": ErrorBody,
            "description": ERROR_DESCRIPTIONS[status_code],
        }
        if status_code == 429:
            response["headers"] = {"Retry-After": {**_RETRY_AFTER, "required": True}}
        elif status_code == 503:
            response["headers"] = {"Retry-After": _RETRY_AFTER}
        responses[status_code] = response
    return responses


def optional_empty_body() -> dict[str, Any]:
    """Return the `openapi_extra` of actions that take no fields: no body or `{}`."""
    return {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "maxProperties": 0,
                    }
                }
            },
        }
    }


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` leave out the 422 responses that FastAPI adds by default
    and move the request bodies' nested models into `components/schemas`."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # FastAPI caches the document on the first call, so this edits the copy
            # that every later call returns.
            document = build()
            drop_validation_error_responses(document)
            hoist_body_definitions(document)
        return build()

    app.openapi = openapi  # type: ignore[method-assign]


def drop_validation_error_responses(document: dict[str, Any]) -> None:
    """Remove FastAPI's own 422 response and its schemas from an OpenAPI document.

    The app's handler turns every request validation error into a 400 with
    `ErrorBody`, so a 422 with `HTTPValidationError` never reaches a client.
    """
    fastapi_ref = "#/components/schemas/HTTPValidationError"
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            schema = (
                responses.get("422", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema", {})
            )
            if schema.get("$ref") == fastapi_ref:
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    if "#/components/schemas/ValidationError" not in json.dumps(document):
        schemas.pop("ValidationError", None)


def hoist_body_definitions(document: dict[str, Any]) -> None:
    """Move the `$defs` of request body schemas into `components/schemas`.

    `raw_json` bodies are pydantic JSON schemas, whose nested models are `$defs`
    referenced as `#/$defs/Name`. In an OpenAPI document such a reference resolves
    against the document's root, where there is no `$defs`, so it is rewritten to
    `#/components/schemas/Name`. Two different models of one name raise ValueError.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                schema = media.get("schema", {})
                definitions = schema.pop("$defs", {})
                for name, definition in definitions.items():
                    if schemas.setdefault(name, definition) != definition:
                        raise ValueError(f"two request models are named {name}")
                _rewrite_refs(schema)
    for definition in schemas.values():
        _rewrite_refs(definition)


def _rewrite_refs(node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
        for value in node.values():
            _rewrite_refs(value)
    elif isinstance(node, list):
        for value in node:
            _rewrite_refs(value)
