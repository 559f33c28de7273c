"""Request plumbing of the console: who is signed in, roles, forms, CSRF, and the
route class that turns every outcome into an HTML page with the security headers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

import structlog
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from orderdesk.config import Settings
from orderdesk.console.models import ConsoleSession, ConsoleUser, Role
from orderdesk.console.queries import count_initiated_refunds
from orderdesk.console.rendering import STATIC, redirect, render
from orderdesk.console.security import (
    SECURITY_HEADERS,
    ConsoleSecretError,
    csrf_matches,
    find_session,
    needs_touch,
    session_cookie,
    touch_session,
)
from orderdesk.db.base import utcnow
from orderdesk.db.engine import transaction
from orderdesk.errors import Forbidden, OrderDeskError, UnsupportedMediaType
from orderdesk.http import get_session

log = structlog.get_logger(__name__)

HOME = "/console/orders"
MAX_FORM_FIELDS = 50
FORM_TYPE = "application/x-www-form-urlencoded"


class LoginRequired(Exception):
    """No live console session: the browser goes to the login page."""


class RoleForbidden(Forbidden):
    code = "role_forbidden"

    def __init__(self, role: str) -> None:
        super().__init__(
            f"Your console role is {role}, which can only read. Ask an administrator "
            "for the operator role to make changes."
        )


class CsrfRejected(Forbidden):
    code = "csrf_failed"

    def __init__(self) -> None:
        super().__init__(
            "The form's security token is missing or out of date. Reload the page "
            "and submit the form again."
        )


@dataclass(frozen=True)
class SignedInUser:
    """The signed-in console user of a request."""

    user: ConsoleUser
    session_id: str
    csrf_token: str

    @property
    def actor(self) -> str:
        return f"console:{self.user.id}"

    @property
    def can_act(self) -> bool:
        return self.user.role == Role.OPERATOR


DbSession = Annotated[Session, Depends(get_session)]


def client_ip(request: Request) -> str:
    """Return the peer address. Behind a proxy, run uvicorn with
    --forwarded-allow-ips so that this is the client's address, not the proxy's."""
    return request.client.host if request.client else "unknown"


def current_user(request: Request, session: DbSession) -> SignedInUser:
    """Return the signed-in user from the session cookie, or raise LoginRequired.

    Only the cookie counts: an X-API-KEY or Authorization header opens nothing here.
    """
    settings: Settings = request.app.state.settings
    token = request.cookies.get(session_cookie(settings), "")
    now = utcnow()
    row: ConsoleSession | None = find_session(session, settings, token, now)
    if row is None:
        raise LoginRequired
    if needs_touch(row, now):
        with transaction(request.app.state.session_factory) as writer:
            touch_session(writer, row.id, now)
    signed_in = SignedInUser(row.user, row.id, row.csrf_token)
    request.state.console_user = row.user
    request.state.console_csrf = row.csrf_token
    request.state.console_open_refunds = count_initiated_refunds(session)
    return signed_in


SignedIn = Annotated[SignedInUser, Depends(current_user)]


def require_operator(signed_in: SignedIn) -> SignedInUser:
    """Allow only the operator role; a viewer gets 403."""
    if not signed_in.can_act:
        raise RoleForbidden(signed_in.user.role)
    return signed_in


async def read_form(request: Request) -> dict[str, str]:
    """Parse an application/x-www-form-urlencoded body into its first values; an
    empty body is an empty form. `form_list` returns every value of a field."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if raw and content_type != FORM_TYPE:
        raise UnsupportedMediaType(
            f"Forms must be sent as {FORM_TYPE}, not {content_type or 'nothing'}."
        )
    try:
        parsed = parse_qs(
            raw.decode("utf-8", errors="replace"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError as exc:
        raise OrderDeskError(f"The form has too many fields: {exc}.") from exc
    request.state.console_form_lists = parsed
    return {name: values[0] for name, values in parsed.items()}


Form = Annotated[dict[str, str], Depends(read_form)]


def form_list(request: Request, name: str) -> list[str]:
    """Return every value of a repeated form field, such as checked boxes."""
    lists: dict[str, list[str]] = getattr(request.state, "console_form_lists", {})
    return list(lists.get(name, []))


def checked_user(signed_in: SignedIn, form: Form) -> SignedInUser:
    """The signed-in user of a form post whose CSRF token matches the session."""
    if not csrf_matches(signed_in.csrf_token, form.get("csrf_token")):
        raise CsrfRejected
    return signed_in


def checked_action(
    signed_in: Annotated[SignedInUser, Depends(checked_user)],
) -> SignedInUser:
    """A form post that changes something: CSRF checked first, then the role."""
    return require_operator(signed_in)


FormUser = Annotated[SignedInUser, Depends(checked_user)]
ActingUser = Annotated[SignedInUser, Depends(checked_action)]


def safe_next(value: str | None, default: str = HOME) -> str:
    """Return `value` when it is a path inside the console, else `default`, so a
    crafted link cannot send the browser elsewhere after login."""
    if not value or not value.startswith("/console/") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or ".." in parts.path.split("/"):
        return default
    if parts.path.rstrip("/") in ("/console", "/console/login"):
        return default
    return value


def login_redirect(request: Request) -> RedirectResponse:
    # After login a GET goes back where it was; a form post starts over, because
    # its body is gone.
    target = "/console/"
    if request.method == "GET":
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
    return RedirectResponse(
        f"/console/login?next={quote(target, safe='')}", status_code=303
    )


def action_failed(request: Request, target: str, error: OrderDeskError) -> Response:
    """Log an action the owning service rejected and show its message on `target`."""
    log.info(
        "console_action_rejected",
        path=request.url.path,
        code=error.code,
        error=error.message,
    )
    return redirect(request, target, error=error.message)


def error_page(
    request: Request, status_code: int, message: str, **headers: str
) -> Response:
    return render(
        request,
        "error.html",
        {
            "title": f"Error {status_code}",
            "status_code": status_code,
            "message": message,
        },
        status_code=status_code,
        headers=headers or None,
    )


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class ConsoleRoute(APIRoute):
    """Turn every exception into an HTML page and add the security headers to every
    response, so no console URL ever answers with JSON or without the CSP."""

    def get_route_handler(self) -> Endpoint:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            response = await _run(original, request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handler


async def _run(original: Endpoint, request: Request) -> Response:
    try:
        return await original(request)
    except LoginRequired:
        return login_redirect(request)
    except OrderDeskError as exc:
        log.info(
            "console_request_rejected",
            path=request.url.path,
            status=exc.status_code,
            code=exc.code,
        )
        return error_page(request, exc.status_code, exc.message, **exc.headers)
    except RequestValidationError:
        return error_page(request, 400, "The address has an invalid parameter.")
    except StarletteHTTPException as exc:
        return error_page(request, exc.status_code, str(exc.detail))
    except ConsoleSecretError as exc:
        log.error("console_secret_missing", error=str(exc))
        return error_page(request, 500, f"The console is not configured: {exc}")
    except OperationalError as exc:
        log.error("console_database_unavailable", error=str(exc.orig))
        return error_page(
            request,
            503,
            "The database is unreachable. Retry shortly.",
            **{"Retry-After": "5"},
        )
    except Exception:
        log.exception("console_unhandled_error", path=request.url.path)
        return error_page(
            request, 500, "The console failed to show this page. It has been logged."
        )


class ConsoleStaticFiles(StaticFiles):
    """The console's CSS and JavaScript, with the console's security headers."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
