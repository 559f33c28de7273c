"""A small stand-in for EasyPost's Shipments API on loopback.

It returns the documented shapes: Shipment objects with `rates`, `selected_rate`,
`tracking_code` and `postage_label`, and errors as `{"error": {code, message,
errors}}`. Labels are served as PDF (or PNG, to exercise the conversion call).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reportlab.pdfgen import canvas

API_KEY = "EZTK_test_key"  # noqa: S105 - a test credential

RATES = [
    ("USPS", "GroundAdvantage", "6.95"),
    ("USPS", "Priority", "9.10"),
    ("UPS", "Ground", "5.10"),
]


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    authorization: str | None


@dataclass
class FakeEasyPost:
    """State and knobs of the fake. Tests read `requests` and change the knobs."""

    label_file_type: str = "application/pdf"
    delay_seconds: float = 0.0
    # Responses (status, body) returned, in order, for the next create or buy
    # requests instead of the normal response.
    create_failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    buy_failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    shipments: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    base_url: str = ""
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def count(self, method: str, path_start: str) -> int:
        return sum(
            1
            for r in self.requests
            if r.method == method and r.path.startswith(path_start)
        )

    def find(self, key: str) -> dict[str, Any] | None:
        for shipment in self.shipments.values():
            if key in (shipment["id"], shipment["reference"]):
                return shipment
        return None

    # -- endpoints -------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.create_failures:
            return self.create_failures.pop(0)
        data = body.get("shipment") or {}
        errors = [
            {"field": f"{side}.street1", "message": "street1 is required"}
            for side in ("to_address", "from_address")
            if not (data.get(side) or {}).get("street1")
        ]
        if errors:
            return 422, _error("SHIPMENT.INVALID_PARAMS", "Invalid shipment.", errors)
        number = next(self._ids)
        shipment_id = f"shp_{number:032x}"
        shipment = {
            "id": shipment_id,
            "object": "Shipment",
            "mode": "test",
            "reference": data.get("reference"),
            "is_return": bool(data.get("is_return")),
            "to_address": data.get("to_address"),
            "from_address": data.get("from_address"),
            "parcel": data.get("parcel"),
            "options": data.get("options") or {},
            "rates": [
                {
                    "id": f"rate_{number:04x}{index:028x}",
                    "object": "Rate",
                    "carrier": carrier,
                    "service": service,
                    "rate": price,
                    "currency": "USD",
                    "shipment_id": shipment_id,
                }
                for index, (carrier, service, price) in enumerate(RATES)
            ],
            "selected_rate": None,
            "postage_label": None,
            "tracking_code": None,
        }
        self.shipments[shipment_id] = shipment
        return 201, shipment

    def buy(self, shipment_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.buy_failures:
            return self.buy_failures.pop(0)
        shipment = self.shipments.get(shipment_id)
        if shipment is None:
            return 404, _error(
                "NOT_FOUND", "The requested resource could not be found."
            )
        if shipment["postage_label"]:
            return 422, _error("SHIPMENT.POSTAGE.EXISTS", "Postage already exists.")
        rate_id = (body.get("rate") or {}).get("id")
        rate = next((r for r in shipment["rates"] if r["id"] == rate_id), None)
        if rate is None:
            return 422, _error("SHIPMENT.RATE.INVALID", f"Rate {rate_id} not found.")
        number = int(shipment_id[4:], 16)
        pdf = self.label_file_type == "application/pdf"
        extension = "pdf" if pdf else "png"
        shipment["selected_rate"] = rate
        shipment["tracking_code"] = f"9400 1000 0000 0000 {number:06d}"
        shipment["postage_label"] = {
            "object": "PostageLabel",
            "label_file_type": self.label_file_type,
            "label_size": "4x6",
            "label_url": f"{self.base_url}/files/{shipment_id}.{extension}",
            "label_pdf_url": None,
        }
        return 200, shipment

    def convert(self, shipment_id: str, query: str) -> tuple[int, dict[str, Any]]:
        shipment = self.shipments.get(shipment_id)
        if shipment is None or not shipment["postage_label"]:
            return 404, _error(
                "NOT_FOUND", "The requested resource could not be found."
            )
        if parse_qs(query).get("file_format") == ["PDF"]:
            label = shipment["postage_label"]
            label["label_pdf_url"] = f"{self.base_url}/files/{shipment_id}.pdf"
        return 200, shipment

    def label_file(self, name: str) -> tuple[int, bytes, str]:
        shipment_id, _, extension = name.partition(".")
        shipment = self.shipments.get(shipment_id)
        if shipment is None:
            return 404, b"not found", "text/plain"
        if extension == "png":
            return 200, b"\x89PNG\r\n\x1a\nnot really", "image/png"
        return 200, _label_pdf(shipment["tracking_code"]), "application/pdf"


def _error(code: str, message: str, errors: list[Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "errors": errors or []}}


def _label_pdf(tracking_code: str) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(288, 432), invariant=1)
    pdf.drawString(20, 400, f"USPS RETURN {tracking_code}")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _handler(fake: FakeEasyPost) -> type[BaseHTTPRequestHandler]:
    expected_auth = "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server hook name
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802 - http.server hook name
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            authorization = self.headers.get("Authorization")
            fake.requests.append(Recorded(method, parts.path, body, authorization))
            if fake.delay_seconds:
                time.sleep(fake.delay_seconds)
            if parts.path.startswith("/files/"):
                status, content, content_type = fake.label_file(parts.path[7:])
                self._send(status, content, content_type)
                return
            if authorization != expected_auth:
                error = _error("APIKEY.INVALID", "The API key is invalid.")
                self._json(401, error)
                return
            self._json(*self._route(method, parts.path, parts.query, body or {}))

        def _route(
            self, method: str, path: str, query: str, body: dict[str, Any]
        ) -> tuple[int, dict[str, Any]]:
            segments = path.strip("/").split("/")
            if segments[:2] != ["v2", "shipments"]:
                return 404, _error("NOT_FOUND", "Unknown endpoint.")
            rest = segments[2:]
            if method == "POST" and not rest:
                return fake.create(body)
            if method == "GET" and len(rest) == 1:
                shipment = fake.find(rest[0])
                if shipment is None:
                    return 404, _error(
                        "NOT_FOUND", "The requested resource could not be found."
                    )
                return 200, shipment
            if method == "POST" and len(rest) == 2 and rest[1] == "buy":
                return fake.buy(rest[0], body)
            if method == "GET" and len(rest) == 2 and rest[1] == "label":
                return fake.convert(rest[0], query)
            return 404, _error("NOT_FOUND", "Unknown endpoint.")

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, content: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    return Handler


class FakeEasyPostServer:
    """Run the fake on a random loopback port in a thread."""

    def __init__(self) -> None:
        self.fake = FakeEasyPost()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.fake))
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.fake.base_url = f"http://{host!s}:{port}"
        self.api_url = f"{self.fake.base_url}/v2"
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    def __enter__(self) -> FakeEasyPostServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
