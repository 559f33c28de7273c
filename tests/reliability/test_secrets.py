"""Secrets stay secret.

One `orderdesk serve` process runs the whole flow with JSON logs at debug level and
the access log on: an API key made by the CLI, an order with its clientSecret, a
webhook endpoint with its signing secret (then rotated), email through an SMTP
server that requires AUTH, a console user, a key made in the console, and a payout
signed with the treasury key. Then every secret value is looked for in the logs,
every error body, the console pages, the webhooks and emails sent, and every column
of the database. Only the answer that creates a secret may show it.

The treasury secret comes from the environment or from a file that only its owner
may open: a process refuses to start on a file open to others.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import create_engine, inspect, select, text
from tests.conftest import free_port, make_settings
from tests.orders.helpers import seed_catalog
from tests.reliability.procs import ORDERDESK, wait_for_ready

from orderdesk.auth.models import Project
from orderdesk.payments.treasury import treasury_account
from orderdesk.runtime import Runtime

TREASURY_SECRET = "treasury-master-" + "5f3a9c" * 8
CONSOLE_SECRET = "console-session-" + "8d2e71" * 8
SMTP_USER = "mailer@example.com"
SMTP_PASSWORD = "sm7p:p@ss/w%rd-" + "4b9e" * 4
CONSOLE_PASSWORD = "long console pass " + "c0ffee" * 3
OPERATOR = "operator@example.com"
SCOPES = (
    "orders.create,orders.read,orders.update,orders.fulfill,refunds.review,"
    "webhooks.manage"
)
_HIDDEN = re.compile(r'name="(csrf_token|login_token)" value="([^"]*)"')


@dataclass
class Captured:
    """Everything the flow let out that must not hold a secret."""

    error_bodies: list[str] = field(default_factory=list)
    pages: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


class Hooks:
    """A webhook receiver on loopback that keeps each request's headers and body."""

    def __init__(self) -> None:
        self.received: list[str] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server hook name
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                hooks.received.append(f"{self.headers}\n{body}")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AuthInbox:
    """An aiosmtpd handler that requires AUTH and keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.logins: list[bytes] = []

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        self.messages.append(envelope.original_content.decode(errors="replace"))
        return "250 Message accepted"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.logins.append(data.login)
        ok = (
            data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
        )
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[AuthInbox, int]]:
    from aiosmtpd.controller import Controller

    inbox = AuthInbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=inbox.authenticate,
        auth_required=True,
        # The server is on loopback, so the test speaks plain SMTP with AUTH.
        auth_require_tls=False,
    )
    controller.start()
    yield inbox, port
    controller.stop()


def service_env(database_url: str, tmp_path: Path, smtp_port: int) -> dict[str, str]:
    smtp_url = (
        f"smtp://{quote(SMTP_USER, safe='')}:{quote(SMTP_PASSWORD, safe='')}"
        f"@127.0.0.1:{smtp_port}?starttls=off"
    )
    return {
        **os.environ,
        "ORDERDESK_DATABASE_URL": database_url,
        "ORDERDESK_DATA_DIR": str(tmp_path / "var"),
        "ORDERDESK_TREASURY_SECRET": TREASURY_SECRET,
        "ORDERDESK_CONSOLE_SESSION_SECRET": CONSOLE_SECRET,
        "ORDERDESK_SMTP_URL": smtp_url,
        "ORDERDESK_LOG_FORMAT": "json",
        "ORDERDESK_LOG_LEVEL": "DEBUG",
        "ORDERDESK_ACCESS_LOG": "true",
        "ORDERDESK_FULFILMENT_PROVIDER": "simulated",
        "ORDERDESK_SIMULATED_STEP_SECONDS": "0.3",
        "ORDERDESK_PAYMENT_RECHECK_SECONDS": "0.2",
        "ORDERDESK_PAYOUT_RECHECK_SECONDS": "0.2",
        "ORDERDESK_WORKER_POLL_SECONDS": "0.1",
        "ORDERDESK_RATE_LIMIT_WRITES_PER_MINUTE": "0",
        "ORDERDESK_RATE_LIMIT_READS_PER_MINUTE": "0",
    }


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    result = subprocess.run(
        [*ORDERDESK, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def hidden_token(html: str, name: str) -> str:
    for field_name, value in _HIDDEN.findall(html):
        if field_name == name:
            return value
    raise AssertionError(f"no {name} field in the page")


class Api:
    """requests against the service that keeps every error body it gets."""

    def __init__(self, url: str, captured: Captured) -> None:
        self.url = url
        self.captured = captured
        self.session = requests.Session()

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(method, self.url + path, timeout=60, **kwargs)
        if response.status_code >= 400:
            self.captured.error_bodies.append(f"{method} {path}: {response.text}")
        return response


def run_flow(api: Api, env: dict[str, str], hooks: Hooks) -> dict[str, str]:
    """Drive every feature that handles a secret; return the secrets by name."""
    from orderdesk.demo import run_demo

    secrets: dict[str, str] = {}
    created = run_cli(env, "keys", "create", "--project", "acme", "--scopes", SCOPES)
    key = created.stdout.strip().splitlines()[-1]
    api.captured.outputs.append(created.stderr)
    secrets["api key"] = key
    headers = {"X-API-KEY": key}

    endpoint = api.call(
        "POST",
        "/api/unstable/webhooks",
        json={"url": hooks.url, "events": ["*"], "description": "all events"},
        headers=headers,
    )
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["id"]
    secrets["webhook secret"] = endpoint.json()["secret"]

    order = api.call(
        "POST",
        "/api/2022-06-09/orders",
        json={
            "recipient": {"email": "buyer@example.com"},
            "payment": {"method": "devnet", "currency": "usdc"},
            "lineItems": [{"productLocator": "amazon:B08N5WRWNW"}],
        },
        headers=headers,
    )
    assert order.status_code == 201, order.text
    secrets["client secret"] = order.json()["clientSecret"]
    order_id = order.json()["order"]["orderId"]
    # The client secret in use, and in the wrong places.
    own = api.call(
        "GET",
        f"/api/2022-06-09/orders/{order_id}",
        headers={"Authorization": secrets["client secret"]},
    )
    assert own.status_code == 200, own.text
    provoke_errors(api, secrets, order_id, endpoint_id)

    rotated = api.call(
        "POST", f"/api/unstable/webhooks/{endpoint_id}/rotate-secret", headers=headers
    )
    assert rotated.status_code == 200, rotated.text
    secrets["rotated webhook secret"] = rotated.json()["secret"]

    # Payment, delivery, refund with its emailed label, and the payout.
    run_demo(api.url, key)

    console_flow(api, env, secrets)
    return secrets


def provoke_errors(
    api: Api, secrets: dict[str, str], order_id: str, endpoint_id: str
) -> None:
    """Requests that fail while carrying a secret; their error bodies are kept."""
    key = secrets["api key"]
    other = api.call(
        "GET",
        "/api/2022-06-09/orders/00000000-0000-4000-8000-000000000000",
        headers={"Authorization": secrets["client secret"]},
    )
    assert other.status_code == 401
    bearer = api.call(
        "GET",
        f"/api/2022-06-09/orders/{order_id}",
        headers={"Authorization": "Bearer " + secrets["client secret"]},
    )
    assert bearer.status_code == 401
    wrong_environment = api.call(
        "GET",
        "/api/2022-06-09/orders",
        headers={"X-API-KEY": key.replace("sk_development_", "sk_production_")},
    )
    assert wrong_environment.status_code == 401
    unknown_key = api.call(
        "GET", "/api/2022-06-09/orders", headers={"X-API-KEY": key + "x"}
    )
    assert unknown_key.status_code == 401
    # Invalid bodies sent with valid credentials. (A field's own invalid value may
    # be quoted back to its sender, so no secret goes in a field.)
    bad_body = api.call(
        "PATCH",
        f"/api/2022-06-09/orders/{order_id}",
        json={"locale": 5, "recipient": {"email": "not an email"}},
        headers={"Authorization": secrets["client secret"]},
    )
    assert bad_body.status_code == 400
    bad_hook = api.call(
        "PATCH",
        f"/api/unstable/webhooks/{endpoint_id}",
        json={"url": "ftp://merchant.example.com/hooks"},
        headers={"X-API-KEY": key},
    )
    assert bad_hook.status_code == 400
    wrong_scope = api.call(
        "GET",
        f"/api/unstable/webhooks/{endpoint_id}",
        headers={"Authorization": secrets["client secret"]},
    )
    assert wrong_scope.status_code in (401, 403)


def console_flow(api: Api, env: dict[str, str], secrets: dict[str, str]) -> None:
    """Log in to the console, make a key there, then read every page."""
    user = run_cli(
        env,
        "users", "create", "--email", OPERATOR, "--role", "operator",
        "--password-stdin",
        stdin=CONSOLE_PASSWORD + "\n",
    )  # fmt: skip
    api.captured.outputs.append(user.stdout + user.stderr)
    secrets["console password"] = CONSOLE_PASSWORD
    browser = Api(api.url, api.captured)
    login = browser.call("GET", "/console/login")
    signed_in = browser.call(
        "POST",
        "/console/login",
        data={
            "login_token": hidden_token(login.text, "login_token"),
            "email": OPERATOR,
            "password": CONSOLE_PASSWORD,
            "next": "",
        },
    )
    assert signed_in.status_code == 200, signed_in.text
    for cookie in browser.session.cookies:
        secrets[f"console cookie {cookie.name}"] = cookie.value or ""

    keys = browser.call("GET", "/console/keys")
    made = browser.call(
        "POST",
        "/console/keys",
        data={
            "csrf_token": hidden_token(keys.text, "csrf_token"),
            "project": "acme",
            "scopes": "orders.read",
            "name": "made in the console",
        },
    )
    assert made.status_code == 200, made.text
    # The new key in full; the list also shows the short prefixes of every key.
    shown = re.findall(r"sk_development_[A-Za-z0-9_-]+", made.text)
    console_key = max(shown, key=len)
    assert len(console_key) > 30
    secrets["console api key"] = console_key

    pages = ["/console/orders", "/console/refunds", "/console/webhooks"]
    pages += ["/console/keys", "/console/jobs", "/console/mail"]
    listing = browser.call("GET", "/console/orders").text
    pages += sorted(set(re.findall(r'href="(/console/orders/[0-9a-f-]{36})"', listing)))
    webhooks = browser.call("GET", "/console/webhooks").text
    pages += sorted(
        set(re.findall(r'href="(/console/webhooks/[0-9a-f-]{36})"', webhooks))
    )
    mail = browser.call("GET", "/console/mail").text
    pages += sorted(set(re.findall(r'href="(/console/mail/[^"]+)"', mail)))
    for page in pages:
        response = browser.call("GET", page)
        assert response.status_code == 200, (page, response.text[:300])
        api.captured.pages[page] = response.text
    assert len(api.captured.pages) >= 9


def forms_of(value: str) -> list[str]:
    """The spellings of a secret to look for: as is, and URL-encoded."""
    forms = {value, quote(value, safe=""), quote(value)}
    return sorted(form for form in forms if len(form) >= 8)


def leaks(secrets: dict[str, str], places: dict[str, str]) -> list[str]:
    found = []
    for secret_name, value in secrets.items():
        for form in forms_of(value):
            for place, content in places.items():
                if form in content:
                    found.append(f"{secret_name} in {place}")
    return sorted(set(found))


def treasury_keys(database_url: str) -> dict[str, str]:
    """The private key of each project's treasury, derived as the service does."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            indexes = connection.execute(select(Project.name, Project.treasury_index))
            return {
                f"treasury key of {name}": treasury_account(
                    TREASURY_SECRET.encode(), index
                ).key.hex()
                for name, index in indexes
            }
    finally:
        engine.dispose()


