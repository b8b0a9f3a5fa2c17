"""The HTTP side of `serve`: the Stripe ingress, health, metrics, and MCP over Streamable HTTP at /mcp."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from .errors import DeliveryRejected, StoreUnavailable
from .inbox import Inbox
from .mcp_server import InboxServer
from .metrics import CONTENT_TYPE, Metrics

MAX_BODY_BYTES = 1024 * 1024
# The answers to Stripe for accepted deliveries, rendered once: they are on every hot request.
ACCEPTED = {
    "stored": b'{"received":true}',
    "duplicate": b'{"received":true,"duplicate":true}',
    "filtered": b'{"received":true,"filtered":true}',
}
LOOPBACK_HOST_HEADERS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]

delivery_log = logging.getLogger("stripe_inbox.ingress")


class BodyTooLarge(Exception):
    pass


def create_app(inbox: Inbox, mcp_server: InboxServer | None = None, metrics: Metrics | None = None) -> Starlette:
    """The ASGI app of `serve`. The inbox is opened (and closed) by the caller."""
    metrics = metrics or Metrics()
    body_timeout = inbox.settings.body_timeout_seconds

    def ingress(thin: bool) -> Callable[[Request], Awaitable[Response]]:
        async def webhook(request: Request) -> Response:
            started = time.perf_counter()
            event_id = event_type = None
            try:
                with anyio.fail_after(body_timeout):  # a slow body must not hold a connection forever
                    payload = await _read_body(request)
                receipt = await inbox.receive(payload, request.headers.get("stripe-signature"), thin=thin)
                event_id, event_type, result = receipt.event.id, receipt.event.type, receipt.result
                status, body = 200, ACCEPTED[result]
            except DeliveryRejected as error:
                result, status, body = error.code, 400, {"error": error.code, "message": str(error)}
            except BodyTooLarge:
                message = f"the body is larger than {MAX_BODY_BYTES} bytes"
                result, status, body = "too_large", 413, {"error": "too_large", "message": message}
            except TimeoutError:
                message = f"the body did not arrive within {body_timeout:g} s"
                result, status, body = "body_timeout", 408, {"error": "body_timeout", "message": message}
            except StoreUnavailable as error:
                result, status = "store_unavailable", 503
                body = {"error": "store_unavailable", "message": str(error)}
            except ClientDisconnect:
                result, status, body = "client_disconnected", 400, {}
            latency = time.perf_counter() - started
            metrics.record_delivery(result, status, latency)
            line = {
                "event_id": event_id,
                "type": event_type,
                "result": result,
                "status": status,
                "latency_ms": round(latency * 1000, 3),
            }
            delivery_log.info(json.dumps(line))
            if isinstance(body, bytes):
                return Response(body, media_type="application/json")
            return JSONResponse(body, status_code=status)

        return webhook

    async def healthz(request: Request) -> Response:
        try:
            await inbox.store.ping()
        except StoreUnavailable as error:
            return JSONResponse({"status": "unavailable", "message": str(error)}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        counts = await inbox.store.counts()
        return Response(metrics.render(counts, await inbox.stats()), media_type=CONTENT_TYPE)

    routes: list[Route | Mount] = [
        Route("/webhooks/stripe", ingress(thin=False), methods=["POST"]),
        Route("/webhooks/stripe/thin", ingress(thin=True), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if mcp_server is None:
            yield
            return
        async with mcp_server.session_manager.run(), mcp_server.running():
            yield

    if mcp_server is not None:
        mcp_app = mcp_server.streamable_http_app(
            streamable_http_path="/mcp",
            transport_security=_transport_security(inbox.settings.mcp_token is not None),
        )
        routes.append(Mount("/", app=mcp_app))
    return Starlette(routes=routes, lifespan=lifespan)


def _transport_security(token_required: bool) -> TransportSecuritySettings:
    if token_required:
        # A bearer token is what a DNS-rebinding page cannot supply, so any Host may reach /mcp.
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=LOOPBACK_HOST_HEADERS, allowed_origins=LOOPBACK_ORIGINS
    )


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > MAX_BODY_BYTES:
            raise BodyTooLarge
    return bytes(chunks)
