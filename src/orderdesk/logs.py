"""structlog set-up: JSON in production, readable console lines in development.

The access log line (`request_finished`, one per HTTP request) is the most frequent
line by far. So `write_access_line` renders it without going through structlog, to
the same bytes that the JSON set-up of `configure_logging` writes, for as long as
that set-up is structlog's configuration.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

import structlog

from orderdesk.config import Settings

ACCESS_EVENT = "request_finished"
# Prefixes of access lines by (method, route, status). Methods come from clients,
# so the map stops growing at this size and further lines build their prefix.
_PREFIX_CACHE_MAX_ENTRIES = 1024

# One lock for every line this module writes, so a line written by one thread is
# never split by another's.
_write_lock = threading.Lock()


class StderrLogger:
    """A structlog logger that writes each line, newline included, in one write
    to the current `sys.stderr`, and flushes it.

    The stream is looked up for each line, because a stream taken once (as pytest
    swaps it per test) may be closed by the time a line is written.
    """

    def msg(self, message: str) -> None:
        _write_line(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _write_line(message: str) -> None:
    with _write_lock:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()


def _make_stderr_logger(*_args: Any) -> StderrLogger:
    return StderrLogger()


class _JsonSetup(NamedTuple):
    """The structlog configuration that `configure_logging` made for JSON output."""

    processors: list[structlog.types.Processor]
    snapshot: list[structlog.types.Processor]
    wrapper_class: type[Any]
    writes_info: bool


_json_setup: _JsonSetup | None = None


def configure_logging(settings: Settings) -> None:
    global _json_setup
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
    chain = [*processors, renderer]
    wrapper_class = structlog.make_filtering_bound_logger(level)
    structlog.configure(
        processors=chain,
        wrapper_class=wrapper_class,
        logger_factory=_make_stderr_logger,
        cache_logger_on_first_use=False,
    )
    _json_setup = (
        _JsonSetup(chain, list(chain), wrapper_class, level <= logging.INFO)
        if json_output
        else None
    )


def write_access_line(
    method: str, route: str, status: int, duration_ms: float, request_id: str
) -> bool:
    """Write the `request_finished` line as `log.info(ACCESS_EVENT, method=...,
    route=..., status=..., duration_ms=...)` would, with `request_id` bound.

    Returns False, writing nothing, unless structlog still has the JSON
    configuration of `configure_logging` and `request_id` is the only context
    variable bound. The caller then logs the line through structlog.
    """
    allowed = _direct_writes_allowed()
    if allowed is None or allowed[0] != request_id:
        return False
    if not allowed[1]:
        return True  # the level filter drops info lines
    _write_line(
        _access_prefix(method, route, status)
        + repr(float(duration_ms))
        + ', "event": "request_finished", "request_id": '
        + encode_basestring_ascii(request_id)
        + ', "level": "info", "timestamp": "'
        + _utc_timestamp()
        + '"}'
    )
    return True


def write_info_line(event: str, fields: dict[str, str | int]) -> bool:
    """Write an info line as `log.info(event, **fields)` would, for string and
    integer fields, with `request_id` bound. Returns False, writing nothing, in the
    cases where `write_access_line` does."""
    allowed = _direct_writes_allowed()
    if allowed is None:
        return False
    request_id, writes_info = allowed
    if not writes_info:
        return True
    parts = [
        f"{encode_basestring_ascii(name)}: {_json_scalar(value)}"
        for name, value in fields.items()
    ]
    _write_line(
        "{"
        + ", ".join(parts)
        + (", " if parts else "")
        + '"event": '
        + json.dumps(event)
        + ', "request_id": '
        + encode_basestring_ascii(request_id)
        + ', "level": "info", "timestamp": "'
        + _utc_timestamp()
        + '"}'
    )
    return True


def _json_scalar(value: str | int) -> str:
    """Return a string or integer as json.dumps encodes it, with less work."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    return json.dumps(value)


def _direct_writes_allowed() -> tuple[str, bool] | None:
    """Return the bound request id and whether info lines are written, when lines
    may be written without structlog: the JSON set-up of `configure_logging` is in
    place and `request_id` is the only context variable. Else return None."""
    setup = _json_setup
    if setup is None:
        return None
    config = structlog.get_config()
    if (
        config["processors"] is not setup.processors
        or config["processors"] != setup.snapshot
        or config["wrapper_class"] is not setup.wrapper_class
        or config["logger_factory"] is not _make_stderr_logger
    ):
        # Reconfigured since, for example by structlog.testing.capture_logs.
        return None
    context = structlog.contextvars.get_contextvars()
    if set(context) != {"request_id"} or not isinstance(context["request_id"], str):
        return None
    return context["request_id"], setup.writes_info


_access_prefixes: dict[tuple[str, str, int], str] = {}


def _access_prefix(method: str, route: str, status: int) -> str:
    key = (method, route, status)
    prefix = _access_prefixes.get(key)
    if prefix is None:
        prefix = (
            '{"method": '
            + json.dumps(method)
            + ', "route": '
            + json.dumps(route)
            + ', "status": '
            + json.dumps(status)
            + ', "duration_ms": '
        )
        if len(_access_prefixes) < _PREFIX_CACHE_MAX_ENTRIES:
            _access_prefixes[key] = prefix
    return prefix


# The date and time to the second of the last timestamp, and its ISO 8601 text.
_last_second: tuple[int, str] = (-1, "")


def _utc_timestamp() -> str:
    """Return the time now as structlog's `TimeStamper(fmt="iso", utc=True)` writes
    it, such as 2026-12-04T17:26:50.749361Z, formatting the date once a second."""
    global _last_second
    # datetime.now() truncates the clock to microseconds, as this does.
    seconds, microseconds = divmod(time.time_ns() // 1000, 1_000_000)
    last, text = _last_second
    if seconds != last:
        text = datetime.fromtimestamp(seconds, UTC).isoformat()[: -len("+00:00")]
        _last_second = (seconds, text)
    # isoformat() leaves the fraction out when it is zero.
    return f"{text}.{microseconds:06d}Z" if microseconds else f"{text}Z"
