"""The access line that `write_access_line` renders is the line structlog renders."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog
from structlog.testing import capture_logs

from orderdesk import logs
from orderdesk.config import Settings
from orderdesk.logs import ACCESS_EVENT, configure_logging, write_access_line
from orderdesk.refunds.statuses import RefundStatus
from orderdesk.shipping.statuses import PackageKind

TIMESTAMP = re.compile(r'"timestamp": "[^"]*"')


def log_settings(log_format: str, level: str) -> Settings:
    return Settings.model_construct(
        log_format=log_format, environment="production", log_level=level
    )


@pytest.fixture
def json_logs() -> Iterator[None]:
    """Configure JSON logs at info, and put the previous configuration back."""
    saved = structlog.get_config()
    saved_setup = logs._json_setup
    configure_logging(log_settings("json", "INFO"))
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.configure(**saved)
    logs._json_setup = saved_setup


def lines_of(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def via_structlog(method: str, route: str, status: int, duration_ms: float) -> None:
    structlog.get_logger("orderdesk.http").info(
        ACCESS_EVENT,
        method=method,
        route=route,
        status=status,
        duration_ms=duration_ms,
    )


CASES = [
    ("GET", "/api/unstable/orders/{orderId}/tracking", 200, 0.09, "a" * 32),
    ("POST", "/api/2022-06-09/orders", 201, 12.5, "trace-42"),
    ("GET", "unmatched", 404, 0.0, "x.y:z-1_2"),
    ("DELETE", '/r\u00e9sum\u00e9/"quoted"\\', 499, 1234.56, "R" * 128),
]


@pytest.mark.parametrize(("method", "route", "status", "duration", "request_id"), CASES)
def test_access_line_matches_structlog(
    json_logs: None,
    capsys: pytest.CaptureFixture[str],
    method: str,
    route: str,
    status: int,
    duration: float,
    request_id: str,
) -> None:
    structlog.contextvars.bind_contextvars(request_id=request_id)
    via_structlog(method, route, status, duration)
    expected = lines_of(capsys)
    assert write_access_line(method, route, status, duration, request_id) is True
    written = lines_of(capsys)

    assert len(expected) == 1
    assert len(written) == 1
    # Byte for byte, apart from the time.
    assert TIMESTAMP.sub("", written[0]) == TIMESTAMP.sub("", expected[0])
    assert list(json.loads(written[0])) == list(json.loads(expected[0]))


def test_access_line_fields(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    structlog.contextvars.bind_contextvars(request_id="poll-1")
    assert write_access_line("GET", "/healthz", 200, 0.25, "poll-1")
    line = json.loads(lines_of(capsys)[0])

    assert line["event"] == "request_finished"
    assert line["request_id"] == "poll-1"
    assert line["method"] == "GET"
    assert line["route"] == "/healthz"
    assert line["status"] == 200
    assert line["duration_ms"] == 0.25
    assert line["level"] == "info"
    stamped = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60


def test_timestamp_format(monkeypatch: pytest.MonkeyPatch) -> None:
    instant = datetime(2026, 12, 4, 17, 26, 50, 749361, tzinfo=UTC)
    whole = datetime(2026, 12, 4, 17, 26, 51, tzinfo=UTC)
    for moment, expected in (
        (instant, "2026-12-04T17:26:50.749361Z"),
        (whole, "2026-12-04T17:26:51Z"),
    ):
        nanoseconds = int(moment.timestamp()) * 10**9 + moment.microsecond * 1000
        monkeypatch.setattr(logs.time, "time_ns", lambda ns=nanoseconds: ns + 999)
        written = logs._utc_timestamp()
        assert written == expected
        # The same text structlog's TimeStamper(fmt="iso", utc=True) writes.
        assert written == moment.isoformat().replace("+00:00", "Z")


def test_falls_back_under_capture_logs(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    structlog.contextvars.bind_contextvars(request_id="r1")
    with capture_logs():
        assert write_access_line("GET", "/healthz", 200, 0.1, "r1") is False
    assert lines_of(capsys) == []


def test_falls_back_with_other_context(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    structlog.contextvars.bind_contextvars(request_id="r1", order_id="o1")
    assert write_access_line("GET", "/healthz", 200, 0.1, "r1") is False
    structlog.contextvars.clear_contextvars()
    assert write_access_line("GET", "/healthz", 200, 0.1, "r1") is False
    assert lines_of(capsys) == []


def test_falls_back_for_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    saved = structlog.get_config()
    saved_setup = logs._json_setup
    try:
        configure_logging(log_settings("console", "INFO"))
        structlog.contextvars.bind_contextvars(request_id="r1")
        assert write_access_line("GET", "/healthz", 200, 0.1, "r1") is False
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**saved)
        logs._json_setup = saved_setup
    assert lines_of(capsys) == []


def test_nothing_written_above_info(capsys: pytest.CaptureFixture[str]) -> None:
    saved = structlog.get_config()
    saved_setup = logs._json_setup
    try:
        configure_logging(log_settings("json", "WARNING"))
        structlog.contextvars.bind_contextvars(request_id="r1")
        assert write_access_line("GET", "/healthz", 200, 0.1, "r1") is True
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**saved)
        logs._json_setup = saved_setup
    assert lines_of(capsys) == []


def test_structlog_lines_end_with_newline(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    structlog.get_logger("x").warning("first", n=1)
    structlog.get_logger("x").warning("second", n=2)
    err = capsys.readouterr().err
    assert err.count("\n") == 2
    assert [json.loads(line)["event"] for line in err.splitlines()] == [
        "first",
        "second",
    ]


INFO_CASES = [
    ("refund_requested", {"order_id": "o-1", "refund_id": "r-1", "line_item": 3}),
    ("quoted", {"text": 'a "b" \\ \u00e9\u4e2d\n', "count": -7}),
    ("no_fields", {}),
    ("flags", {"queued": True, "sent": False, "big": 2**70, "zero": 0}),
    ("enum_value", {"status": RefundStatus.INITIATED, "kind": PackageKind.OUTBOUND}),
]


@pytest.mark.parametrize(("event", "fields"), INFO_CASES)
def test_info_line_matches_structlog(
    json_logs: None,
    capsys: pytest.CaptureFixture[str],
    event: str,
    fields: dict[str, str | int],
) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-9")
    structlog.get_logger("orderdesk.refunds.lean").info(event, **fields)
    expected = lines_of(capsys)
    assert logs.write_info_line(event, fields) is True
    written = lines_of(capsys)

    assert len(expected) == 1
    assert len(written) == 1
    assert TIMESTAMP.sub("", written[0]) == TIMESTAMP.sub("", expected[0])


def test_info_line_falls_back_without_request_id(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logs.write_info_line("refund_requested", {"line_item": 1}) is False
    structlog.contextvars.bind_contextvars(request_id="req-9", extra="x")
    assert logs.write_info_line("refund_requested", {"line_item": 1}) is False
    assert lines_of(capsys) == []


def test_info_line_falls_back_under_capture(json_logs: None) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-9")
    with capture_logs():
        assert logs.write_info_line("refund_requested", {"line_item": 1}) is False
