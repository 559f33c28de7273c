"""Processes of a benchmark run: databases, uvicorn servers and wrk."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "lua" / "orderdesk.lua"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
START_TIMEOUT_SECONDS = 120
# wrk gets this long past its duration before it is stopped.
WRK_GRACE_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Database:
    """A fresh database of one kind ("sqlite" or "postgres") for one role."""

    kind: str
    role: str
    url: str
    path: Path | None = None
    name: str | None = None

    @classmethod
    def create(cls, kind: str, role: str, work_dir: Path, run_id: str) -> Database:
        if kind == "sqlite":
            path = work_dir / f"{role}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return cls(kind, role, f"sqlite:///{path}", path=path)
        name = f"orderdesk_bench_{run_id}_{role}"
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        return cls(kind, role, url, name=name)

    def drop(self) -> None:
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" (FORCE)'))
        admin.dispose()


def service_environment(
    database_url: str, work_dir: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """ORDERDESK_* settings of every orderdesk process in the run.

    Production settings with the devnet off, so no chain runs in the process, and
    the rate limits off, since one project sends all the load.
    """
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ORDERDESK_")
    }
    environment.update(
        {
            "ORDERDESK_ENVIRONMENT": "production",
            "ORDERDESK_DATABASE_URL": database_url,
            "ORDERDESK_TREASURY_SECRET": "bench-treasury-secret-" + "0" * 32,
            "ORDERDESK_DEVNET": "false",
            "ORDERDESK_DATA_DIR": str(work_dir / "var"),
            "ORDERDESK_MAIL_DIR": str(work_dir / "mail"),
            "ORDERDESK_RATE_LIMIT_READS_PER_MINUTE": "0",
            "ORDERDESK_RATE_LIMIT_WRITES_PER_MINUTE": "0",
            "ORDERDESK_LOG_LEVEL": "INFO",
        }
    )
    environment.update(extra or {})
    return environment


@dataclass
class ServerGroup:
    """One or more uvicorn processes of bench/serve.py sharing one loopback port."""

    label: str
    app: str
    processes: int
    work_dir: Path
    environment: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    arguments: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerGroup:
        log_dir = self.work_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        ready_files = []
        for number in range(self.processes):
            ready = self.work_dir / f"{self.label}-{number}.ready"
            ready.unlink(missing_ok=True)
            ready_files.append(ready)
            log = open(log_dir / f"{self.label}-{number}.log", "wb")  # noqa: SIM115
            command = [
                sys.executable,
                str(BENCH_DIR / "serve.py"),
                self.app,
                "--port",
                str(self.port),
                "--ready-file",
                str(ready),
                *self.arguments,
            ]
            self.children.append(
                subprocess.Popen(
                    command,
                    env=self.environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not all(ready.exists() for ready in ready_files):
            dead = [child for child in self.children if child.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"server {self.label} did not start; see {log_dir}/{self.label}-*"
                )
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        self.children.clear()

    def pids(self) -> list[int]:
        return [child.pid for child in self.children]


@dataclass
class WrkResult:
    """One wrk run: throughput, latency percentiles and failed responses."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        }


def run_wrk(
    url: str,
    mode: str,
    targets_file: Path,
    api_key: str,
    *,
    connections: int,
    duration: float,
    offset: int = 0,
    base_epoch: int = 0,
) -> WrkResult:
    """Run wrk with one thread against a loopback URL and parse its summary."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"{url} is not a loopback URL; the benchmark stays local")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError(
            "wrk is not installed: apt-get update && apt-get install -y wrk"
        )
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        mode,
        str(targets_file),
        api_key,
        str(offset),
        str(base_epoch),
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration + WRK_GRACE_SECONDS,
        check=False,
    )
    line = next(
        (
            line
            for line in completed.stdout.splitlines()
            if line.startswith("WRK_JSON ")
        ),
        None,
    )
    if completed.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed with exit code {completed.returncode}: "
            f"{completed.stderr.strip() or completed.stdout.strip()}"
        )
    data = json.loads(line.removeprefix("WRK_JSON "))
    seconds = data["duration_us"] / 1e6
    errors = data["errors"]
    latency = data["latency_us"]
    return WrkResult(
        requests=data["requests"],
        seconds=seconds,
        rps=data["requests"] / seconds if seconds else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        non_2xx=errors["status"],
        socket_errors=errors["connect"]
        + errors["read"]
        + errors["write"]
        + errors["timeout"],
    )


def new_run_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
