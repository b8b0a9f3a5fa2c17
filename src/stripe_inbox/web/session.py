"""The dashboard's session: a small dict kept in a cookie that is signed (HMAC-SHA256), never readable by page
scripts (HttpOnly), never sent with a request another site starts (SameSite=Strict), and Secure behind HTTPS."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME = "stripe_inbox_session"
MAX_AGE_SECONDS = 12 * 3600  # a sign-in lasts a working day


class SessionSigner:
    """Turns a session into a cookie value and back; a value altered, signed with another key or older than
    MAX_AGE_SECONDS reads as an empty session."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def dumps(self, session: dict[str, Any], now: float) -> str:
        payload = _b64(json.dumps({"at": int(now), "data": session}, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def loads(self, value: str | None, now: float) -> dict[str, Any]:
        if not value or "." not in value:
            return {}
        payload, signature = value.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(payload)):
            return {}
        try:
            decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):
            return {}
        if not isinstance(decoded, dict) or not now - MAX_AGE_SECONDS <= decoded.get("at", 0) <= now + 60:
            return {}
        data = decoded.get("data")
        return data if isinstance(data, dict) else {}

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def is_https(connection: HTTPConnection) -> bool:
    """Whether the browser reached us over HTTPS: directly, or through a proxy that says so."""
    forwarded = connection.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https" or connection.url.scheme == "https"


class SignedSessions:
    """ASGI middleware: `scope["session"]` from the cookie, and the cookie rewritten when the session changed.
    Starlette's own SessionMiddleware fixes `Secure` when it is built; here it follows each request."""

    def __init__(self, app: ASGIApp, signer: SessionSigner, path: str) -> None:
        self.app = app
        self.signer = signer
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        cookie = SimpleCookie(connection.headers.get("cookie", ""))
        now = time.time()
        loaded = self.signer.loads(cookie[COOKIE_NAME].value if COOKIE_NAME in cookie else None, now)
        scope["session"] = session = dict(loaded)
        secure = "; Secure" if is_https(connection) else ""

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and session != loaded:
                headers = MutableHeaders(scope=message)
                if session:
                    value = self.signer.dumps(session, now)
                    headers.append(
                        "set-cookie",
                        f"{COOKIE_NAME}={value}; Path={self.path}; HttpOnly; SameSite=Strict{secure}",
                    )
                else:
                    headers.append(
                        "set-cookie",
                        f"{COOKIE_NAME}=; Path={self.path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}",
                    )
            await send(message)

        await self.app(scope, receive, send_with_cookie)
