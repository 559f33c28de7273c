"""Settings and retry decisions shared by the sync and async clients."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import httpx

from orderdesk.client._calls import Call
from orderdesk.client._retry import RETRY_STATUSES, RetryPolicy
from orderdesk.client.errors import ConnectionFailed

log = logging.getLogger("orderdesk.client")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
API_KEY_VARIABLE = "ORDERDESK_API_KEY"


def _user_agent() -> str:
    try:
        version = metadata.version("orderdesk")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"orderdesk-python/{version} httpx/{httpx.__version__}"


@dataclass(frozen=True)
class ClientConfig:
    """Settings shared by every request of one client: base URL, credentials,
    timeout and retry policy."""

    base_url: str
    headers: dict[str, str]
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def build(
        cls,
        api_key: str | None,
        base_url: str,
        client_secret: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
    ) -> ClientConfig:
        if api_key is None:
            api_key = os.environ.get(API_KEY_VARIABLE) or None
        if api_key is None and client_secret is None:
            raise ValueError(
                "No credentials: pass api_key=, client_secret=, or set the "
                f"{API_KEY_VARIABLE} environment variable."
            )
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"base_url {base_url!r} must be an absolute http:// or https:// URL"
            )
        headers = {"Accept": "application/json", "User-Agent": _user_agent()}
        if api_key is not None:
            headers["X-API-KEY"] = api_key
        if client_secret is not None:
            # The API takes the raw client secret, with no "Bearer" scheme.
            headers["Authorization"] = client_secret
        return cls(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            retry=RetryPolicy(max_retries=max_retries),
        )

    def request_args(self, call: Call[Any]) -> dict[str, Any]:
        """Return the keyword arguments of `httpx.Client.request` for `call`."""
        arguments: dict[str, Any] = {
            "method": call.method,
            "url": self.base_url + call.path,
            "headers": {**self.headers, **call.headers},
            "timeout": self.timeout,
        }
        if call.params:
            arguments["params"] = dict(call.params)
        if call.body is not None:
            arguments["json"] = call.body
        return arguments

    def retry_delay(
        self, call: Call[Any], retries_done: int, response: httpx.Response | None
    ) -> float | None:
        """Return the seconds to wait before retrying `call`, or None to stop.

        `response` is None when the request failed without one (a connection error
        or timeout)."""
        if not call.retryable or retries_done >= self.retry.max_retries:
            return None
        if response is None:
            delay = self.retry.backoff(retries_done)
        elif response.status_code in RETRY_STATUSES:
            delay = self.retry.delay(retries_done, response.headers.get("retry-after"))
        else:
            return None
        log.info(
            "Retrying %s %s in %.2f s (retry %d of %d) after %s",
            call.method,
            call.path,
            delay,
            retries_done + 1,
            self.retry.max_retries,
            "a connection error" if response is None else response.status_code,
        )
        return delay

    def connection_failed(
        self, call: Call[Any], error: httpx.TransportError, retries_done: int
    ) -> ConnectionFailed:
        tries = f" after {retries_done} retries" if retries_done else ""
        return ConnectionFailed(
            f"{call.method} {self.base_url}{call.path} failed{tries}: "
            f"{type(error).__name__}: {error or 'no detail'}. Check that the server "
            "is running at base_url and reachable."
        )
