"""Request plumbing shared by every router: bodies, sessions and error bodies."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from email.message import Message
from typing import Annotated, Any, TypeVar

import orjson
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from orderdesk.errors import (
    InvalidInput,
    OrderDeskError,
    PayloadTooLarge,
    UnsupportedMediaType,
)

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024
ModelT = TypeVar("ModelT", bound=BaseModel)


def error_response(error: OrderDeskError) -> JSONResponse:
    return JSONResponse(
        error.body(), status_code=error.status_code, headers=error.headers
    )


def validation_details(
    exc: ValidationError | RequestValidationError,
) -> list[dict[str, str]]:
    """Turn pydantic errors into the API's {field, message} list."""
    details = []
    for item in exc.errors():
        location = [str(part) for part in item.get("loc", ()) if part not in ("body",)]
        field = ".".join(location) or "body"
        message = item.get("msg", "is invalid")
        if item.get("type") == "extra_forbidden":
            message = "Unknown field; remove it."
        details.append({"field": field, "message": message})
    return details


def invalid_body(details: list[dict[str, str]]) -> InvalidInput:
    fields = ", ".join(sorted({d["field"] for d in details}))
    return InvalidInput(
        f"The request body is invalid in: {fields}. Fix the fields listed in details.",
        code="invalid_request",
        details=details,
    )


def parse_model(model: type[ModelT], raw: bytes) -> ModelT:
    """Validate a JSON body against a model in strict JSON mode."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            raise InvalidInput(
                "The request body is not valid JSON. Send a JSON object.",
                code="invalid_json",
            ) from exc
        raise invalid_body(validation_details(exc)) from exc


def check_json_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        raise UnsupportedMediaType(
            "The request has no Content-Type. Send the body as application/json."
        )
    message = Message()
    message["content-type"] = content_type
    if message.get_content_type() != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported. Send application/json."
        )


async def read_body(request: Request, *, required: bool = True) -> bytes:
    """Read the body after checking its type. An empty body passes if not required."""
    raw = await request.body()
    if not raw and not required:
        return raw
    check_json_content_type(request)
    if not raw:
        raise InvalidInput(
            "The request body is empty. Send a JSON object.", code="invalid_json"
        )
    return raw


async def body_bytes(request: Request) -> bytes:
    """Read the raw body. Routes list this before authentication so that a slow
    upload never keeps a database transaction open; it is validated afterwards."""
    return await request.body()


RawBody = Annotated[bytes, Depends(body_bytes)]


def parse_json_body(request: Request, model: type[ModelT], raw: bytes) -> ModelT:
    """Check the content type, then validate `raw` against `model`."""
    check_json_content_type(request)
    if not raw:
        raise InvalidInput(
            "The request body is empty. Send a JSON object.", code="invalid_json"
        )
    return parse_model(model, raw)


def json_body(model: type[ModelT]) -> Callable[[Request], Awaitable[ModelT]]:
    """Build a dependency that reads and validates a JSON body as `model`."""

    async def dependency(request: Request) -> ModelT:
        return parse_model(model, await read_body(request))

    dependency.__name__ = f"{model.__name__}_body"
    return dependency


def raw_json(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI fragment describing a JSON request body shaped like `model`."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def get_session(request: Request) -> Iterator[Session]:
    """Yield a session for the request; the route commits, this only cleans up."""
    with request_session(request) as session:
        yield session


@contextmanager
def request_session(request: Request) -> Iterator[Session]:
    """Open the request's session (read-only for GET and HEAD) and clean it up.

    Hot read routes use this directly instead of the `get_session` dependency:
    FastAPI runs each sync dependency in the thread pool, and every hop there
    costs about as much as a small query.
    """
    factory = request.app.state.session_factory
    session: Session = factory()
    if request.method in ("GET", "HEAD"):
        session.connection(execution_options={"read_only": True})
    try:
        yield session
    finally:
        # close() rolls back what the route did not commit. An explicit rollback()
        # first would also expire every loaded object, work that is thrown away.
        session.close()


def json_response(content: Any, status_code: int = 200) -> Response:
    """Encode `content` with orjson: the same compact UTF-8 JSON that FastAPI would
    send, without validating the value against the route's response model first."""
    return Response(
        orjson.dumps(content), status_code=status_code, media_type="application/json"
    )


async def send_json(send: Send, body: bytes, status_code: int = 200) -> None:
    """Send encoded JSON as `json_response` does, with the same headers in the same
    order, without building a Response object."""
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [
                (b"content-length", str(len(body)).encode("latin-1")),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Reject bodies over MAX_BODY_BYTES with 413, counting bytes as they arrive."""

    _HTTP1 = ("1.0", "1.1")

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        has_transfer_encoding = False
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                has_transfer_encoding = True
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._reject(send)
            return
        if (
            length is None
            and not has_transfer_encoding
            and scope.get("http_version") in self._HTTP1
        ):
            # Without either header an HTTP/1.x request has no body (RFC 9112,
            # section 6.3), so there are no bytes to count. An HTTP/2 request
            # can have one, sent in DATA frames.
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> ASGIMessage:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        error = PayloadTooLarge(
            f"The request body is larger than {self.limit} bytes. Send a smaller body."
        )
        body = json.dumps(error.body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# The status that nginx logs for a request whose client left before the reply.
CLIENT_CLOSED_REQUEST = 499


class _BodyTooLarge(Exception):
    pass


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OrderDeskError)
    async def _domain(_request: Request, exc: OrderDeskError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(
        _request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        details = validation_details(exc)
        fields = ", ".join(sorted({d["field"] for d in details}))
        error = InvalidInput(
            f"The request is invalid in: {fields}. "
            "Fix the parameters listed in details.",
            details=details,
        )
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error = OrderDeskError(
                f"No route matches {request.method} {request.url.path}. "
                "Check the path.",
                code="not_found",
            )
        elif exc.status_code == 405:
            error = OrderDeskError(
                f"{request.method} is not allowed on {request.url.path}.",
                code="method_not_allowed",
            )
        else:
            error = OrderDeskError(str(exc.detail), code="http_error")
        error.status_code = exc.status_code
        return error_response(error)

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database_unavailable", path=request.url.path, error=str(exc.orig))
        error = OrderDeskError(
            "The database is unreachable or busy. Retry the request shortly.",
            code="database_unavailable",
            headers={"Retry-After": "5"},
        )
        error.status_code = 503
        return error_response(error)

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, _exc: ClientDisconnect) -> JSONResponse:
        # The client closed the connection before its body arrived, so no client
        # reads this reply. 499 (nginx's "client closed request") keeps it out of
        # the server errors in the logs and metrics.
        log.info("client_disconnected", method=request.method, path=request.url.path)
        error = OrderDeskError(
            "The client closed the connection before the request body arrived.",
            code="client_disconnected",
        )
        error.status_code = CLIENT_CLOSED_REQUEST
        return error_response(error)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _database_down(request, exc)  # type: ignore[arg-type]
        log.exception("database_error", path=request.url.path)
        return _internal()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "unhandled_error", path=request.url.path, error_type=type(exc).__name__
        )
        return _internal()


def _internal() -> JSONResponse:
    error = OrderDeskError(
        "The server failed to handle this request. It has been logged; retry later.",
        code="internal_error",
    )
    error.status_code = 500
    return error_response(error)
