"""A loopback server that answers as Stripe's API does for the calls stripe-inbox makes: form-encoded
requests, list objects with has_more, pagination by starting_after, and Stripe's error objects."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, list[str]]  # query string or form body, as Stripe reads them
    headers: dict[str, str]


@dataclass
class FakeStripe:
    events: list[dict[str, Any]] = field(default_factory=list)  # any order; listed newest first
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    v2_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    fail_on_page: int | None = None  # answer this events page (1-based) with an error
    error: tuple[int, str, str] | None = None  # every request: (status, type, message)
    pages_served: int = 0

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET", parse_qs(urlparse(self.path).query, keep_blank_values=True))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                fake._handle(self, "POST", parse_qs(body, keep_blank_values=True))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str, params: dict[str, list[str]]) -> None:
        path = urlparse(handler.path).path
        self.requests.append(Request(method, path, params, dict(handler.headers)))
        if self.error is not None:
            status, kind, message = self.error
            return _send(handler, status, {"error": {"type": kind, "message": message}})
        if not handler.headers.get("Authorization", "").startswith("Bearer sk_"):
            return _send(handler, 401, {"error": {"type": "invalid_request_error", "message": "No API key"}})
        if (method, path) == ("GET", "/v1/webhook_endpoints"):
            return _send(handler, 200, _page(self.endpoints, params, "/v1/webhook_endpoints"))
        if (method, path) == ("POST", "/v1/webhook_endpoints"):
            endpoint = {
                "id": f"we_{secrets.token_hex(8)}",
                "object": "webhook_endpoint",
                "url": params["url"][0],
                "enabled_events": [
                    v for k, vs in sorted(params.items()) if k.startswith("enabled_events[") for v in vs
                ],
                "description": params.get("description", [None])[0],
                "status": "enabled",
                "secret": f"whsec_{secrets.token_hex(16)}",
                "livemode": False,
            }
            self.endpoints.append(endpoint)
            return _send(handler, 200, endpoint)
        if (method, path) == ("GET", "/v1/events"):
            self.pages_served += 1
            if self.fail_on_page == self.pages_served:
                return _send(handler, 400, {"error": {"type": "invalid_request_error", "message": "boom"}})
            return _send(handler, 200, _page(self._listed_events(params), params, "/v1/events"))
        if method == "GET" and path.startswith("/v2/core/events/"):
            found = self.v2_events.get(path.rsplit("/", 1)[1])
            if found is None:
                return _send(handler, 404, {"error": {"type": "invalid_request_error", "message": "No such event"}})
            return _send(handler, 200, found)
        return _send(handler, 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized {path}"}})

    def _listed_events(self, params: dict[str, list[str]]) -> list[dict[str, Any]]:
        gte = int(params.get("created[gte]", ["0"])[0])
        types = {v for k, vs in params.items() if k.startswith("types[") for v in vs}
        undelivered = params.get("delivery_success") == ["false"]
        chosen = [
            e
            for e in self.events
            if e["created"] >= gte
            and (not types or e["type"] in types)
            and (not undelivered or e.get("pending_webhooks", 0) > 0)
        ]
        return sorted(chosen, key=lambda e: (e["created"], e["id"]), reverse=True)


def _page(items: list[dict[str, Any]], params: dict[str, list[str]], url: str) -> dict[str, Any]:
    limit = int(params.get("limit", ["10"])[0])
    after = params.get("starting_after", [None])[0]
    start = next((i + 1 for i, item in enumerate(items) if item["id"] == after), 0) if after else 0
    data = items[start : start + limit]
    return {"object": "list", "url": url, "has_more": start + limit < len(items), "data": data}


def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Request-Id", f"req_{secrets.token_hex(6)}")
    handler.end_headers()
    handler.wfile.write(body)
