"""The orderdesk command line."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orderdesk.cli_support import JSON_OPTION, print_json
from orderdesk.config import load_settings
from orderdesk.console.cli import users_app
from orderdesk.jobs.cli import jobs_app
from orderdesk.orders.cli import orders_app
from orderdesk.refunds.cli import refunds_app
from orderdesk.shipping.cli import shipments_app
from orderdesk.webhooks.cli import webhooks_app

app = typer.Typer(
    help="orderdesk: order management for headless checkout.", no_args_is_help=True
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
catalog_app = typer.Typer(
    help="Import and list catalog products.", no_args_is_help=True
)
projects_app = typer.Typer(
    help="List projects and choose their fulfilment.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(catalog_app, name="catalog")
app.add_typer(users_app, name="users")
app.add_typer(projects_app, name="projects")
app.add_typer(refunds_app, name="refunds")
app.add_typer(orders_app, name="orders")
app.add_typer(shipments_app, name="shipments")
app.add_typer(jobs_app, name="jobs")
app.add_typer(webhooks_app, name="webhooks")

console = Console(stderr=True)
DEMO_STEP_SECONDS = 1.0


def _runtime():  # type: ignore[no-untyped-def]
    from orderdesk.logs import configure_logging
    from orderdesk.runtime import Runtime

    settings = load_settings()
    configure_logging(settings)
    runtime = Runtime.build(settings)
    start_runtime(runtime)
    return runtime


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def start_runtime(runtime: Any) -> None:
    """Start the runtime, or exit with the message of a configuration error."""
    from orderdesk.payments.chains import ChainConfigError
    from orderdesk.payments.treasury import TreasurySecretError

    try:
        runtime.start()
    except (TreasurySecretError, ChainConfigError) as exc:
        fail(str(exc))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    demo: Annotated[
        bool,
        typer.Option(
            help="Seed a demo project, the sample catalog and a key with every scope."
        ),
    ] = False,
    worker: Annotated[
        bool, typer.Option(help="Run the job worker in this process.")
    ] = True,
) -> None:
    """Run the HTTP API (and, unless --no-worker, the job worker)."""
    import uvicorn

    from orderdesk.app import create_app
    from orderdesk.logs import configure_logging
    from orderdesk.runtime import Runtime, freeze_startup_objects

    settings = load_settings()
    if demo and "ORDERDESK_SIMULATED_STEP_SECONDS" not in os.environ:
        # The demo's simulated carrier moves in seconds, not in the default's tens.
        settings.simulated_step_seconds = DEMO_STEP_SECONDS
    configure_logging(settings)
    runtime = Runtime.build(settings)
    start_runtime(runtime)
    if demo:
        from orderdesk.demo_seed import seed_demo

        key = seed_demo(runtime)
        console.print(f"Demo project ready at http://{host}:{port} with every scope.")
        console.print("API key (shown once):")
        print(key, flush=True)
    application = create_app(runtime=runtime, run_worker=worker)
    # uvicorn handles SIGTERM itself while it runs: it stops taking connections and
    # waits for the requests in flight. Afterwards it raises the signal again, and this
    # handler turns that into a clean exit instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    freeze_startup_objects()
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


@app.command("worker")
def run_worker() -> None:
    """Run the job worker until interrupted."""
    from orderdesk.jobs.worker import Worker
    from orderdesk.runtime import freeze_startup_objects

    runtime = _runtime()
    job_worker = Worker(runtime)
    signal.signal(signal.SIGTERM, lambda *_: job_worker.stop())
    freeze_startup_objects()
    try:
        job_worker.run_forever()
    except KeyboardInterrupt:
        job_worker.stop()
    finally:
        runtime.close()


@app.command()
def migrate() -> None:
    """Apply database migrations up to the latest."""
    runtime = _runtime()
    runtime.close()
    console.print("database is up to date")


@keys_app.command("create")
def keys_create(
    project: Annotated[
        str, typer.Option(help="Project name; created if it does not exist.")
    ],
    scopes: Annotated[
        str,
        typer.Option(help="Comma-separated scopes, e.g. orders.create,orders.read."),
    ],
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Create an API key. The key is printed once, as the last line."""
    from orderdesk.auth.services import (
        create_api_key,
        get_or_create_project,
        parse_scopes,
    )
    from orderdesk.errors import OrderDeskError

    runtime = _runtime()
    try:
        with runtime.session_factory() as session, session.begin():
            owner = get_or_create_project(session, runtime.settings, project)
            key, value = create_api_key(
                session, owner, runtime.settings.environment, parse_scopes(scopes), name
            )
    except OrderDeskError as exc:
        fail(exc.message)
    finally:
        runtime.close()
    console.print(
        f"created key {key.id} for project {project!r} with scopes {key.scopes}"
    )
    console.print("Store it now: it is not shown again.")
    print(value, flush=True)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key id or the full key.")],
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    from orderdesk.auth.services import revoke_api_key
    from orderdesk.errors import OrderDeskError

    runtime = _runtime()
    try:
        with runtime.session_factory() as session, session.begin():
            revoked = revoke_api_key(session, key)
            key_id = revoked.id
    except OrderDeskError as exc:
        fail(exc.message)
    finally:
        runtime.close()
    console.print(f"revoked key {key_id}")


