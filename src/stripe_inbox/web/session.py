"""The dashboard's session: a small dict kept in a cookie that is signed (HMAC-SHA256), never readable by page
scripts (HttpOnly), never sent with a request another site starts (SameSite=Strict), and Secure behind HTTPS.
A sign-in is also recorded in this process: signing out ends it, so a cookie copied before then is worth nothing
after; the signing key derives from the access token, so a new token ends every sign-in."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME = "stripe_inbox_session"
MAX_AGE_SECONDS = 12 * 3600  # a sign-in lasts a working day
MAX_OPEN_SIGN_INS = 10_000  # past that, the oldest sign-in ends
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


class SignIns:
    """The sign-ins this process opened and no one has ended, each by a random id the session carries."""

    def __init__(self, limit: int = MAX_OPEN_SIGN_INS) -> None:
        self._opened: dict[str, float] = {}  # id -> when, oldest first
        self._limit = limit

    def open(self, now: float) -> str:
        while len(self._opened) >= self._limit:
            del self._opened[next(iter(self._opened))]
        sign_in_id = secrets.token_urlsafe(18)
        self._opened[sign_in_id] = now
        return sign_in_id

    def close(self, sign_in_id: object) -> None:
        if isinstance(sign_in_id, str):
            self._opened.pop(sign_in_id, None)

    def is_open(self, sign_in_id: object, now: float) -> bool:
        opened = self._opened.get(sign_in_id) if isinstance(sign_in_id, str) else None
        return opened is not None and now - opened <= MAX_AGE_SECONDS


class DashboardSessions:
    """The dashboard's sessions: how they are signed, and which sign-ins are still open. One per `serve`; its
    `signed_in` is what any page (the OAuth consent page too) asks to know whether an operator is signed in."""

    def __init__(self, token: str | None) -> None:
        self.signer = SessionSigner(session_key(token))
        self.sign_ins = SignIns()

    def signed_in(self, connection: HTTPConnection) -> bool:
        """Whether the request carries an open sign-in: read from `scope["session"]` under SignedSessions, else
        from the cookie itself."""
        session = connection.scope.get("session")
        if session is None:
            session = self.signer.loads(connection.cookies.get(COOKIE_NAME), time.time())
        return session.get("signed_in") is True and self.sign_ins.is_open(session.get("sign_in"), time.time())

    def sign_in(self, session: dict[str, Any]) -> None:
        """Mark `session` signed in, with a new sign-in; whatever it held before is dropped."""
        session.clear()
        session.update(signed_in=True, sign_in=self.sign_ins.open(time.time()))

    def sign_out(self, session: dict[str, Any]) -> None:
        self.sign_ins.close(session.get("sign_in"))
        session.clear()

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
