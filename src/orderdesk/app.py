"""The FastAPI application factory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from orderdesk import __version__
from orderdesk.config import Settings, load_settings
from orderdesk.fastpath import KeyLookups, LeanReadMiddleware, Replies
from orderdesk.http import BodyLimitMiddleware, install_error_handlers
from orderdesk.logs import configure_logging
from orderdesk.observability import Metrics, RequestContextMiddleware
from orderdesk.openapi import install_openapi
from orderdesk.orders.replies import OrderAccessReader, ReplyCache
from orderdesk.ratelimit import RateLimiter
from orderdesk.refunds.lean import LeanRefundMiddleware, RefundWriters
from orderdesk.request_timeout import RequestTimeoutMiddleware
from orderdesk.runtime import Runtime

log = structlog.get_logger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    run_worker: bool = False,
) -> FastAPI:
    """Build the app. The runtime starts (migrations, chains) when the app starts."""
    settings = settings or (runtime.settings if runtime else load_settings())
    configure_logging(settings)
    runtime = runtime or Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        worker_thread = None
        if run_worker:
            import threading

            from orderdesk.jobs.worker import Worker

            worker = Worker(runtime)
            worker_thread = threading.Thread(
                target=worker.run_forever, name="worker", daemon=True
            )
            worker_thread.start()
            app.state.worker = worker
        try:
            yield
        finally:
            if worker_thread is not None:
                app.state.worker.stop()
                worker_thread.join(timeout=settings.shutdown_grace_seconds)
            app.state.replies.close()
            await app.state.refund_writers.close()
            runtime.close()

    app = FastAPI(
        title="orderdesk",
        version=__version__,
        lifespan=lifespan,
        description="Order management for headless checkout paid in stablecoins.",
        docs_url=None,
        redoc_url=None,
        telemetry=telemetry_config(),
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.session_factory = runtime.session_factory
    app.state.rate_limiter = RateLimiter(settings)
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.replies = Replies(OrderAccessReader(runtime.engine), ReplyCache())
    app.state.refund_writers = RefundWriters(runtime.engine)
    app.state.key_lookups = KeyLookups()
    install_error_handlers(app)
    # Inside the body limit and the timeout, which bound the body it reads and the
    # time it may wait for a busy database, as they bound the router's requests.
    app.add_middleware(LeanRefundMiddleware, fastapi_app=app)
    app.add_middleware(BodyLimitMiddleware)
    # Inside the request context, so a timed-out request is logged with its id.
    app.add_middleware(
        RequestTimeoutMiddleware, seconds=settings.request_timeout_seconds
    )
    # Inside the request context (request id, access log, metrics) and outside the
    # timeout, which costs a task per request. The reads it serves never wait.
    app.add_middleware(LeanReadMiddleware, fastapi_app=app)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, access_log=settings.access_log
    )
    _include_routers(app, settings)
    install_openapi(app)
    _mount_offline_docs(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """Return 200 while the process serves requests."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        """Return 200 when the database (and Redis, when set) respond, else 503."""
        checks = readiness_checks(runtime, settings)
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics_page() -> Response:
        """Expose Prometheus metrics in the text format."""
        try:
            with runtime.session_factory() as session:
                metrics.refresh_backlog(session)
        except OperationalError:
            # The request metrics are still served while the database is down.
            log.warning("metrics_backlog_unavailable")
        return Response(
            generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    return app


def telemetry_config() -> TelemetryConfig:
    """FastAPI's OpenTelemetry support, on only for the signals whose provider the
    environment configures (OTEL_PYTHON_TRACER_PROVIDER and the like, or
    FASTAPI_OTEL_AUTO_CONFIGURE=true for all three).

    Left on without a provider, it looks the providers up in os.environ on every
    request: about 2% of a polled read's profile samples, 9% of a refund request's.
    """
    auto = os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true"
    return {
        "tracing": auto or "OTEL_PYTHON_TRACER_PROVIDER" in os.environ,
        "metrics": auto or "OTEL_PYTHON_METER_PROVIDER" in os.environ,
        "logs": auto or "OTEL_PYTHON_LOGGER_PROVIDER" in os.environ,
    }


def _include_routers(app: FastAPI, settings: Settings) -> None:
    from orderdesk.console.routes import router as console_router
    from orderdesk.console.web import ConsoleStaticFiles
    from orderdesk.orders.routes import router as orders_router
    from orderdesk.payments.routes import router as payments_router
    from orderdesk.refunds.routes import router as refunds_router
    from orderdesk.shipping.carrier_routes import router as carrier_router
    from orderdesk.shipping.routes import router as shipping_router
    from orderdesk.webhooks.routes import router as webhooks_router

    app.include_router(orders_router)
    app.include_router(payments_router)
    app.include_router(shipping_router)
    app.include_router(refunds_router)
    app.include_router(carrier_router)
    app.include_router(webhooks_router)
    # The static mount comes first, because the console router ends in a catch-all.
    app.mount("/console/static", ConsoleStaticFiles(), name="console-static")
    app.include_router(console_router)
    if settings.devnet_endpoints_enabled:
        from orderdesk.payments.devnet_routes import router as devnet_router

        app.include_router(devnet_router)


def readiness_checks(runtime: Runtime, settings: Settings) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"failed: {exc.__class__.__name__}"
    if settings.redis_url:
        try:
            import redis

            redis.Redis.from_url(settings.redis_url, socket_timeout=2).ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks["redis"] = f"failed: {exc.__class__.__name__}"
    return checks


def _mount_offline_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs from the fastapi-offline package, not a CDN.

    Its bundled Swagger UI reads OpenAPI 3.1, which FastAPI writes.
    """
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount(
        "/docs/assets",
        StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
        name="docs-assets",
    )

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="orderdesk API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )
