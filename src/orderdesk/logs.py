"""structlog set-up: JSON in production, readable console lines in development."""

from __future__ import annotations

import logging
import sys

import structlog

from orderdesk.config import Settings


def configure_logging(settings: Settings) -> None:
    json_output = (
        settings.log_format
        or ("console" if settings.environment == "development" else "json")
    ) == "json"
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Look sys.stderr up for each logger: a stream captured at configure time
        # (as pytest swaps it per test) may be closed by the time a line is logged.
        logger_factory=lambda *_args: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