def database_text(database_url: str) -> dict[str, str]:
    """Every value of every column, as text, by table."""
    engine = create_engine(database_url)
    try:
        tables: dict[str, str] = {}
        with engine.connect() as connection:
            for table in inspect(engine).get_table_names():
                rows = connection.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608
                parts = []
                for row in rows:
                    for value in row:
                        if isinstance(value, (bytes, memoryview)):
                            raw = bytes(value)
                            parts.append(raw.hex())
                            parts.append(raw.decode("latin-1"))
                        elif value is not None:
                            parts.append(str(value))
                tables[table] = "\n".join(parts)
        return tables
    finally:
        engine.dispose()


def seed_sample_catalog(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, treasury_secret=TREASURY_SECRET)
    runtime = Runtime.build(settings)
    runtime.start()
    try:
        seed_catalog(runtime)
    finally:
        runtime.close()


def test_no_secret_leaks(
    database_url: str, tmp_path: Path, smtp_inbox: tuple[AuthInbox, int]
) -> None:
    inbox, smtp_port = smtp_inbox
    env = service_env(database_url, tmp_path, smtp_port)
    seed_sample_catalog(database_url, tmp_path)
    captured = Captured()
    port = free_port()
    log_path = tmp_path / "serve.log"
    hooks = Hooks()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*ORDERDESK, "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ready(url, process, lambda: log_path.read_text(errors="replace"))
        secrets = run_flow(Api(url, captured), env, hooks)
    finally:
        process.terminate()
        process.wait(timeout=60)
        hooks.close()

    secrets["treasury secret"] = TREASURY_SECRET
    secrets["console session secret"] = CONSOLE_SECRET
    secrets["smtp password"] = SMTP_PASSWORD
    keys = treasury_keys(database_url)
    assert keys, "the flow made no project"
    for name, value in keys.items():
        secrets[name] = value
        secrets[f"{name} with 0x"] = "0x" + value

    logs = log_path.read_text(errors="replace")
    log_lines = [line for line in logs.splitlines() if line.startswith("{")]
    # The logs are JSON, at debug level, with the access log on.
    for line in log_lines:
        json.loads(line)
    events = [json.loads(line).get("event") for line in log_lines]
    assert "request_finished" in events
    assert "mail_sent" in events
    assert len(log_lines) > 100
    assert inbox.logins, "the service never logged in to the SMTP server"
    assert inbox.messages, "the service sent no email"
    assert hooks.received, "no webhook was delivered"

    places = {
        "the service log": logs,
        "CLI output": "\n".join(captured.outputs),
        "an error body": "\n".join(captured.error_bodies),
        "an email": "\n".join(inbox.messages),
        "a webhook": "\n".join(hooks.received),
        **{f"console page {path}": page for path, page in captured.pages.items()},
    }
    assert len(captured.error_bodies) >= 6
    assert leaks(secrets, places) == []

    # The database keeps the webhook secrets, which sign each delivery, and the
    # console keeps no secret of its own there. Nothing else is stored in clear.
    stored = {
        name: value for name, value in secrets.items() if "webhook secret" not in name
    }
    assert leaks(stored, database_text(database_url)) == []


