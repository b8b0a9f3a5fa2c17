"""The dashboard's session: a small dict kept in a cookie that is signed (HMAC-SHA256), never readable by page
scripts (HttpOnly), never sent with a request another site starts (SameSite=Strict), and Secure behind HTTPS.
Signing out ends every sign-in made before it, so a copied cookie is worth nothing after; the signing key derives
from the access token, so a new token ends every sign-in too."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from http.cookies import SimpleCookie
from typing import Any, Protocol

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import StoreUnavailable

COOKIE_NAME = "stripe_inbox_session"
MAX_AGE_SECONDS = 12 * 3600  # a sign-in lasts a working day
SIGNED_OUT_KEY = "dashboard_signed_out_at"
SESSION_KEY_LABEL = b"stripe-inbox dashboard session v1"


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


class StateStore(Protocol):
    async def get_state(self, key: str) -> str | None: ...

    async def set_state(self, key: str, value: str | None) -> None: ...


class DashboardSessions:
    """The dashboard's sessions: how they are signed, and when the operator last signed out. Signing out ends
    every sign-in made before it, on every replica (the time is kept in the store), so a cookie copied before
    then is worth nothing after. One per `serve`; `signed_in` is what any page (the OAuth consent page too)
    asks to know whether an operator is signed in."""

    def __init__(self, token: str | None, store: StateStore | None = None) -> None:
        self.signer = SessionSigner(session_key(token))
        self._store = store
        self._signed_out_at = 0.0

    async def refresh(self) -> None:
        """Learn of a sign-out on another replica; with the store unavailable, what is known here stands."""
        if self._store is None:
            return
        try:
            stored = await self._store.get_state(SIGNED_OUT_KEY)
        except StoreUnavailable:
            return
        self._signed_out_at = max(self._signed_out_at, float(stored or 0))

    def signed_in(self, connection: HTTPConnection) -> bool:
        """Whether the request carries a sign-in made after the last sign-out: read from `scope["session"]` under
        SignedSessions, else from the cookie itself."""
        session = connection.scope.get("session")
        if session is None:
            session = self.signer.loads(connection.cookies.get(COOKIE_NAME), time.time())
        signed_in_at = session.get("signed_in_at")
        if session.get("signed_in") is not True or not isinstance(signed_in_at, int | float):
            return False
        # A session rewritten now and then (a flash message) keeps a fresh cookie; the sign-in still lapses.
        return self._signed_out_at < signed_in_at and time.time() - signed_in_at <= MAX_AGE_SECONDS

    def sign_in(self, session: dict[str, Any]) -> None:
        """Mark `session` signed in from now; whatever it held before is dropped."""
        session.clear()
        session.update(signed_in=True, signed_in_at=time.time())

    async def sign_out(self, session: dict[str, Any]) -> None:
        """End `session` and every other sign-in made until now."""
        session.clear()
        self._signed_out_at = max(self._signed_out_at, time.time())
        if self._store is not None:
            await self._store.set_state(SIGNED_OUT_KEY, repr(self._signed_out_at))

    def middleware(self, app: ASGIApp, path: str) -> SignedSessions:
        return SignedSessions(app, self.signer, path)


def session_key(token: str | None) -> bytes:
    """Derived from the token, so a new token ends every session; without a token, sessions only carry CSRF tokens
    and flash messages, and die with the process."""
    if not token:
        return secrets.token_bytes(32)
    return hmac.new(token.encode(), SESSION_KEY_LABEL, hashlib.sha256).digest()


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
