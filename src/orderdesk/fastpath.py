"""A lean path for the three reads that clients poll, in front of the FastAPI router.

`GET /api/unstable/orders/{orderId}/tracking`, `GET /api/unstable/orders/{orderId}/
refunds` (without a query string) and `GET /api/2022-06-09/orders/{orderId}` are
handled here, on the event loop, whenever the reply needs no more than one
primary-key query: the order's access columns and revision (`orders.replies`). The
caller is authenticated as the routes do it, through the API key cache or the
order's client secret, with the same scope, rate limit and error bodies. A 200
reply is then the cached bytes of that order and revision. Only a key lookup that
the key cache misses, and the rate limit count when Redis keeps it, go through the
thread pool.

Anything else goes to the router unchanged, before any side effect here: other
paths and methods, an API key that the key cache does not hold, a reply that is not
cached yet, and a database error. When such a request is one of the three reads,
its 200 body is stored in the cache under the revision read before the router ran.

This middleware sits inside `RequestContextMiddleware`, so requests served here
get the same request id header, access log line and metrics. It sets
`scope["route"]` to the route that the router matched for the first request of the
same read, and until there was one it passes every request of that read on.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import Any

import anyio
import structlog
from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderdesk.auth.dependencies import get_principal, require_key_scope
from orderdesk.auth.services import (
    KeyPrincipal,
    Principal,
    SecretPrincipal,
    authenticate_key,
    find_key,
    hash_secret,
)
from orderdesk.errors import OrderDeskError
from orderdesk.http import error_response, send_json
from orderdesk.orders.access import invalid_client_secret, order_not_found
from orderdesk.orders.replies import (
    ORDER,
    REFUNDS,
    TRACKING,
    OrderAccess,
    OrderAccessReader,
    ReaderBusy,
    ReplyCache,
    is_cacheable,
)

log = structlog.get_logger(__name__)

READ_SCOPE = "orders.read"
_UNSTABLE_PREFIX = "/api/unstable/orders/"
_ORDERS_PREFIX = "/api/2022-06-09/orders/"
# The template of the route each reply kind comes from, for scope["route"].
ROUTE_TEMPLATES = {
    TRACKING: "/api/unstable/orders/{orderId}/tracking",
    REFUNDS: "/api/unstable/orders/{orderId}/refunds",
    ORDER: "/api/2022-06-09/orders/{order_id}",
}
# The ids that `orders.access.is_uuid` accepts: a UUID in its canonical text, as
# str(uuid.UUID(...)) writes it. A regular expression checks that in a fraction of
# the time that parsing takes.
_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


class Replies:
    """The reply cache and access reader of one app, closed with it."""

    def __init__(self, reader: OrderAccessReader, cache: ReplyCache) -> None:
        self.reader = reader
        self.cache = cache

    def close(self) -> None:
        self.reader.close()


def match_read(scope: Scope) -> tuple[str, str] | None:
    """Return (reply kind, order id) when the request is one of the three reads."""
    if scope["method"] != "GET" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if path.startswith(_UNSTABLE_PREFIX):
        order_id, _, rest = path[len(_UNSTABLE_PREFIX) :].partition("/")
        if rest == TRACKING:
            kind = TRACKING
        elif rest == REFUNDS and not scope.get("query_string"):
            # ?lineItem= needs the order's line items: the router handles it.
            kind = REFUNDS
        else:
            return None
    elif path.startswith(_ORDERS_PREFIX):
        order_id = path[len(_ORDERS_PREFIX) :]
        if "/" in order_id:
            return None
        kind = ORDER
    else:
        return None
    return (kind, order_id) if order_id else None


class _PassThrough(Exception):
    """The router handles this request: the API key is unknown, or the access row
    could not be read."""


class _KeyNotCached(Exception):
    """The API key is not in the key cache, so checking it needs a query."""

    def __init__(self, value: str) -> None:
        super().__init__("the API key is not in the key cache")
        self.value = value


def _no_key_lookup() -> Any:
    # Stands in for the session factory of `authenticate_key`, which opens a
    # session only when the key cache misses.
    raise _KeyNotCached("")


class KeyLookups:
    """The API key lookups in flight, by key value, shared by the lean paths.

    There is one lookup per key however many requests wait for it, so an expired
    cache entry costs one query, not one per request in flight (which could take
    every connection of the pool).
    """

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def look_up(self, sessions: Any, value: str) -> None:
        """Look the key up in the thread pool, or wait for the lookup in flight,
        so that the key cache contains it if the key exists. Raises the error of
        a lookup made here; a waiter then finds the key still missing."""
        pending = self._pending.get(value)
        if pending is not None:
            await asyncio.shield(pending)
            return
        pending = asyncio.get_running_loop().create_future()
        self._pending[value] = pending
        try:
            await anyio.to_thread.run_sync(find_key, sessions, value)
        finally:
            del self._pending[value]
            pending.set_result(None)


class LeanReadMiddleware:
    """Serve the polled reads from the reply cache, or pass them to the router."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._routes: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        read = match_read(scope)
        if read is None:
            await self.app(scope, receive, send)
            return
        await self._serve(scope, receive, send, *read)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, kind: str, order_id: str
    ) -> None:
        state = self.fastapi_app.state
        replies: Replies = state.replies
        try:
            principal = await self._authenticate(scope)
            access = await self._read_access(replies.reader, order_id)
        except _PassThrough:
            await self._pass_through(scope, receive, send, kind)
            return
        allowed = is_allowed(principal, access)
        body = None
        if allowed and access is not None and is_cacheable(kind, access):
            body = replies.cache.get(kind, order_id, access.revision)
            if body is None:
                # The router builds the reply, and it is stored for the next read.
                send = _storing_send(send, replies.cache, kind, order_id, access)
        route = self._routes.get(kind)
        if route is None or (allowed and body is None):
            await self._pass_through(scope, receive, send, kind)
            return
        scope["route"] = route
        try:
            await self._check_as_router(state, principal, order_id, access)
        except OrderDeskError as exc:
            await error_response(exc)(scope, receive, send)
            return
        assert body is not None  # noqa: S101 - allowed, so checked above
        await send_json(send, body)

    async def _pass_through(
        self, scope: Scope, receive: Receive, send: Send, kind: str
    ) -> None:
        await self.app(scope, receive, send)
        # The router stored the route it matched in the scope. Requests served
        # here set that same route, so the metrics label them alike.
        route = scope.get("route")
        if route is not None and getattr(route, "path", None) == ROUTE_TEMPLATES[kind]:
            self._routes.setdefault(kind, route)

    async def _authenticate(self, scope: Scope) -> Principal | OrderDeskError:
        """Return the principal, looking an API key up first when the key cache
        does not hold it. Raises _PassThrough for an unknown key or a failed
        lookup, which the router then reports."""
        try:
            return self._principal(scope)
        except _KeyNotCached as missing:
            state = self.fastapi_app.state
            try:
                await state.key_lookups.look_up(state.session_factory, missing.value)
            except Exception as exc:
                log.warning("lean_key_lookup_failed", error=repr(exc))
                raise _PassThrough from exc
        try:
            return self._principal(scope)
        except _KeyNotCached as missing:
            # Unknown keys are never cached: the router sends their 401.
            raise _PassThrough from missing

    def _principal(self, scope: Scope) -> Principal | OrderDeskError:
        """Authenticate as `get_principal` does, without its rate limit hit.

        Returns the error to send instead of raising it, because the router reads
        the database before it checks the credentials. Raises _KeyNotCached.
        """
        api_key = secret = None
        for name, value in scope["headers"]:
            if name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"authorization" and secret is None:
                secret = value.decode("latin-1")
        try:
            if api_key:
                value = api_key.strip()
                try:
                    return authenticate_key(
                        _no_key_lookup,  # type: ignore[arg-type]
                        self.fastapi_app.state.settings,
                        value,
                    )
                except _KeyNotCached:
                    raise _KeyNotCached(value) from None
            if secret:
                return SecretPrincipal(hash_secret(secret.strip()))
            # No credentials: get_principal raises its 401 before any lookup.
            return get_principal(Request(scope))
        except OrderDeskError as exc:
            return exc

    async def _read_access(
        self, reader: OrderAccessReader, order_id: str
    ) -> OrderAccess | None:
        """Return the order's access row, or None when no such order exists.

        Raises _PassThrough for a malformed id, whose 404 the router sends, and
        when the query fails, so that the router reports the failure.
        """
        if _CANONICAL_UUID.fullmatch(order_id) is None:
            raise _PassThrough
        try:
            if not reader.is_open:
                await anyio.to_thread.run_sync(reader.open)
            return reader.read(order_id)
        except ReaderBusy as exc:
            raise _PassThrough from exc
        except Exception as exc:
            log.warning("lean_read_failed", order_id=order_id, error=repr(exc))
            raise _PassThrough from exc

    async def _check_as_router(
        self,
        state: Any,
        principal: Principal | OrderDeskError,
        order_id: str,
        access: OrderAccess | None,
    ) -> None:
        """Raise the error the route would raise, after the same rate limit hit."""
        if isinstance(principal, OrderDeskError):
            raise principal
        if isinstance(principal, KeyPrincipal):
            await _hit_rate_limit(state, principal.project_id)
            require_key_scope(principal, READ_SCOPE)
            if access is None or access.project_id != principal.project_id:
                raise order_not_found(order_id)
            return
        if access is None or not _secret_matches(principal, access):
            raise invalid_client_secret()
        await _hit_rate_limit(state, access.project_id)


