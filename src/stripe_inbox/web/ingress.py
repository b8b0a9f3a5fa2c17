"""`POST /webhooks/stripe` (and `/thin`) as a plain ASGI endpoint: it is the hot path, so it skips the
framework's request and response objects, and every delivery costs only what it must."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.types import Receive, Scope, Send

from ..errors import DeliveryRejected, StoreUnavailable
from ..inbox import Inbox
from ..metrics import Metrics

MAX_BODY_BYTES = 1024 * 1024
PATHS = {"/webhooks/stripe": False, "/webhooks/stripe/thin": True}  # path -> thin
# The answers to Stripe for accepted deliveries, rendered once.
ACCEPTED = {
    "stored": b'{"received":true}',
    "duplicate": b'{"received":true,"duplicate":true}',
    "filtered": b'{"received":true,"filtered":true}',
}
JSON_HEADERS = [(b"content-type", b"application/json")]

delivery_log = logging.getLogger("stripe_inbox.ingress")


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class Ingress:
    def __init__(self, inbox: Inbox, metrics: Metrics) -> None:
        self.inbox = inbox
        self.metrics = metrics
        self.body_timeout = inbox.settings.body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            body = b'{"error":"method_not_allowed","message":"webhooks are delivered with POST"}'
            return await _respond(send, 405, body, [(b"allow", b"POST")])
        started = time.perf_counter()
        event_id = event_type = None
        signature, declared = _headers(scope)
        try:
            if declared is not None and declared > MAX_BODY_BYTES:
                raise BodyTooLarge
            # A slow body must not hold a connection forever. (asyncio's own timeout: the ingress only ever
            # runs under uvicorn's asyncio loop, and it costs half of anyio's cancel scope per delivery.)
            async with asyncio.timeout(self.body_timeout):
                payload = await _read_body(receive)
            receipt = await self.inbox.receive(payload, signature, thin=PATHS[scope["path"]])
            event_id, event_type, result = receipt.event.id, receipt.event.type, receipt.result
            status, body = 200, ACCEPTED[result]
        except DeliveryRejected as error:
            result, status, body = error.code, 400, _error(error.code, str(error))
        except BodyTooLarge:
            result, status, body = (
                "too_large",
                413,
                _error("too_large", f"the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        except TimeoutError:
            message = f"the body did not arrive within {self.body_timeout:g} s"
            result, status, body = "body_timeout", 408, _error("body_timeout", message)
        except StoreUnavailable as error:
            result, status, body = "store_unavailable", 503, _error("store_unavailable", str(error))
        except ClientGone:
            result, status, body = "client_disconnected", 400, b"{}"
        latency = time.perf_counter() - started
        self.metrics.record_delivery(result, status, latency)
        delivery_log.info(
            '{"event_id": %s, "type": %s, "result": "%s", "status": %d, "latency_ms": %.3f}',
            json.dumps(event_id),
            json.dumps(event_type),
            result,
            status,
            latency * 1000,
        )
        await _respond(send, status, body)


def _headers(scope: Scope) -> tuple[str | None, int | None]:
    signature = declared = None
    for name, value in scope["headers"]:
        if name == b"stripe-signature":
            signature = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit():
            # int() refuses thousands of digits; anything past a dozen is too large all the same.
            declared = int(value) if len(value) <= 12 else MAX_BODY_BYTES + 1
    return signature, declared


async def _read_body(receive: Receive) -> bytes:
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks += message.get("body", b"")
        if len(chunks) > MAX_BODY_BYTES:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return bytes(chunks)


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    all_headers: list[Any] = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
