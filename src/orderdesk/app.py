"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from orderdesk import __version__
from orderdesk.config import Settings, load_settings
from orderdesk.http import BodyLimitMiddleware, install_error_handlers
from orderdesk.logs import configure_logging
from orderdesk.ratelimit import RateLimiter
from orderdesk.runtime import Runtime


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
            from orderdesk.jobs.worker import Worker
            import threading

            worker = Worker(runtime)
            worker_thread = threading.Thread(target=worker.run_forever, name="worker", daemon=True)
            worker_thread.start()
            app.state.worker = worker
        try:
            yield
        finally:
            if worker_thread is not None:
                app.state.worker.stop()
                worker_thread.join(timeout=30)
            runtime.close()

    app = FastAPI(
        title="orderdesk",
        version=__version__,
        lifespan=lifespan,
        description="Order management for headless checkout paid in stablecoins.",
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.session_factory = runtime.session_factory
    app.state.rate_limiter = RateLimiter(settings)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware)
    _include_routers(app, settings)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def _include_routers(app: FastAPI, settings: Settings) -> None:
    from orderdesk.orders.routes import router as orders_router
    from orderdesk.payments.routes import router as payments_router
    from orderdesk.refunds.routes import router as refunds_router
    from orderdesk.shipping.carrier_routes import router as carrier_router
    from orderdesk.shipping.routes import router as shipping_router

    app.include_router(orders_router)
    app.include_router(payments_router)
    app.include_router(shipping_router)
    app.include_router(refunds_router)
    app.include_router(carrier_router)
    if settings.devnet_endpoints_enabled:
        from orderdesk.payments.devnet_routes import router as devnet_router

        app.include_router(devnet_router)