# The treasury secret file


@dataclass
class Started:
    process: subprocess.Popen[str]
    secret_file: Path
    port: int
    env: dict[str, str]


def start_with_secret_file(
    database_url: str, tmp_path: Path, mode: int | None
) -> Started:
    secret_file = tmp_path / "treasury.key"
    if mode is not None:
        secret_file.write_text(TREASURY_SECRET + "\n", encoding="utf-8")
        secret_file.chmod(mode)
    env = {
        **os.environ,
        "ORDERDESK_DATABASE_URL": database_url,
        "ORDERDESK_DATA_DIR": str(tmp_path / "var"),
        "ORDERDESK_TREASURY_SECRET_FILE": str(secret_file),
        "ORDERDESK_DEVNET": "false",
    }
    env.pop("ORDERDESK_TREASURY_SECRET", None)
    port = free_port()
    process = subprocess.Popen(
        [*ORDERDESK, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Started(process, secret_file, port, env)


# The file is read before the database is opened, so SQLite alone is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o770])
def test_secret_file_open_to_others_stops_start(
    database_url: str, tmp_path: Path, mode: int
) -> None:
    started = start_with_secret_file(database_url, tmp_path, mode)
    output, _ = started.process.communicate(timeout=120)
    output = " ".join(output.split())  # the console wraps long lines

    assert started.process.returncode == 1, output
    assert f"chmod 600 {started.secret_file}" in output
    assert f"mode {mode:04o}" in output
    assert "Traceback" not in output
    assert TREASURY_SECRET not in output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_secret_file_of_owner_only_starts(
    database_url: str, tmp_path: Path, mode: int
) -> None:
    started = start_with_secret_file(database_url, tmp_path, mode)
    try:
        url = f"http://127.0.0.1:{started.port}"
        wait_for_ready(url, started.process)  # type: ignore[arg-type]
        if mode == 0o600:
            created = run_cli(
                started.env,
                "keys", "create", "--project", "acme", "--scopes", "orders.read",
            )  # fmt: skip
            assert created.stdout.strip()
    finally:
        started.process.terminate()
        started.process.communicate(timeout=60)
    if mode == 0o600:
        # The treasury address comes from the file's secret.
        [address] = treasury_addresses(database_url)
        assert address == treasury_account(TREASURY_SECRET.encode(), 1).address


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_missing_secret_file_stops_start(database_url: str, tmp_path: Path) -> None:
    started = start_with_secret_file(database_url, tmp_path, None)
    output, _ = started.process.communicate(timeout=120)
    output = " ".join(output.split())

    assert started.process.returncode == 1, output
    assert str(started.secret_file) in output
    assert "Traceback" not in output


def treasury_addresses(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(select(Project.treasury_address)))
    finally:
        engine.dispose()
