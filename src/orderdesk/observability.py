"""Request ids, access logs and Prometheus metrics for every HTTP request."""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderdesk.logs import ACCESS_EVENT, write_access_line

log = structlog.get_logger("orderdesk.http")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Label children of the request metrics by (route, method, status). Methods come
# from clients, so the map stops growing at this size and further requests look
# their children up in the metric itself.
_CHILDREN_CACHE_MAX_ENTRIES = 1024
# Request ids come from a Mersenne Twister of this module's own, seeded from
# os.urandom at import and again in each forked child, so that no other code
# seeding the `random` module repeats them. Ids have to be unique, not secret,
# and this saves the system call that uuid4() makes for each request.
_request_ids = random.Random()  # noqa: S311 - not used for secrets
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_request_ids.seed)


class Metrics:
    """The service's metrics, on their own registry so tests can build many apps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "orderdesk_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "orderdesk_http_request_duration_seconds",
            "HTTP request duration in seconds by route template and method.",
            ["route", "method"],
            registry=self.registry,
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
            ),
        )
        self.jobs = Gauge(
            "orderdesk_jobs",
            "Outbox jobs by kind and status (queued, running, failed), read at scrape.",
            ["kind", "status"],
            registry=self.registry,
        )
        self.webhook_deliveries = Gauge(
            "orderdesk_webhook_deliveries",
            "Webhook deliveries by status (pending, failed), read at scrape.",
            ["status"],
            registry=self.registry,
        )
        self.payouts_pending = Gauge(
            "orderdesk_payouts_pending",
            "Refunds whose return was received and whose payout is not confirmed yet.",
            registry=self.registry,
        )
        # A child stays valid while its metric is not cleared, and these two are
        # never cleared, because they count from the start of the process.
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def request_children(self, route: str, method: str, status: str) -> tuple[Any, Any]:
        """Return the (requests counter, latency histogram) children of one label
        set, looked up in the metrics once and then kept."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, status),
                self.latency.labels(route, method),
            )
            if len(self._request_children) < _CHILDREN_CACHE_MAX_ENTRIES:
                self._request_children[key] = children
        return children

    def refresh_backlog(self, session: Session) -> None:
        """Read the job, webhook and payout backlog from the database into gauges."""
        from orderdesk.jobs.models import Job
        from orderdesk.refunds.models import Refund
        from orderdesk.webhooks.models import WebhookDelivery

        self.jobs.clear()
        rows = session.execute(
            select(Job.kind, Job.status, func.count())
            .where(Job.status.in_(("queued", "running", "failed")))
            .group_by(Job.kind, Job.status)
        )
        for kind, status, count in rows:
            self.jobs.labels(kind, status).set(count)
        self.webhook_deliveries.clear()
        deliveries = session.execute(
            select(WebhookDelivery.status, func.count())
            .where(WebhookDelivery.status.in_(("pending", "failed")))
            .group_by(WebhookDelivery.status)
        )
        for status, count in deliveries:
            self.webhook_deliveries.labels(status).set(count)
        pending = session.scalar(
            select(func.count())
            .select_from(Refund)
            .where(
                Refund.status == "refund-request-accepted",
                Refund.return_received_at.is_not(None),
            )
        )
        self.payouts_pending.set(pending or 0)


class RequestContextMiddleware:
    """Bind a request id to every log line and return it in X-Request-ID."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or _new_request_id()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope.get("method", "")
            requests, latency = self.metrics.request_children(
                route, method, str(status)
            )
            requests.inc()
            latency.observe(elapsed)
            if status >= 500:
                log.error(
                    "request_failed",
                    method=method,
                    path=scope.get("path"),
                    status=status,
                )
            elif self.access_log:
                duration_ms = round(elapsed * 1000, 2)
                if not write_access_line(
                    method, route, status, duration_ms, request_id
                ):
                    log.info(
                        ACCESS_EVENT,
                        method=method,
                        route=route,
                        status=status,
                        duration_ms=duration_ms,
                    )
            structlog.contextvars.unbind_contextvars("request_id")


def _new_request_id() -> str:
    # 32 hex digits, as uuid4().hex has.
    return f"{_request_ids.getrandbits(128):032x}"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.fullmatch(text) else None
    return None


def _route_template(scope: Scope) -> str:
    # The matched route's template keeps ids out of the label values.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
