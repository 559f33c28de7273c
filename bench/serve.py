"""Start one uvicorn process serving orderdesk, the floor app or a webhook receiver.

Every process of every kind runs with the same uvicorn settings, the ones
`orderdesk serve` uses: the asyncio loop and HTTP parser that uvicorn picks by
default, warnings-only logs and no access log. The socket has SO_REUSEPORT set,
so several processes started on one port share its connections, with the kernel
spreading new connections over them. When the server is up, the process writes
its pid to the file named by `--ready-file`.

    python bench/serve.py orderdesk --port 8101 --ready-file /tmp/a.ready
    python bench/serve.py floor --port 8100 --body-file tracking.json ...
    python bench/serve.py receiver --port 8102 ...

orderdesk reads its settings from ORDERDESK_* variables, as the CLI does.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

UVICORN_SETTINGS: dict[str, Any] = {"log_level": "warning", "access_log": False}


def floor_app(body: bytes) -> Any:
    """A bare Starlette app returning `body` from memory for the tracking path."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def tracking(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    async def healthz(_request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/api/unstable/orders/{order_id}/tracking", tracking),
            Route("/healthz", healthz),
        ]
    )


def receiver_app() -> Any:
    """A webhook receiver that answers 204 to every POST and counts them."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    received = {"count": 0}

    async def hook(request: Request) -> Response:
        await request.body()
        received["count"] += 1
        return Response(status_code=204)

    async def count(_request: Request) -> Response:
        return Response(str(received["count"]).encode(), media_type="text/plain")

    async def healthz(_request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/hook", hook, methods=["POST"]),
            Route("/count", count),
            Route("/healthz", healthz),
        ]
    )


def orderdesk_app() -> Any:
    """The app exactly as `orderdesk serve --no-worker` builds it."""
    from orderdesk.app import create_app
    from orderdesk.config import load_settings
    from orderdesk.logs import configure_logging
    from orderdesk.runtime import Runtime, freeze_startup_objects

    settings = load_settings()
    configure_logging(settings)
    runtime = Runtime.build(settings)
    runtime.start()
    app = create_app(runtime=runtime, run_worker=False)
    freeze_startup_objects()
    return app


def shared_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket names it. Without it, Nagle's algorithm holds the
    # response body until the client's delayed ACK, 40 ms later on Linux.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def announce_when_started(server: uvicorn.Server, ready_file: Path) -> None:
    def wait() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        ready_file.write_text(str(os.getpid()))

    threading.Thread(target=wait, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=["orderdesk", "floor", "receiver"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--body-file", type=Path, help="The floor's response body.")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("The benchmark servers listen on loopback addresses only.")

    if args.app == "floor":
        if args.body_file is None:
            sys.exit("The floor app needs --body-file.")
        app = floor_app(args.body_file.read_bytes())
    elif args.app == "receiver":
        app = receiver_app()
    else:
        app = orderdesk_app()
    server = uvicorn.Server(uvicorn.Config(app, **UVICORN_SETTINGS))
    announce_when_started(server, args.ready_file)
    server.run(sockets=[shared_socket(args.host, args.port)])


if __name__ == "__main__":
    main()
