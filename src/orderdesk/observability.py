"""Request ids, access logs and Prometheus metrics for every HTTP request."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("orderdesk.http")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
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
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(elapsed)
            if status >= 500:
                log.error(
                    "request_failed",
                    method=method,
                    path=scope.get("path"),
                    status=status,
                )
            elif self.access_log:
                log.info(
                    "request_finished",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")


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
