"""Orders API: create, get, list and edit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from orderdesk.auth.dependencies import (
    CurrentPrincipal,
    DbSession,
    authenticated_read,
)
from orderdesk.http import (
    RawBody,
    check_json_content_type,
    json_response,
    parse_json_body,
    raw_json,
)
from orderdesk.openapi import error_responses
from orderdesk.orders import services
from orderdesk.orders.access import load_order, require_project_key
from orderdesk.orders.schemas import OrderCreate, OrderUpdate
from orderdesk.orders.serialization import serialize_order

router = APIRouter(prefix="/api/2022-06-09/orders", tags=["orders"])


def get_chains(request: Request) -> Any:
    return request.app.state.runtime.chains


Chains = Annotated[Any, Depends(get_chains)]


@router.post(
    "",
    status_code=201,
    openapi_extra=raw_json(OrderCreate),
    responses={
        200: {
            "description": "A draft: the priced order, not stored, with `orderId` "
            "and `clientSecret` null.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **error_responses(400, 401, 403, 413, 415, 429, 503),
    },
)
def create_order(
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
    chains: Chains,
) -> JSONResponse:
    """Create an order and quote it from the catalog."""
    key = require_project_key(principal, "orders.create")
    body = parse_json_body(request, OrderCreate, raw)
    settings = request.app.state.settings
    order, secret = services.create_order(session, settings, chains, key, body)
    if secret is None:
        # A draft is an unsaved preview: it has no id and no client secret.
        preview = serialize_order(order, chains)
        preview["orderId"] = None
        return JSONResponse({"clientSecret": None, "order": preview}, status_code=200)
    session.commit()
    return JSONResponse(
        {"clientSecret": secret, "order": serialize_order(order, chains)},
        status_code=201,
    )


@router.get("", responses=error_responses(400, 401, 403, 429, 503))
def list_orders(
    principal: CurrentPrincipal,
    session: DbSession,
    chains: Chains,
    limit: Annotated[
        int, Query(ge=1, le=services.MAX_PAGE_SIZE)
    ] = services.DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """List the project's orders, newest first."""
    key = require_project_key(principal, "orders.read")
    page = services.list_orders(session, key.project_id, limit, cursor)
    return {
        "data": [serialize_order(order, chains) for order in page.orders],
        "nextCursor": page.next_cursor,
        "previousCursor": page.previous_cursor,
    }


@router.get(
    "/{order_id}",
    response_model=dict[str, Any],
    responses=error_responses(401, 403, 404, 429, 503),
)
def get_order(order_id: str, request: Request) -> Response:
    """Return one order."""
    # A polled read: one thread-pool call and no response model check.
    with authenticated_read(request) as (session, principal):
        order = load_order(session, principal, order_id, "orders.read", request=request)
        return json_response(serialize_order(order, get_chains(request)))


@router.patch(
    "/{order_id}",
    openapi_extra=raw_json(OrderUpdate),
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
def update_order(
    order_id: str,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
    chains: Chains,
) -> dict[str, Any]:
    """Change the recipient, payment or locale of an unpaid order, and re-quote it."""
    order = load_order(
        session, principal, order_id, "orders.update", request=request, for_update=True
    )
    check_json_content_type(request)
    services.reject_line_items_edit(raw)
    body = parse_json_body(request, OrderUpdate, raw)
    services.update_order(
        session, request.app.state.settings, chains, order, body, principal.actor
    )
    session.commit()
    return serialize_order(order, chains)
