"""`orderdesk webhooks`: manage endpoints and look at deliveries."""

from __future__ import annotations

from typing import Annotated

import typer

from orderdesk.cli_support import (
    JSON_OPTION,
    fail,
    print_json,
    print_table,
    project_id_for,
    session_scope,
)

webhooks_app = typer.Typer(help="Manage webhook endpoints.", no_args_is_help=True)
ProjectOption = Annotated[str, typer.Option(help="Project name.")]


@webhooks_app.command("list")
def list_command(
    project: ProjectOption = "demo", as_json: Annotated[bool, JSON_OPTION] = False
) -> None:
    """List the project's endpoints (never their secrets)."""
    from orderdesk.webhooks.schemas import endpoint_body
    from orderdesk.webhooks.services import list_endpoints

    with session_scope(write=False) as (_runtime, session):
        endpoints = [
            endpoint_body(e)
            for e in list_endpoints(session, project_id_for(session, project))
        ]
    if as_json:
        print_json(endpoints)
        return
    print_table(
        None,
        ["id", "url", "events"],
        [[e["id"], e["url"], ",".join(e["events"])] for e in endpoints],
    )


@webhooks_app.command("add")
def add_command(
    url: Annotated[str, typer.Argument(help="Where deliveries are POSTed.")],
    events: Annotated[
        str, typer.Option(help="Comma-separated event types, or *.")
    ] = "*",
    description: Annotated[str | None, typer.Option(help="A label.")] = None,
    project: ProjectOption = "demo",
) -> None:
    """Register an endpoint; its secret is printed once, as the last line."""
    from orderdesk.webhooks.services import create_endpoint

    with session_scope() as (runtime, session):
        endpoint, secret = create_endpoint(
            session,
            runtime.settings,
            project_id_for(session, project),
            "cli",
            url=url,
            events=[e.strip() for e in events.split(",") if e.strip()],
            description=description,
        )
        endpoint_id = endpoint.id
    print(f"endpoint {endpoint_id}; signing secret (shown once):")
    print(secret)


@webhooks_app.command("deliveries")
def deliveries_command(
    endpoint_id: Annotated[str, typer.Argument(help="The endpoint id.")],
    project: ProjectOption = "demo",
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List an endpoint's deliveries, newest first."""
    from orderdesk.webhooks.schemas import delivery_body
    from orderdesk.webhooks.services import list_deliveries, require_endpoint

    with session_scope(write=False) as (_runtime, session):
        endpoint = require_endpoint(
            session, project_id_for(session, project), endpoint_id
        )
        page = list_deliveries(session, endpoint, limit=100)
        rows = [delivery_body(d) for d in page.deliveries]
    if as_json:
        print_json(rows)
        return
    print_table(
        None,
        ["delivery", "event", "status", "attempts"],
        [
            [
                d["deliveryId"],
                d.get("eventType"),
                d.get("status"),
                len(d.get("attempts", [])),
            ]
            for d in rows
        ],
    )


@webhooks_app.command("resend")
def resend_command(
    endpoint_id: Annotated[str, typer.Argument(help="The endpoint id.")],
    delivery_id: Annotated[str, typer.Argument(help="The delivery id.")],
    project: ProjectOption = "demo",
) -> None:
    """Send a delivered or failed delivery again."""
    from orderdesk.webhooks.services import (
        get_delivery,
        require_endpoint,
        resend_delivery,
    )

    with session_scope() as (_runtime, session):
        endpoint = require_endpoint(
            session, project_id_for(session, project), endpoint_id
        )
        delivery = get_delivery(session, endpoint, delivery_id, for_update=True)
        if delivery is None:
            fail(f"Endpoint {endpoint_id} has no delivery {delivery_id!r}.")
        resend_delivery(session, delivery, "cli")
    print(f"delivery {delivery_id} queued again")
