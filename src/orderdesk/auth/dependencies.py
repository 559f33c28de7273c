"""FastAPI dependencies that authenticate a request and check its scope."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from orderdesk.auth.services import (
    KeyPrincipal,
    Principal,
    SecretPrincipal,
    authenticate_key,
    hash_secret,
)
from orderdesk.errors import Forbidden, Unauthorized
from orderdesk.http import get_session, request_session

DbSession = Annotated[Session, Depends(get_session)]
# Set in the ASGI scope by a lean path that counted the request against the rate
# limit before it handed the request to the router, which then does not count it.
RATE_COUNTED = "orderdesk.rate_counted"


def request_kind(request: Request) -> str:
    return "read" if request.method in ("GET", "HEAD") else "write"


def get_principal(request: Request) -> Principal:
    """Authenticate by X-API-KEY, else by an order's client secret in Authorization."""
    api_key = request.headers.get("x-api-key")
    if api_key:
        principal = authenticate_key(
            request.app.state.session_factory,
            request.app.state.settings,
            api_key.strip(),
        )
        count_request(request, principal.project_id)
        return principal
    secret = request.headers.get("authorization")
    if secret:
        return SecretPrincipal(hash_secret(secret.strip()))
    raise Unauthorized(
        "The request has no credentials. Send an API key in the X-API-KEY header."
    )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def count_request(request: Request, project_id: str) -> None:
    """Count the request against the project's rate limit, once; raise 429 over it."""
    if request.scope.get(RATE_COUNTED):
        return
    request.app.state.rate_limiter.hit(project_id, request_kind(request))


@contextmanager
def authenticated_read(request: Request) -> Iterator[tuple[Session, Principal]]:
    """Open the request's session and authenticate it, as the DbSession and
    CurrentPrincipal dependencies do, inside the route's own thread-pool call."""
    with request_session(request) as session:
        yield session, get_principal(request)


def require_key_scope(principal: Principal, scope: str) -> KeyPrincipal:
    """Require a server key holding `scope` (client secrets never pass)."""
    if isinstance(principal, SecretPrincipal):
        raise Forbidden(
            f"This request requires an API key with the {scope} scope; a client "
            "secret cannot make it."
        )
    if scope not in principal.scopes:
        raise Forbidden(
            f"The API key lacks the {scope} scope. Create a key with --scopes {scope}."
        )
    return principal
