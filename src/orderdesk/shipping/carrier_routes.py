"""Carrier tracking webhooks: `POST /webhooks/carriers/{easypost|shippo|aftership}`.

The provider's signature is checked when its secret is configured; a bad or missing
one gets 401 and changes nothing. The provider's adapter parses the body, and a body
that is not JSON or not shaped as documented gets 400. Each event is then recorded on
the package with that tracking number. The reply is 200 with counts, also for tracking
numbers no package has, so the provider stops retrying them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from orderdesk.auth.dependencies import DbSession
from orderdesk.db.base import utcnow
from orderdesk.errors import InvalidInput, NotFound
from orderdesk.http import RawBody, check_json_content_type
from orderdesk.openapi import error_responses
from orderdesk.shipping.carriers import PROVIDERS, get_adapter
from orderdesk.shipping.carriers.base import SignedRequest
from orderdesk.shipping.carriers.ingest import carrier_secrets, record_carrier_updates

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/webhooks/carriers", tags=["carrier webhooks"])

Provider = Annotated[str, Path(description="easypost, shippo or aftership")]

# Providers already warned about running without a secret, so the warning is
# logged once per process, not once per request.
_UNSIGNED_WARNED: set[str] = set()


@router.post(
    "/{provider}",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "The provider's tracking webhook payload.",
        }
    },
    responses=error_responses(400, 401, 404, 413, 415, 503),
)
def receive_carrier_webhook(
    provider: Provider, request: Request, raw: RawBody, session: DbSession
) -> JSONResponse:
    """Record a carrier's tracking events on the matching package."""
    adapter = get_adapter(provider)
    if adapter is None:
        raise NotFound(
            f"No carrier webhook exists for {provider[:40]!r}. Use one of "
            f"{', '.join(PROVIDERS)}.",
            code="unknown_carrier_provider",
        )
    signed = SignedRequest(raw, request.headers, request.query_params, utcnow())
    checked = adapter.verify(signed, carrier_secrets(request.app.state.settings))
    if not checked and provider not in _UNSIGNED_WARNED:
        _UNSIGNED_WARNED.add(provider)
        log.warning("carrier_webhook_unverified", provider=provider)
    check_json_content_type(request)
    updates = adapter.parse(_decode(raw), signed.now)
    result = record_carrier_updates(session, provider, updates)
    session.commit()
    log.info("carrier_webhook_received", provider=provider, **result.body())
    return JSONResponse(result.body())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(
            "The request body is not valid UTF-8 JSON. Send the provider's payload.",
            code="invalid_json",
        ) from exc
