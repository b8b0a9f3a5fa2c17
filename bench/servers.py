"""The two servers stripe-inbox's ingress is measured against, on the same uvicorn settings.

bare:  a Starlette endpoint that reads the body and returns 200: the ceiling of this stack.
naive: the handler users write today: Starlette, stripe.Webhook.construct_event, and an INSERT
       with a COMMIT per event (SQLite, WAL, synchronous=FULL, so it is as durable as ours).
verify-only: stripe-inbox's own signature check and parse in a plain ASGI endpoint, storing nothing:
       the most any storage design behind this verification could reach on this machine.

python bench/servers.py bare|naive|verify-only PORT DB SECRET
"""

from __future__ import annotations

import sqlite3
import sys
import threading

import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stripe_inbox.events import IncomingEvent
from stripe_inbox.stripe.signature import verify


async def bare(request: Request) -> Response:
    await request.body()
    return JSONResponse({"received": True})


def naive_app(db: str, secret: str) -> Starlette:
    connection = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT, payload BLOB)")
    lock = threading.Lock()

    def store(event_id: str, event_type: str, payload: bytes) -> None:
        with lock:
            connection.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?)", (event_id, event_type, payload))

    async def webhook(request: Request) -> Response:
        payload = await request.body()
        try:
            event = stripe.Webhook.construct_event(payload, request.headers.get("stripe-signature"), secret)
        except (ValueError, stripe.SignatureVerificationError):
            return JSONResponse({"error": "invalid"}, status_code=400)
        await run_in_threadpool(store, event["id"], event["type"], payload)
        return JSONResponse({"received": True})

    return Starlette(routes=[Route("/webhooks/stripe", webhook, methods=["POST"])])


def verify_only_app(secret: str) -> ASGIApp:
    async def webhook(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        payload, more = b"", True
        while more:
            message = await receive()
            payload, more = payload + message.get("body", b""), message.get("more_body", False)
        signature = dict(scope["headers"]).get(b"stripe-signature", b"").decode("latin-1")
        verify(payload, signature, [secret])
        IncomingEvent.parse(payload)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"received":true}'})

    return webhook


if __name__ == "__main__":
    kind, port, db, secret = sys.argv[1:5]
    apps = {
        "bare": lambda: Starlette(routes=[Route("/webhooks/stripe", bare, methods=["POST"])]),
        "naive": lambda: naive_app(db, secret),
        "verify-only": lambda: verify_only_app(secret),
    }
    uvicorn.run(apps[kind](), host="127.0.0.1", port=int(port), log_level="warning", access_log=False)
