"""Job handlers by kind. Handlers must be idempotent: a job can run more than once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from orderdesk.runtime import Runtime


@dataclass
class JobContext:
    runtime: Runtime
    job_id: int
    attempt: int


Handler = Callable[[JobContext, Session, dict[str, Any]], None]
HANDLERS: dict[str, Handler] = {}


class RetryLater(Exception):
    """Raised by a handler to run the job again later without counting a failure."""

    def __init__(self, delay_seconds: float, reason: str = "") -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        self.reason = reason


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        HANDLERS[kind] = function
        return function

    return register
