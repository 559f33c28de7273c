"""Helpers shared by the command groups: a started runtime, output and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from orderdesk.config import load_settings
from orderdesk.errors import OrderDeskError
from orderdesk.runtime import Runtime

console = Console(stderr=True)
JSON_OPTION = typer.Option("--json", help="Print JSON instead of a table.")


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def start_runtime() -> Runtime:
    from orderdesk.logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    runtime = Runtime.build(settings)
    runtime.start()
    return runtime


@contextmanager
def session_scope(*, write: bool = True) -> Iterator[tuple[Runtime, Session]]:
    """Yield a runtime and a session. Commit at the end; a domain error exits 1."""
    runtime = start_runtime()
    session = runtime.session_factory()
    try:
        yield runtime, session
        if write:
            session.commit()
    except OrderDeskError as exc:
        session.rollback()
        fail(exc.message)
    finally:
        session.close()
        runtime.close()


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(table)


def project_id_for(session: Session, name: str) -> str:
    from orderdesk.auth.services import get_project_by_name

    project = get_project_by_name(session, name)
    if project is None:
        fail(f"No project is named {name!r}. List keys with: orderdesk keys list.")
    return project.id
