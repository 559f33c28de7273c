"""Jinja2 templates of the console, autoescaped, and the filters they use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from orderdesk.config import Settings
from orderdesk.console.security import (
    clear_cookie,
    decode_flash,
    encode_flash,
    flash_cookie,
    set_cookie,
)
from orderdesk.payments.amounts import format_amount
from orderdesk.timefmt import iso, parse_rfc3339

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def time_tag(value: datetime | str | None) -> Markup:
    """Render a time as <time> in UTC; console.js rewrites the text in local time and
    the title keeps the UTC form. A string must be an RFC 3339 time."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    if isinstance(value, str):
        value = parse_rfc3339(value)
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M UTC")
    title = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        iso(utc), title, text
    )


def money(amount: Decimal | str | None, currency: str = "") -> str:
    if amount is None:
        return "—"
    value = format_amount(Decimal(amount)) if not isinstance(amount, str) else amount
    return f"{value} {currency.upper()}".strip()


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def status_class(value: str | None) -> str:
    """Return the CSS class of a status word, from a fixed set so that no stored text
    becomes a class name."""
    good = {"completed", "delivered", "refund-request-completed", "confirmed", "done"}
    bad = {
        "failed",
        "exception",
        "returned-to-sender",
        "refund-request-rejected",
        "expired",
    }
    waiting = {"refund-request-initiated", "pending", "awaiting-payment", "queued"}
    if value in good:
        return "status status-good"
    if value in bad or (value or "").startswith("failed"):
        return "status status-bad"
    if value in waiting:
        return "status status-wait"
    return "status"


def query_string(**params: Any) -> str:
    """Build `?a=1&b=2` from the parameters that are set."""
    present = {name: value for name, value in params.items() if value not in (None, "")}
    return "?" + urlencode(present) if present else ""


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = time_tag
    env.filters["money"] = money
    env.filters["pretty_json"] = pretty_json
    env.filters["status_class"] = status_class
    env.globals["query_string"] = query_string
    return env


ENVIRONMENT = _environment()


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a page with the signed-in user, the CSRF token and any flash message."""
    settings: Settings = request.app.state.settings
    flash_name = flash_cookie(settings)
    flash = decode_flash(settings, request.cookies.get(flash_name))
    values: dict[str, Any] = {
        "request_path": request.url.path,
        "user": getattr(request.state, "console_user", None),
        "csrf_token": getattr(request.state, "console_csrf", ""),
        "environment": settings.environment,
        "open_refunds": getattr(request.state, "console_open_refunds", 0),
        "flash": flash,
        "title": "",
    }
    values.update(context or {})
    html = ENVIRONMENT.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    if flash_name in request.cookies:
        clear_cookie(response, settings, flash_name)
    return response


def redirect(
    request: Request, url: str, *, notice: str | None = None, error: str | None = None
) -> RedirectResponse:
    """Redirect with 303 after a form, carrying one message to the next page."""
    response = RedirectResponse(url, status_code=303)
    settings: Settings = request.app.state.settings
    if notice or error:
        kind, text = ("error", error) if error else ("notice", notice or "")
        set_cookie(
            response,
            settings,
            flash_cookie(settings),
            encode_flash(settings, kind, text),
        )
    return response
