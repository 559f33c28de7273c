"""Failed jobs, API keys and, in development, the mail folder."""

from __future__ import annotations

from pathlib import Path

import structlog
from fastapi import APIRouter, Request, Response

from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.config import Settings
from orderdesk.console import actions, mailbox, queries
from orderdesk.console.rendering import redirect, render
from orderdesk.console.web import (
    ActingUser,
    ConsoleRoute,
    DbSession,
    Form,
    SignedIn,
    action_failed,
    form_list,
)
from orderdesk.errors import NotFound, OrderDeskError

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


@router.get("/jobs")
def jobs_page(request: Request, signed_in: SignedIn, session: DbSession) -> Response:
    """List failed jobs, most recently failed first."""
    jobs = queries.failed_jobs(session)
    return render(
        request,
        "jobs.html",
        {"title": "Failed jobs", "jobs": jobs, "can_act": signed_in.can_act},
    )


@router.post("/jobs/{job_id}/retry")
def retry(
    request: Request,
    job_id: str,
    form: Form,
    signed_in: ActingUser,
    session: DbSession,
) -> Response:
    """Queue a failed job to run again now."""
    try:
        job = actions.retry_failed_job(session, job_id)
        session.commit()
    except OrderDeskError as exc:
        return action_failed(request, "/console/jobs", exc)
    return redirect(request, "/console/jobs", notice=f"Job {job.id} queued again.")


def _keys_page(
    request: Request,
    session: DbSession,
    signed_in: SignedIn,
    *,
    created: tuple[str, str] | None = None,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "keys.html",
        {
            "title": "API keys",
            "rows": queries.list_keys(session),
            "projects": sorted(queries.project_names(session).values()),
            "scopes": ALL_SCOPES,
            "created": created,
            "error": error,
            "form": form or {},
            "checked": set(form_list(request, "scopes")) if form else set(),
            "can_act": signed_in.can_act,
        },
        status_code=status_code,
    )


@router.get("/keys")
def keys_page(request: Request, signed_in: SignedIn, session: DbSession) -> Response:
    """List every API key by its prefix; values are never stored, so never shown."""
    return _keys_page(request, session, signed_in)


@router.post("/keys")
def create_key(
    request: Request, form: Form, signed_in: ActingUser, session: DbSession
) -> Response:
    """Create a key and show its value on this one response, which is not cached."""
    settings: Settings = request.app.state.settings
    try:
        key, value = actions.create_key(
            session,
            settings,
            form.get("project", ""),
            form_list(request, "scopes"),
            form.get("name", ""),
        )
        session.commit()
    except OrderDeskError as exc:
        session.rollback()
        log.info("console_key_rejected", code=exc.code, error=exc.message)
        return _keys_page(
            request,
            session,
            signed_in,
            error=exc.message,
            form=form,
            status_code=exc.status_code,
        )
    return _keys_page(request, session, signed_in, created=(key.id, value))


@router.post("/keys/{key_id}/revoke")
def revoke_key(
    request: Request,
    key_id: str,
    form: Form,
    signed_in: ActingUser,
    session: DbSession,
) -> Response:
    """Revoke a key; API requests with it get 401 from then on."""
    try:
        key = actions.revoke_key(session, key_id)
        session.commit()
    except OrderDeskError as exc:
        return action_failed(request, "/console/keys", exc)
    return redirect(
        request, "/console/keys", notice=f"Key {key.display_prefix}… revoked."
    )


def _mail_dir(settings: Settings) -> Path:
    """Return the mail folder, raising NotFound outside development."""
    if settings.environment != "development":
        raise NotFound(
            "The mail folder is shown in development only.", code="not_found"
        )
    return Path(settings.mail_dir)


@router.get("/mail")
def mail_page(request: Request, signed_in: SignedIn) -> Response:
    """List the .eml files the file mail backend wrote, newest first."""
    directory = _mail_dir(request.app.state.settings)
    files = mailbox.list_mail(directory)
    return render(
        request,
        "mail.html",
        {"title": "Mail folder", "files": files, "directory": str(directory)},
    )


@router.get("/mail/{name}")
def mail_message_page(request: Request, name: str, signed_in: SignedIn) -> Response:
    """Show one message's headers, text and attachment names, escaped."""
    message = mailbox.read_mail(_mail_dir(request.app.state.settings), name)
    if message is None:
        raise NotFound(f"No message {name[:80]!r} is in the mail folder.")
    return render(
        request,
        "mail_message.html",
        {"title": message.file.subject or name, "message": message},
    )
