"""The SDK imports and runs with the server's modules and dependencies blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orderdesk

SOURCE_ROOT = Path(orderdesk.__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    SERVER_ONLY = (
        "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg",
        "web3", "eth_account", "eth_tester", "vyper", "structlog", "limits",
        "redis", "jinja2", "reportlab", "typer", "rich", "prometheus_client",
        "pydantic_settings", "argon2",
    )


    class BlockServer(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            in_sdk = name == "orderdesk" or name.startswith("orderdesk.client")
            if (top == "orderdesk" and not in_sdk) or top in SERVER_ONLY:
                raise ImportError(f"blocked import of {name}")
            return None


    sys.meta_path.insert(0, BlockServer())

    import httpx
    import orderdesk.client
    from orderdesk.client import AsyncOrderDesk, NotFound, OrderDesk
    from orderdesk.client.webhooks import WebhookVerificationError, verify

    def handler(request):
        return httpx.Response(
            404, json={"error": True, "message": "No order.", "code": "not_found"}
        )

    http = httpx.Client(transport=httpx.MockTransport(handler))
    try:
        OrderDesk("sk_development_key", http_client=http).orders.get("x")
    except NotFound as exc:
        assert exc.code == "not_found"
    AsyncOrderDesk("sk_development_key")
    try:
        verify(b"{}", {}, "whsec_a2V5")
    except WebhookVerificationError:
        pass
    loaded = sorted(
        name for name in sys.modules
        if name.split(".")[0] == "orderdesk" and not name.startswith("orderdesk.client")
    )
    print("loaded:", loaded)
    """
)


def test_sdk_runs_without_server() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SOURCE_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: ['orderdesk']"


def test_blocker_catches_server_import() -> None:
    # The same script with one server import added must fail, so the check above
    # cannot pass by not blocking anything.
    script = SCRIPT.replace(
        "import orderdesk.client\n", "import orderdesk.client\nimport orderdesk.app\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SOURCE_ROOT,
        check=False,
    )
    assert result.returncode != 0
    assert "blocked import of orderdesk.app" in result.stderr


def test_package_ships_py_typed() -> None:
    assert (SOURCE_ROOT / "orderdesk" / "py.typed").is_file()
