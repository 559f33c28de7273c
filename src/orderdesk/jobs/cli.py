"""`orderdesk jobs`: inspect the outbox and retry failed jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from orderdesk.cli_support import (
    JSON_OPTION,
    fail,
    print_json,
    print_table,
    session_scope,
)
from orderdesk.timefmt import iso

jobs_app = typer.Typer(help="Inspect and retry background jobs.", no_args_is_help=True)


@jobs_app.command("list")
def list_command(
    failed: Annotated[bool, typer.Option("--failed", help="Only failed jobs.")] = False,
    status: Annotated[
        str | None, typer.Option(help="queued, running, done or failed.")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List jobs, oldest first."""
    from orderdesk.jobs.services import find_jobs

    wanted = "failed" if failed else status
    with session_scope(write=False) as (_runtime, session):
        jobs = [
            {
                "id": job.id,
                "kind": job.kind,
                "status": job.status,
                "attempts": job.attempts,
                "runAt": iso(job.run_at),
                "lastError": (job.last_error or "").strip().splitlines()[-1:] or None,
            }
            for job in find_jobs(session, status=wanted, kind=kind)
        ]
    if as_json:
        print_json(jobs)
        return
    print_table(
        None,
        ["id", "kind", "status", "attempts", "run at", "last error"],
        [
            [j["id"], j["kind"], j["status"], j["attempts"], j["runAt"], j["lastError"]]
            for j in jobs
        ],
    )


@jobs_app.command("retry")
def retry_command(job_id: Annotated[int, typer.Argument(help="The job id.")]) -> None:
    """Queue a job again now (for example a failed one)."""
    from orderdesk.jobs.services import retry_job

    with session_scope() as (_runtime, session):
        job = retry_job(session, job_id)
        if job is None:
            fail(f"No job {job_id} exists. List them with: orderdesk jobs list.")
    print(f"job {job_id} queued")
