"""Webhook endpoints API (scope webhooks.manage, server API keys only).

Secrets appear in full only in the replies of create and rotate-secret. An endpoint
or delivery of another project gets 404, like an unknown or malformed id.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from orderdesk.auth.dependencies import CurrentPrincipal, DbSession, require_key_scope
from orderdesk.auth.services import KeyPrincipal, Principal
from orderdesk.http import RawBody, parse_json_body, raw_json
from orderdesk.openapi import error_responses, optional_empty_body
from orderdesk.webhooks import services
from orderdesk.webhooks.exceptions import DeliveryNotFound
from orderdesk.webhooks.schemas import (
    EmptyBody,
    EndpointCreate,
    EndpointUpdate,
    delivery_body,
    endpoint_body,
)

router = APIRouter(prefix="/api/unstable/webhooks", tags=["webhooks"])

SCOPE = "webhooks.manage"
EndpointId = Annotated[str, Path(alias="endpointId")]
DeliveryId = Annotated[str, Path(alias="deliveryId")]


def _key(principal: Principal) -> KeyPrincipal:
    return require_key_scope(principal, SCOPE)


def _check_empty_body(request: Request, raw: bytes) -> None:
    """Accept no body or `{}` for actions that take no input."""
    if raw:
        parse_json_body(request, EmptyBody, raw)


@router.post(
    "",
    status_code=201,
    openapi_extra=raw_json(EndpointCreate),
    responses=error_responses(400, 401, 403, 409, 413, 415, 429, 503),
)
def create_endpoint(
    request: Request, raw: RawBody, principal: CurrentPrincipal, session: DbSession
) -> JSONResponse:
    """Register an endpoint. The reply contains its secret, shown only this once."""
    key = _key(principal)
    body = parse_json_body(request, EndpointCreate, raw)
    endpoint, secret = services.create_endpoint(
        session,
        request.app.state.settings,
        key.project_id,
        key.actor,
        url=body.url,
        events=body.events,
        description=body.description,
    )
    reply = endpoint_body(endpoint, secret=secret)
    session.commit()
    return JSONResponse(reply, status_code=201)


@router.get("", responses=error_responses(401, 403, 429, 503))
def list_endpoints(principal: CurrentPrincipal, session: DbSession) -> dict[str, Any]:
    """List the project's endpoints, oldest first, without secrets."""
    key = _key(principal)
    endpoints = services.list_endpoints(session, key.project_id)
    return {"data": [endpoint_body(endpoint) for endpoint in endpoints]}


@router.get("/{endpointId}", responses=error_responses(401, 403, 404, 429, 503))
def get_endpoint(
    endpoint_id: EndpointId, principal: CurrentPrincipal, session: DbSession
) -> dict[str, Any]:
    """Return one endpoint without its secret."""
    key = _key(principal)
    return endpoint_body(
        services.require_endpoint(session, key.project_id, endpoint_id)
    )


@router.patch(
    "/{endpointId}",
    openapi_extra=raw_json(EndpointUpdate),
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 503),
)
def update_endpoint(
    endpoint_id: EndpointId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> dict[str, Any]:
    """Change the URL, event types or description; `description: null` clears it."""
    key = _key(principal)
    endpoint = services.require_endpoint(
        session, key.project_id, endpoint_id, for_update=True
    )
    body = parse_json_body(request, EndpointUpdate, raw)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    services.update_endpoint(
        session, request.app.state.settings, endpoint, changes, key.actor
    )
    reply = endpoint_body(endpoint)
    session.commit()
    return reply


@router.delete(
    "/{endpointId}",
    status_code=204,
    responses=error_responses(401, 403, 404, 429, 503),
)
def delete_endpoint(
    endpoint_id: EndpointId, principal: CurrentPrincipal, session: DbSession
) -> Response:
    """Delete the endpoint and its delivery history; pending deliveries stop."""
    key = _key(principal)
    endpoint = services.require_endpoint(
        session, key.project_id, endpoint_id, for_update=True
    )
    services.delete_endpoint(session, endpoint, key.actor)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/{endpointId}/rotate-secret",
    openapi_extra=optional_empty_body(),
    responses=error_responses(400, 401, 403, 404, 413, 415, 429, 503),
)
def rotate_secret(
    endpoint_id: EndpointId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> dict[str, Any]:
    """Replace the secret. The reply contains the new one, shown only this once.
    The old one keeps signing for 24 hours."""
    key = _key(principal)
    endpoint = services.require_endpoint(
        session, key.project_id, endpoint_id, for_update=True
    )
    _check_empty_body(request, raw)
    secret = services.rotate_secret(session, endpoint, key.actor)
    reply = endpoint_body(endpoint, secret=secret)
    session.commit()
    return reply


@router.get(
    "/{endpointId}/deliveries",
    responses=error_responses(400, 401, 403, 404, 429, 503),
)
def list_deliveries(
    endpoint_id: EndpointId,
    principal: CurrentPrincipal,
    session: DbSession,
    limit: Annotated[
        int, Query(ge=1, le=services.MAX_PAGE_SIZE)
    ] = services.DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
) -> dict[str, Any]:
    """List the endpoint's deliveries, newest first, each with its attempts."""
    key = _key(principal)
    endpoint = services.require_endpoint(session, key.project_id, endpoint_id)
    page = services.list_deliveries(session, endpoint, limit, cursor, status)
    return {
        "data": [delivery_body(delivery) for delivery in page.deliveries],
        "nextCursor": page.next_cursor,
        "previousCursor": page.previous_cursor,
    }


@router.post(
    "/{endpointId}/deliveries/{deliveryId}/resend",
    status_code=202,
    openapi_extra=optional_empty_body(),
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
def resend_delivery(
    endpoint_id: EndpointId,
    delivery_id: DeliveryId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> JSONResponse:
    """Send a delivered or failed delivery again, with a fresh retry schedule."""
    key = _key(principal)
    endpoint = services.require_endpoint(session, key.project_id, endpoint_id)
    delivery = services.get_delivery(session, endpoint, delivery_id, for_update=True)
    if delivery is None:
        raise DeliveryNotFound(delivery_id, endpoint.id)
    _check_empty_body(request, raw)
    services.resend_delivery(session, delivery, key.actor)
    reply = delivery_body(delivery)
    session.commit()
    return JSONResponse(reply, status_code=202)
