"""The demo over HTTP against `orderdesk serve --demo`, both started as processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from tests.conftest import free_port

ORDERDESK = [sys.executable, "-m", "orderdesk.cli"]


def start_server(
    workdir: Path, port: int, env: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [*ORDERDESK, "serve", "--demo", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    key = process.stdout.readline().strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
                == 200
            ):
                return process, key
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(
        f"server did not start: {process.stderr.read() if process.stderr else ''}"
    )


def test_demo_against_serve_demo(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERDESK_")}
    server, key = start_server(tmp_path, port, env)
    try:
        assert key.startswith("sk_development_")
        demo = subprocess.run(
            [
                *ORDERDESK,
                "demo",
                "--base-url",
                f"http://127.0.0.1:{port}",
                "--api-key",
                key,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "demo finished" in demo.stdout
        assert "refund-request-initiated" in demo.stdout
        assert "refund completed: payout 0x" in demo.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "orderdesk.db").exists()


def test_demo_fails_on_bad_key(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERDESK_")}
    server, _key = start_server(tmp_path, port, env)
    try:
        demo = subprocess.run(
            [
                *ORDERDESK,
                "demo",
                "--base-url",
                f"http://127.0.0.1:{port}",
                "--api-key",
                "sk_development_" + "x" * 32,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode != 0
        assert "401" in demo.stdout + demo.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