async def _hit_rate_limit(state: Any, project_id: str) -> None:
    """Count the read, in the thread pool when the counter is in Redis, so that a
    slow Redis never holds up the event loop."""
    if state.settings.redis_url and state.settings.rate_limit_reads_per_minute > 0:
        await anyio.to_thread.run_sync(state.rate_limiter.hit, project_id, "read")
        return
    state.rate_limiter.hit(project_id, "read")


def is_allowed(
    principal: Principal | OrderDeskError, access: OrderAccess | None
) -> bool:
    """Return whether the route would return the order's reply to this caller,
    leaving the rate limit aside."""
    if isinstance(principal, OrderDeskError) or access is None:
        return False
    if isinstance(principal, KeyPrincipal):
        return (
            READ_SCOPE in principal.scopes and access.project_id == principal.project_id
        )
    return _secret_matches(principal, access)


def _secret_matches(principal: SecretPrincipal, access: OrderAccess) -> bool:
    return hmac.compare_digest(principal.secret_hash, access.client_secret_hash)


def _storing_send(
    send: Send, cache: ReplyCache, kind: str, order_id: str, access: OrderAccess
) -> Send:
    """Wrap `send` to store a 200 reply sent in one body message."""
    status = 0
    first_body = True

    async def storing_send(message: Message) -> None:
        nonlocal status, first_body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            whole = first_body and not message.get("more_body", False)
            first_body = False
            if whole and status == 200:
                body = bytes(message.get("body", b""))
                cache.put(kind, order_id, access.revision, body)
        await send(message)

    return storing_send
