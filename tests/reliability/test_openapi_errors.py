"""The OpenAPI document describes the error responses of every operation.

Each operation lists the error statuses it can return, each with the API's error
body. No operation lists FastAPI's 422, which the app never sends, and every `$ref`
in the document resolves. The error schema accepts the bodies the domain errors
really produce.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from tests.conftest import make_settings

from orderdesk.app import create_app
from orderdesk.db.base import utcnow
from orderdesk.errors import InvalidInput, OrderDeskError, Unauthorized
from orderdesk.http import invalid_body
from orderdesk.refunds.exceptions import (
    InvalidTransition,
    RefundAlreadyRequested,
    ReturnAlreadyReceived,
    ReturnWindowExpired,
)
from orderdesk.shipping.exceptions import PackageExists

ERROR_REF = "#/components/schemas/ErrorBody"
# Routes that take no API key: the carrier webhooks and the development devnet.
KEYLESS_PREFIXES = ("/webhooks/carriers/", "/devnet/")
# JSON-RPC returns an error object in a 200 for invalid input.
NO_INPUT_ERRORS = {("post", "/devnet/rpc")}


@pytest.fixture
def document(sqlite_url: str, tmp_path: Path) -> dict[str, Any]:
    return create_app(make_settings(sqlite_url, tmp_path)).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def required_errors(method: str, path: str, operation: dict[str, Any]) -> set[str]:
    """The error statuses the operation must document, from its shape."""
    required = set()
    locations = {parameter["in"] for parameter in operation.get("parameters", [])}
    if (method, path) not in NO_INPUT_ERRORS:
        if "requestBody" in operation:
            required |= {"400", "413", "415"}
        if "query" in locations:
            required.add("400")
    if "requestBody" in operation:
        required.add("413")
    if "path" in locations:
        required.add("404")
    if not path.startswith(KEYLESS_PREFIXES):
        required |= {"401", "403", "429", "503"}
    return required


def test_operations_list_their_errors(document: dict[str, Any]) -> None:
    missing = {
        f"{method.upper()} {path}": sorted(
            required_errors(method, path, operation) - set(operation["responses"])
        )
        for method, path, operation in operations(document)
    }
    assert {label: codes for label, codes in missing.items() if codes} == {}


def test_error_responses_use_error_body(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            label = f"{method.upper()} {path} {status}"
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, label
            assert response["description"], label


def test_rate_limit_documents_retry_after(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        limited = operation["responses"].get("429")
        if limited is not None:
            header = limited["headers"]["Retry-After"]
            assert header["required"] is True, f"{method.upper()} {path}"


def test_no_validation_error_422(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        assert "422" not in operation["responses"], f"{method.upper()} {path}"
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    refs = set(_refs(document))
    assert ERROR_REF in refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert (
            ref.removeprefix("#/components/schemas/")
            in (document["components"]["schemas"])
        ), ref


def _error_bodies() -> list[dict[str, Any]]:
    now = utcnow()
    refund = {"refundId": "r-1", "status": "refund-request-initiated"}
    errors: list[OrderDeskError] = [
        InvalidInput("The limit is invalid."),
        invalid_body([{"field": "lineItems.0.quantity", "message": "too large"}]),
        Unauthorized("The API key has been revoked.", code="key_revoked"),
        RefundAlreadyRequested(0, refund),
        InvalidTransition("r-1", "refund-request-rejected", "accepted", []),
        ReturnWindowExpired(0, now - timedelta(days=31), now - timedelta(days=1)),
        ReturnAlreadyReceived("r-1", now),
        PackageExists("UPS", "1Z999", {"packageId": "p-1"}),
    ]
    return [error.body() for error in errors]


@pytest.mark.parametrize("body", _error_bodies(), ids=lambda body: body["code"])
def test_error_schema_accepts_real_bodies(
    document: dict[str, Any], body: dict[str, Any]
) -> None:
    schema = {"$ref": ERROR_REF, "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema)
    errors = [error.message for error in validator.iter_errors(body)]
    assert errors == []


def test_error_schema_rejects_other_bodies(document: dict[str, Any]) -> None:
    schema = {"$ref": ERROR_REF, "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema)
    assert not validator.is_valid({"detail": "Not Found"})
    assert not validator.is_valid({"error": True, "message": "x", "code": "Bad Code"})
    assert not validator.is_valid(
        {"error": True, "message": "x", "code": "x", "surprise": 1}
    )
