"""Load an order for a request: scope check first, then project or secret match."""

from __future__ import annotations

import hmac
import uuid

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from orderdesk.auth.dependencies import count_request, require_key_scope
from orderdesk.auth.scopes import CLIENT_SECRET_SCOPES
from orderdesk.auth.services import KeyPrincipal, Principal, SecretPrincipal
from orderdesk.errors import Forbidden, NotFound, Unauthorized
from orderdesk.orders.models import Order


def order_not_found(order_id: str) -> NotFound:
    return NotFound(
        f"No order {order_id!r} exists in this project. Check the orderId.",
        code="order_not_found",
    )


def invalid_client_secret() -> Unauthorized:
    return Unauthorized(
        "The client secret in Authorization does not belong to this order. "
        "Use the clientSecret returned when the order was created.",
        code="invalid_client_secret",
    )


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def load_order(
    session: Session,
    principal: Principal,
    order_id: str,
    scope: str,
    *,
    request: Request | None = None,
    for_update: bool = False,
    line_items: bool = True,
) -> Order:
    """Return the order the principal may act on with `scope`.

    A key of another project gets 404, like an unknown or malformed id, so ids cannot
    be probed. A client secret works for its own order only, with read and update.
    With `line_items=False` the line items are loaded only if they are read, which
    saves a query for routes that do not need them.
    """
    if isinstance(principal, KeyPrincipal):
        require_key_scope(principal, scope)
        order = _get(session, order_id, for_update, line_items)
        if order is None or order.project_id != principal.project_id:
            raise order_not_found(order_id)
        return order
    if scope not in CLIENT_SECRET_SCOPES:
        require_key_scope(principal, scope)
    order = _get(session, order_id, for_update, line_items)
    if order is None or not _secret_matches(principal, order):
        raise invalid_client_secret()
    if request is not None:
        count_request(request, order.project_id)
    return order


def _secret_matches(principal: SecretPrincipal, order: Order) -> bool:
    return hmac.compare_digest(principal.secret_hash, order.client_secret_hash)


def _get(
    session: Session, order_id: str, for_update: bool, line_items: bool = True
) -> Order | None:
    if not is_uuid(order_id):
        return None
    query = select(Order).where(Order.id == order_id)
    if not line_items:
        query = query.options(lazyload(Order.line_items))
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def require_project_key(principal: Principal, scope: str) -> KeyPrincipal:
    """For routes about no single order (create, list): a server key with `scope`."""
    if isinstance(principal, SecretPrincipal):
        raise Forbidden(
            f"This request requires an API key with the {scope} scope; a client "
            "secret only works on its own order."
        )
    return require_key_scope(principal, scope)
