"""Console login: cookies, lockout, CSRF of the login form, logout and the wall
between console sessions and API keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.console import helpers
from tests.console.conftest import ClientMaker

from orderdesk.console.models import ConsoleLoginAttempt, ConsoleSession
from orderdesk.runtime import Runtime


def shift(runtime: Runtime, model: type, field: str, delta: timedelta) -> None:
    """Move a time column of every row of `model` by `delta`."""
    with runtime.session_factory() as session, session.begin():
        for row in session.scalars(select(model)):
            setattr(row, field, getattr(row, field) + delta)


def session_rows(runtime: Runtime) -> int:
    with runtime.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(ConsoleSession)))


def test_login_sets_safe_cookie(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    response = helpers.log_in(client, helpers.OPERATOR)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/orders"
    cookie = next(
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith("orderdesk_console=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    # Development serves plain HTTP, so the cookie cannot be Secure there.
    assert "Secure" not in cookie
    assert session_rows(runtime) == 1
    assert client.get("/console/orders").status_code == 200


def test_wrong_password_is_rejected(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    response = helpers.log_in(client, helpers.OPERATOR, "not the password at all")
    assert response.status_code == 401
    assert "email or password is wrong" in response.text
    assert session_rows(runtime) == 0
    unknown = helpers.log_in(client, "nobody@example.com")
    assert unknown.status_code == 401
    assert "email or password is wrong" in unknown.text


def test_pages_need_login(client: TestClient) -> None:
    response = client.get("/console/refunds?status=all", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == (
        "/console/login?next=%2Fconsole%2Frefunds%3Fstatus%3Dall"
    )


def test_login_returns_to_next(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    response = helpers.log_in(client, helpers.OPERATOR, next_url="/console/jobs")
    assert response.headers["location"] == "/console/jobs"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/console",
        "//evil.example/console",
        "/consolex/../x",
        "/console\\..\\evil",
    ],
)
def test_login_ignores_foreign_next(
    client: TestClient, runtime: Runtime, target: str
) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    response = helpers.log_in(client, helpers.OPERATOR, next_url=target)
    assert response.headers["location"] == "/console/orders"


def test_login_form_needs_token(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    client.get("/console/login")
    response = client.post(
        "/console/login",
        data={"email": helpers.OPERATOR, "password": helpers.PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "security token" in response.text
    assert session_rows(runtime) == 0


def test_login_token_bound_to_cookie(
    client: TestClient, runtime: Runtime, new_client: ClientMaker
) -> None:
    """A token lifted from another browser's form does not log this one in."""
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    other = new_client()
    token = helpers.hidden_token(other.get("/console/login").text, "login_token")
    client.get("/console/login")
    response = client.post(
        "/console/login",
        data={
            "login_token": token,
            "email": helpers.OPERATOR,
            "password": helpers.PASSWORD,
        },
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert session_rows(runtime) == 0


def test_lockout_after_five_failures(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    for _ in range(5):
        assert (
            helpers.log_in(client, helpers.OPERATOR, "wrong password!").status_code
            == 401
        )
    locked = helpers.log_in(client, helpers.OPERATOR)
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 14 * 60
    assert "Too many failed logins" in locked.text
    assert session_rows(runtime) == 0
    # Once the failures are older than the window, the right password works again.
    shift(runtime, ConsoleLoginAttempt, "attempted_at", -timedelta(minutes=16))
    assert helpers.log_in(client, helpers.OPERATOR).status_code == 303


def test_locked_attempts_not_counted(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    for _ in range(5):
        helpers.log_in(client, helpers.OPERATOR, "wrong password!")
    for _ in range(3):
        assert helpers.log_in(client, helpers.OPERATOR).status_code == 429
    with runtime.session_factory() as session:
        count = session.scalar(select(func.count()).select_from(ConsoleLoginAttempt))
    assert count == 5


@pytest.mark.parametrize("settings_overrides", [{"console_lockout_ip_failures": 3}])
def test_lockout_per_ip_address(client: TestClient, runtime: Runtime) -> None:
    """Guessing across many emails from one address is locked too."""
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    for index in range(3):
        response = helpers.log_in(
            client, f"guess{index}@example.com", "wrong password!"
        )
        assert response.status_code == 401
    assert helpers.log_in(client, helpers.OPERATOR).status_code == 429


def test_success_clears_failures(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    for _ in range(4):
        helpers.log_in(client, helpers.OPERATOR, "wrong password!")
    assert helpers.log_in(client, helpers.OPERATOR).status_code == 303
    for _ in range(4):
        helpers.log_in(client, helpers.OPERATOR, "wrong password!")
    assert helpers.log_in(client, helpers.OPERATOR).status_code == 303


def test_logout_ends_session(
    operator_client: TestClient, runtime: Runtime, new_client: ClientMaker
) -> None:
    cookie = operator_client.cookies.get("orderdesk_console")
    token = helpers.csrf_of(operator_client)
    response = operator_client.post(
        "/console/logout", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert session_rows(runtime) == 0
    # A copy of the old cookie opens nothing.
    thief = new_client()
    thief.cookies.set("orderdesk_console", cookie)
    assert thief.get("/console/orders", follow_redirects=False).status_code == 303


def test_logout_needs_csrf(operator_client: TestClient, runtime: Runtime) -> None:
    response = operator_client.post("/console/logout", data={}, follow_redirects=False)
    assert response.status_code == 403
    assert session_rows(runtime) == 1


def test_idle_session_expires(operator_client: TestClient, runtime: Runtime) -> None:
    shift(runtime, ConsoleSession, "last_seen_at", -timedelta(minutes=61))
    response = operator_client.get("/console/orders", follow_redirects=False)
    assert response.status_code == 303


def test_session_expires_after_hours(
    operator_client: TestClient, runtime: Runtime
) -> None:
    shift(runtime, ConsoleSession, "expires_at", -timedelta(hours=12, seconds=1))
    assert (
        operator_client.get("/console/orders", follow_redirects=False).status_code
        == 303
    )


def test_api_key_opens_no_page(client: TestClient, api_key: str) -> None:
    for headers in ({"X-API-KEY": api_key}, {"Authorization": api_key}):
        response = client.get(
            "/console/orders", headers=headers, follow_redirects=False
        )
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/login")


def test_session_authorises_no_api(
    operator_client: TestClient, runtime: Runtime
) -> None:
    from tests import factories

    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        order = factories.make_paid_order(session, owner)
    for path in (
        f"/api/2022-06-09/orders/{order.id}",
        "/api/2022-06-09/orders",
        f"/api/unstable/orders/{order.id}/refunds",
    ):
        response = operator_client.get(path)
        assert response.status_code == 401, path
        assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "environment": "production",
            "console_session_secret": "s" * 40,
            "devnet": False,
        }
    ],
)
def test_production_cookie_is_secure(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    page = client.get("/console/login")
    token = helpers.hidden_token(page.text, "login_token")
    login_cookie = next(
        value
        for value in page.headers.get_list("set-cookie")
        if value.startswith("__Host-orderdesk_console_login=")
    )
    assert "Secure" in login_cookie
    assert "SameSite=strict" in login_cookie

    # The test client keeps Secure cookies only over https.
    secure = TestClient(client.app, base_url="https://testserver")
    secure.cookies.set(
        "__Host-orderdesk_console_login", login_cookie.split(";")[0].split("=", 1)[1]
    )
    response = secure.post(
        "/console/login",
        data={
            "login_token": token,
            "email": helpers.OPERATOR,
            "password": helpers.PASSWORD,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text

    cookie = next(
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith("__Host-orderdesk_console=")
    )
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie


@pytest.mark.parametrize(
    "settings_overrides", [{"environment": "production", "devnet": False}]
)
def test_production_needs_session_secret(client: TestClient) -> None:
    response = client.get("/console/login")
    assert response.status_code == 500
    assert "ORDERDESK_CONSOLE_SESSION_SECRET_FILE" in response.text
    assert "content-security-policy" in response.headers
