"""The console's router: login and logout here, the pages in the routes_* modules.

Every route uses ConsoleRoute, so each response is an HTML page (or a redirect) with
the Content-Security-Policy and the other security headers.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from orderdesk.config import Settings
from orderdesk.console import (
    routes_admin,
    routes_orders,
    routes_refunds,
    routes_webhooks,
)
from orderdesk.console import services as users
from orderdesk.console.rendering import redirect, render
from orderdesk.console.security import (
    clear_cookie,
    create_session,
    end_session,
    login_cookie,
    login_form_token,
    login_token_matches,
    new_login_nonce,
    session_cookie,
    set_cookie,
)
from orderdesk.console.web import (
    HOME,
    ConsoleRoute,
    CsrfRejected,
    DbSession,
    Form,
    FormUser,
    client_ip,
    error_page,
    safe_next,
)
from orderdesk.db.base import utcnow

router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)

# The pre-login cookie lives long enough to fill in the form.
LOGIN_COOKIE_SECONDS = 3600


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    """Show the login form, with a token bound to a fresh pre-login cookie."""
    return _login_page(request, next_url=safe_next(next))


def _login_page(
    request: Request,
    *,
    next_url: str,
    email: str = "",
    error: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    settings: Settings = request.app.state.settings
    nonce = new_login_nonce()
    response = render(
        request,
        "login.html",
        {
            "title": "Log in",
            "login_token": login_form_token(settings, nonce),
            "next_url": next_url,
            "email": email,
            "error": error,
        },
        status_code=status_code,
        headers=headers,
    )
    set_cookie(
        response,
        settings,
        login_cookie(settings),
        nonce,
        max_age=LOGIN_COOKIE_SECONDS,
        same_site="strict",
    )
    return response


@router.post("/login")
def log_in(request: Request, form: Form, session: DbSession) -> Response:
    """Check the email and password and start a session.

    The attempt is counted and committed before the password is checked, so the
    slow argon2 check holds no transaction open and lockout counts concurrent tries.
    """
    settings: Settings = request.app.state.settings
    next_url = safe_next(form.get("next"))
    email = form.get("email", "").strip()
    nonce = request.cookies.get(login_cookie(settings))
    if not login_token_matches(settings, nonce, form.get("login_token")):
        raise CsrfRejected
    try:
        attempt = users.start_login(session, settings, email, client_ip(request))
        session.commit()
    except users.LoginLocked as exc:
        session.commit()
        return _login_page(
            request,
            next_url=next_url,
            email=email,
            error=exc.message,
            status_code=429,
            headers=exc.headers,
        )
    user = users.finish_login(session, attempt, form.get("password", ""))
    if user is None:
        session.commit()
        return _login_page(
            request,
            next_url=next_url,
            email=email,
            error="The email or password is wrong.",
            status_code=401,
        )
    _row, token = create_session(
        session,
        settings,
        user,
        ip=attempt.ip,
        user_agent=request.headers.get("user-agent"),
        now=utcnow(),
    )
    session.commit()
    response = RedirectResponse(next_url, status_code=303)
    set_cookie(
        response,
        settings,
        session_cookie(settings),
        token,
        max_age=int(settings.console_session_hours * 3600),
    )
    clear_cookie(response, settings, login_cookie(settings))
    return response


@router.post("/logout")
def log_out(request: Request, signed_in: FormUser, session: DbSession) -> Response:
    """End the session row, so the cookie opens nothing even if it was copied."""
    settings: Settings = request.app.state.settings
    end_session(session, signed_in.session_id)
    session.commit()
    response = redirect(request, "/console/login", notice="You are logged out.")
    clear_cookie(response, settings, session_cookie(settings))
    return response


router.include_router(routes_orders.router)
router.include_router(routes_refunds.router)
router.include_router(routes_webhooks.router)
router.include_router(routes_admin.router)


@router.api_route("/{rest:path}", methods=["GET", "POST"])
def not_found(request: Request, rest: str) -> Response:
    """Return an HTML 404, with the same headers, for unknown console paths."""
    return error_page(request, 404, "No console page has this address.")