@projects_app.command("list")
def projects_list() -> None:
    """List projects with their treasury address and fulfilment provider."""
    from orderdesk.auth.services import list_projects

    runtime = _runtime()
    with runtime.session_factory() as session:
        for project in list_projects(session):
            print(
                f"{project.name}  treasury {project.treasury_address}  "
                f"fulfilment {project.fulfilment_provider}"
            )
    runtime.close()


@projects_app.command("set-fulfilment")
def projects_set_fulfilment(
    project: Annotated[str, typer.Argument(help="Project name.")],
    provider: Annotated[str, typer.Argument(help="manual or simulated.")],
) -> None:
    """Choose how a project's paid orders are fulfilled."""
    from orderdesk.auth.services import get_project_by_name, set_fulfilment_provider
    from orderdesk.errors import OrderDeskError

    runtime = _runtime()
    try:
        with runtime.session_factory() as session, session.begin():
            found = get_project_by_name(session, project)
            if found is None:
                fail(f"No project is named {project!r}. See: orderdesk projects list.")
                return
            set_fulfilment_provider(found, provider)
    except OrderDeskError as exc:
        fail(exc.message)
    finally:
        runtime.close()
    console.print(f"project {project!r} now uses the {provider} fulfilment provider")


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """List API keys (never their values)."""
    from orderdesk.auth.services import list_api_keys
    from orderdesk.timefmt import iso

    runtime = _runtime()
    with runtime.session_factory() as session:
        keys: list[dict[str, Any]] = [
            {
                "id": key.id,
                "projectId": key.project_id,
                "prefix": key.display_prefix,
                "scopes": sorted(key.scope_set),
                "createdAt": iso(key.created_at),
                "revokedAt": iso(key.revoked_at),
            }
            for key in list_api_keys(session)
        ]
    runtime.close()
    if as_json:
        print_json(keys)
        return
    for key in keys:
        state = "revoked" if key["revokedAt"] else "active"
        print(f"{key['id']}  {key['prefix']}…  {state}  {','.join(key['scopes'])}")


@catalog_app.command("import")
def catalog_import(
    path: Annotated[Path, typer.Argument(help="CSV or JSON catalog file.")],
) -> None:
    """Insert or update catalog products from a CSV or JSON file."""
    from orderdesk.catalog.services import import_rows, read_catalog_file
    from orderdesk.errors import OrderDeskError

    if not path.is_file():
        fail(f"{path} does not exist or is not a file.")
    from rich.progress import track

    runtime = _runtime()
    try:
        rows = read_catalog_file(path)
        with runtime.session_factory() as session, session.begin():
            result = import_rows(
                session, track(rows, description="importing", console=console)
            )
    except (OrderDeskError, ValueError) as exc:
        fail(getattr(exc, "message", str(exc)))
    finally:
        runtime.close()
    console.print(
        f"imported {result.created} new and {result.updated} updated products"
    )


@catalog_app.command("list")
def catalog_list(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """List catalog products."""
    from orderdesk.catalog.services import list_products

    runtime = _runtime()
    with runtime.session_factory() as session:
        products = [
            {
                "locator": product.locator,
                "name": product.name,
                "price": str(product.price),
                "shipping": str(product.shipping),
                "stock": product.stock,
            }
            for product in list_products(session)
        ]
    runtime.close()
    if as_json:
        print_json(products)
        return
    for item in products:
        print(
            f"{item['locator']}  {item['price']} USD  "
            f"stock {item['stock']}  {item['name']}"
        )


@app.command()
def demo(
    base_url: Annotated[
        str, typer.Option(help="Where orderdesk serve listens.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(
            help="A key with every scope (printed by serve --demo).",
            envvar="ORDERDESK_API_KEY",
        ),
    ] = None,
) -> None:
    """Run the main job over HTTP: order, pay, ship, track, refund."""
    from orderdesk.demo import DemoFailed, run_demo

    if not api_key:
        fail("Pass --api-key (the key printed by: orderdesk serve --demo).")
        return
    try:
        run_demo(base_url.rstrip("/"), api_key)
    except DemoFailed as exc:
        fail(str(exc))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
