"""FastAPI's OpenTelemetry support is on only for providers the environment sets."""

from __future__ import annotations

import pytest

from orderdesk.app import telemetry_config

PROVIDERS = (
    "OTEL_PYTHON_TRACER_PROVIDER",
    "OTEL_PYTHON_METER_PROVIDER",
    "OTEL_PYTHON_LOGGER_PROVIDER",
    "FASTAPI_OTEL_AUTO_CONFIGURE",
)


@pytest.fixture(autouse=True)
def no_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROVIDERS:
        monkeypatch.delenv(name, raising=False)


def test_off_without_a_provider() -> None:
    assert telemetry_config() == {"tracing": False, "metrics": False, "logs": False}


def test_each_signal_follows_its_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    assert telemetry_config() == {"tracing": True, "metrics": False, "logs": False}
    monkeypatch.setenv("OTEL_PYTHON_METER_PROVIDER", "sdk_meter_provider")
    monkeypatch.setenv("OTEL_PYTHON_LOGGER_PROVIDER", "sdk_logger_provider")
    assert telemetry_config() == {"tracing": True, "metrics": True, "logs": True}


def test_auto_configure_turns_everything_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "TRUE")
    assert telemetry_config() == {"tracing": True, "metrics": True, "logs": True}
