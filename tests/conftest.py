"""Shared fixtures: a fresh database per test on SQLite and PostgreSQL, app, keys."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orderdesk.app import create_app
from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.auth.services import create_api_key, get_or_create_project
from orderdesk.config import Settings
from orderdesk.runtime import Runtime

POSTGRES_URL = os.environ.get(
    "ORDERDESK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_SECRET = "test-treasury-secret-" + "0" * 32


def _postgres_reachable() -> str | None:
    """Return None when PostgreSQL responds, else the reason it does not."""
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc.__class__.__name__}"


_POSTGRES_PROBLEM: list[str | None] = []


def require_postgres() -> None:
    if not _POSTGRES_PROBLEM:
        _POSTGRES_PROBLEM.append(_postgres_reachable())
    problem = _POSTGRES_PROBLEM[0]
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{problem}; CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(f"{problem} (set ORDERDESK_TEST_POSTGRES_URL to run these tests)")


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a new, empty schema dropped afterwards."""
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"}
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orderdesk.db'}"
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'orderdesk.db'}"


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "data_dir": tmp_path / "var",
        "mail_dir": tmp_path / "mail",
        "treasury_secret": TEST_SECRET,
        "rate_limit_writes_per_minute": 0,
        "rate_limit_reads_per_minute": 0,
        "worker_poll_seconds": 0.05,
        "payment_recheck_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """Override in a test module to change settings for every test in it."""
    return {}


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, settings_overrides: dict[str, object]
) -> Settings:
    return make_settings(database_url, tmp_path, **settings_overrides)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.build(settings)
    runtime.start()
    yield runtime
    runtime.close()


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime=runtime)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


KeyMaker = Callable[..., str]


@pytest.fixture
def make_key(runtime: Runtime) -> KeyMaker:
    """Create a key: make_key("orders.read", project="p", environment=None)."""

    def make(
        *scopes: str, project: str = "test-project", environment: str | None = None
    ) -> str:
        with runtime.session_factory() as session, session.begin():
            owner = get_or_create_project(session, runtime.settings, project)
            _key, value = create_api_key(
                session,
                owner,
                environment or runtime.settings.environment,
                list(scopes or ALL_SCOPES),
            )
        return value

    return make


@pytest.fixture
def api_key(make_key: KeyMaker) -> str:
    """A key with every scope in the default test project."""
    return make_key(*ALL_SCOPES)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving the app on a random loopback port in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server
