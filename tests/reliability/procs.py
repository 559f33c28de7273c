"""Start, watch and kill orderdesk service processes for the reliability tests.

Every process is a real `python -m orderdesk.cli ...` subprocess on the test's
database, with the devnet on, so the processes and the test share one chain through
the devnet journal. Logs go to one file per process in the test's tmp_path.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import requests
from sqlalchemy import ColumnElement, func, select, update
from tests.conftest import free_port
from tests.webhooks.test_worker_kill import WorkerProcesses, wait_until

from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.runtime import Runtime

__all__ = [
    "ORDERDESK",
    "ApiProcess",
    "ServiceProcesses",
    "crash_runs",
    "crash_seed",
    "env_int",
    "expire_leases_of",
    "held_by",
    "kill",
    "open_jobs",
    "wait_for_ready",
    "wait_until",
]

ORDERDESK = [sys.executable, "-m", "orderdesk.cli"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
START_TIMEOUT_SECONDS = 90


def env_int(name: str, ci_default: int, local_default: int) -> int:
    """Read a positive integer from the environment, defaulting by CI or not."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return ci_default if IN_CI else local_default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    return value


def crash_runs() -> int:
    """Return the number of kill runs: ORDERDESK_CRASH_RUNS, else 30 in CI, 6 here."""
    return env_int("ORDERDESK_CRASH_RUNS", 30, 6)


def crash_seed() -> int:
    """Return ORDERDESK_CRASH_SEED when set, else a new random seed."""
    raw = os.environ.get("ORDERDESK_CRASH_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


class ApiProcess:
    """One `orderdesk serve --no-worker` subprocess and where it listens."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.process.pid


class ServiceProcesses(WorkerProcesses):
    """`orderdesk worker` and `orderdesk serve --no-worker` processes on the test's
    database, with the devnet on and rate limits off. `extra_env` adds or overrides
    ORDERDESK_* variables for every process started afterwards."""

    def __init__(self, settings: Settings, tmp_path: Path, **extra_env: str) -> None:
        super().__init__(settings, tmp_path)
        self.env.pop("ORDERDESK_DEVNET")
        self.env.update(
            {
                "ORDERDESK_RATE_LIMIT_WRITES_PER_MINUTE": "0",
                "ORDERDESK_RATE_LIMIT_READS_PER_MINUTE": "0",
                "ORDERDESK_PAYMENT_RECHECK_SECONDS": "0.05",
                "ORDERDESK_PAYOUT_RECHECK_SECONDS": "0.05",
                "ORDERDESK_LOG_FORMAT": "console",
                **extra_env,
            }
        )
        self.apis: list[ApiProcess] = []
        self.worker_log_paths: dict[int, Path] = {}

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start `orderdesk worker`; it starts polling a few seconds later."""
        # WorkerProcesses.start names the log by the number of processes started.
        log_path = self.tmp_path / f"worker-{len(self.started)}.log"
        process = self.start()
        self.worker_log_paths[process.pid] = log_path
        return process

    def worker_ready(self, pid: int) -> bool:
        """Return whether the worker `pid` has started polling for jobs."""
        path = self.worker_log_paths[pid]
        return path.exists() and "worker_started" in path.read_text(errors="replace")

    def start_api(self, port: int | None = None) -> ApiProcess:
        """Start `orderdesk serve --no-worker` and wait until /readyz returns 200."""
        port = port or free_port()
        log_path = self.tmp_path / f"api-{len(self.apis)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*ORDERDESK, "serve", "--no-worker", "--port", str(port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        api = ApiProcess(process, port)
        self.apis.append(api)
        wait_for_ready(api.url, process, self.logs)
        return api

    def logs(self) -> str:
        paths = sorted(self.tmp_path.glob("worker-*.log")) + sorted(
            self.tmp_path.glob("api-*.log")
        )
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}" for path in paths
        )

    def worker_logs(self) -> list[str]:
        return [
            path.read_text(errors="replace")
            for path in sorted(self.tmp_path.glob("worker-*.log"))
        ]


def wait_for_ready(
    url: str,
    process: subprocess.Popen[bytes],
    logs: Callable[[], str] = lambda: "",
    timeout: float = START_TIMEOUT_SECONDS,
) -> None:
    """Poll `url`/readyz until it returns 200. Fail if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"{url} exited with {process.returncode} before it was ready\n{logs()}"
            )
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} was not ready after {timeout} s\n{logs()}")
        time.sleep(0.1)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and wait until it is gone."""
    process.send_signal(signal.SIGKILL)
    returncode = process.wait(timeout=30)
    assert returncode == -signal.SIGKILL, f"process ended with {returncode}"


def held_by(pid: int) -> ColumnElement[bool]:
    """A filter on jobs claimed by the worker process `pid`, whose name contains it."""
    return Job.locked_by.like(f"%:{pid}:%")


def expire_leases_of(runtime: Runtime, pid: int) -> int:
    """End the leases of the jobs held by the dead worker `pid` now, rather than after
    the 60-second lease, and return how many it held. Call it only once that process
    is gone: a live worker would then share its jobs with another."""
    with runtime.session_factory() as session, session.begin():
        result = session.execute(
            update(Job)
            .where(Job.status == "running", held_by(pid))
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def open_jobs(runtime: Runtime) -> int:
    """Return how many jobs are not done: queued, running or failed."""
    with runtime.session_factory() as session:
        query = select(func.count()).select_from(Job).where(Job.status != "done")
        return int(session.scalar(query) or 0)
