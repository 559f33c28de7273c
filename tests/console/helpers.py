"""Console users, logins and page parsing shared by the console tests."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from httpx import Response

from orderdesk.console import services
from orderdesk.runtime import Runtime

PASSWORD = "correct horse battery staple"
OPERATOR = "operator@example.com"
VIEWER = "viewer@example.com"

_HIDDEN = re.compile(r'name="(csrf_token|login_token)" value="([^"]*)"')


def add_user(runtime: Runtime, email: str, role: str, password: str = PASSWORD) -> str:
    with runtime.session_factory() as session, session.begin():
        return services.create_user(session, email, role, password).id


def hidden_token(html: str, name: str = "csrf_token") -> str:
    """Return the value of the first hidden token field of that name."""
    for field, value in _HIDDEN.findall(html):
        if field == name:
            return value
    raise AssertionError(f"no {name} field in the page")


def log_in(
    client: TestClient, email: str, password: str = PASSWORD, next_url: str = ""
) -> Response:
    """Fill in the login form as a browser would, without following the redirect."""
    page = client.get("/console/login")
    return client.post(
        "/console/login",
        data={
            "login_token": hidden_token(page.text, "login_token"),
            "email": email,
            "password": password,
            "next": next_url,
        },
        follow_redirects=False,
    )


def csrf_of(client: TestClient) -> str:
    """Return the CSRF token of the client's session, read from a page."""
    page = client.get("/console/orders")
    assert page.status_code == 200, page.text
    return hidden_token(page.text)
