"""Console users: the `orderdesk users` commands, the password rule and hashes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.conftest import TEST_SECRET
from typer.testing import CliRunner

from orderdesk.cli import app
from orderdesk.config import Settings
from orderdesk.console import services
from orderdesk.console.models import ConsoleSession, ConsoleUser
from orderdesk.console.passwords import password_problem, verify_password
from orderdesk.console.security import create_session
from orderdesk.errors import Conflict, InvalidInput
from orderdesk.logs import configure_logging
from orderdesk.runtime import Runtime

runner = CliRunner()
STRONG = "plum tractor seventeen lanterns"


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, runtime: Runtime
) -> Iterator[Runtime]:
    """Point the CLI at the test database through ORDERDESK_* variables."""
    monkeypatch.setenv("ORDERDESK_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ORDERDESK_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ORDERDESK_MAIL_DIR", str(settings.mail_dir))
    monkeypatch.setenv("ORDERDESK_TREASURY_SECRET", TEST_SECRET)
    monkeypatch.setenv("ORDERDESK_DEVNET", "false")
    yield runtime
    # The CLI pointed the loggers at the runner's stderr, which is closed by now.
    configure_logging(settings)


def users(runtime: Runtime) -> list[ConsoleUser]:
    with runtime.session_factory() as session:
        return list(session.scalars(select(ConsoleUser)))


def test_cli_creates_user(cli_env: Runtime) -> None:
    result = runner.invoke(
        app,
        [
            "users",
            "create",
            "--email",
            "Ops@Example.com",
            "--role",
            "operator",
            "--password-stdin",
        ],
        input=STRONG + "\n",
    )
    assert result.exit_code == 0, result.output
    (user,) = users(cli_env)
    assert user.email == "ops@example.com"
    assert user.role == "operator"
    assert user.password_hash.startswith("$argon2id$")
    assert STRONG not in user.password_hash
    assert verify_password(user.password_hash, STRONG)


@pytest.mark.parametrize(
    ("password", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("short1!", "at least 12"),
        ("aaaaaaaaaaaaaaaa", "too few"),
        ("Password123456!", "common password"),
        ("123456789012", "common password"),
        ("ops.person.2026-keys", "email"),
    ],
)
def test_cli_rejects_weak_password(cli_env: Runtime, password: str, words: str) -> None:
    result = runner.invoke(
        app,
        [
            "users",
            "create",
            "--email",
            "ops.person@example.com",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        input=password + "\n",
    )
    assert result.exit_code == 1
    assert words in result.output
    assert users(cli_env) == []


def test_cli_rejects_unknown_role(cli_env: Runtime) -> None:
    result = runner.invoke(
        app,
        [
            "users",
            "create",
            "--email",
            "a@example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        input=STRONG + "\n",
    )
    assert result.exit_code == 1
    assert "viewer, operator" in result.output
    assert users(cli_env) == []


def test_cli_rejects_duplicate_email(cli_env: Runtime) -> None:
    arguments = [
        "users",
        "create",
        "--email",
        "a@example.com",
        "--role",
        "viewer",
        "--password-stdin",
    ]
    assert runner.invoke(app, arguments, input=STRONG + "\n").exit_code == 0
    again = runner.invoke(
        app, [*arguments[:3], "A@EXAMPLE.COM", *arguments[4:]], input=STRONG + "\n"
    )
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert len(users(cli_env)) == 1


def test_set_password_ends_sessions(cli_env: Runtime) -> None:
    with cli_env.session_factory() as session, session.begin():
        user = services.create_user(session, "a@example.com", "operator", STRONG)
        create_session(session, cli_env.settings, user, ip="127.0.0.1", user_agent=None)
    result = runner.invoke(
        app,
        ["users", "set-password", "--email", "a@example.com", "--password-stdin"],
        input="another long passphrase here\n",
    )
    assert result.exit_code == 0, result.output
    with cli_env.session_factory() as session:
        assert session.scalars(select(ConsoleSession)).all() == []
        (stored,) = session.scalars(select(ConsoleUser)).all()
        assert verify_password(stored.password_hash, "another long passphrase here")
        assert not verify_password(stored.password_hash, STRONG)


def test_cli_lists_users(cli_env: Runtime) -> None:
    with cli_env.session_factory() as session, session.begin():
        services.create_user(session, "b@example.com", "viewer", STRONG)
    result = runner.invoke(app, ["users", "list"])
    assert result.exit_code == 0, result.output
    assert "b@example.com  viewer  last login never" in result.output


def test_service_rejects_bad_email(runtime: Runtime) -> None:
    with runtime.session_factory() as session:
        with pytest.raises(InvalidInput, match="not an email address"):
            services.create_user(session, "not-an-email", "viewer", STRONG)


def test_service_duplicate_is_conflict(runtime: Runtime) -> None:
    with runtime.session_factory() as session, session.begin():
        services.create_user(session, "c@example.com", "viewer", STRONG)
        with pytest.raises(Conflict):
            services.create_user(session, "C@example.com", "operator", STRONG)


def test_password_rule_accepts_passphrase() -> None:
    assert password_problem(STRONG, "ops@example.com") is None
    assert password_problem("x" * 257) is not None


def test_secret_file_made_in_development(tmp_path: Path, runtime: Runtime) -> None:
    from orderdesk.console.security import load_session_secret

    settings = runtime.settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    secret = load_session_secret(settings)
    path = tmp_path / "fresh" / "console-session.key"
    assert path.read_bytes().strip() == secret
    assert path.stat().st_mode & 0o077 == 0
    assert load_session_secret(settings) == secret
