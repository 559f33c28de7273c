"""`orderdesk users`: create console users and change their passwords."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

users_app = typer.Typer(
    help="Create and list operator console users.", no_args_is_help=True
)
console = Console(stderr=True)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def _read_password(from_stdin: bool) -> str:
    """Read the password from the first line of standard input, or prompt twice."""
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    second = typer.prompt("Repeat the password", hide_input=True)
    if first != second:
        _fail("The two passwords differ. Run the command again.")
    return str(first)


def _runtime():  # type: ignore[no-untyped-def]
    from orderdesk.cli import _runtime as build

    return build()


@users_app.command("create")
def create(
    email: Annotated[str, typer.Option(help="The user's email, used to log in.")],
    role: Annotated[
        str,
        typer.Option(help="viewer (reads every page) or operator (also acts)."),
    ],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of standard input.",
        ),
    ] = False,
) -> None:
    """Create a console user. Without --password-stdin the password is prompted."""
    from orderdesk.console.passwords import password_problem
    from orderdesk.console.services import create_user, normalize_email, parse_role
    from orderdesk.errors import OrderDeskError

    try:
        address = normalize_email(email)
        parse_role(role)
    except OrderDeskError as exc:
        _fail(exc.message)
        return
    password = _read_password(password_stdin)
    problem = password_problem(password, address)
    if problem is not None:
        _fail(problem)
    runtime = _runtime()
    try:
        with runtime.session_factory() as session, session.begin():
            user = create_user(session, address, role, password)
            user_id, user_role = user.id, user.role
    except OrderDeskError as exc:
        _fail(exc.message)
    finally:
        runtime.close()
    console.print(f"created {user_role} {address} ({user_id})")


@users_app.command("set-password")
def set_password(
    email: Annotated[str, typer.Option(help="The user's email.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of standard input.",
        ),
    ] = False,
) -> None:
    """Change a user's password; every session of that user ends."""
    from orderdesk.console import services
    from orderdesk.errors import OrderDeskError

    password = _read_password(password_stdin)
    runtime = _runtime()
    try:
        with runtime.session_factory() as session, session.begin():
            services.set_password(session, email, password)
    except OrderDeskError as exc:
        _fail(exc.message)
    finally:
        runtime.close()
    console.print(f"changed the password of {email.strip().lower()}")


@users_app.command("list")
def list_users() -> None:
    """List console users with their roles and last login."""
    from orderdesk.console.services import list_users as find_users
    from orderdesk.timefmt import iso

    runtime = _runtime()
    try:
        with runtime.session_factory() as session:
            for user in find_users(session):
                last = iso(user.last_login_at) if user.last_login_at else "never"
                print(f"{user.email}  {user.role}  last login {last}")
    finally:
        runtime.close()
