"""Who may use the dashboard: the rule of /mcp. Without an access token, only this machine (a loopback `Host`,
so a DNS-rebinding page is refused); with one, whoever signs in with it. Every state-changing request is a
POST that carries the session's CSRF token and comes from the dashboard's own origin."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import FormData
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .session import DashboardSessions

CSRF_FIELD = "csrf_token"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})


class Forbidden(Exception):
    """A request the access rule refuses; the message says why, and is safe to show."""


class Unauthorized(Exception):
    """A request without the access token where one is required; the message says what to send."""


class Access:
    def __init__(self, token: str | None, prefix: str, sessions: DashboardSessions | None = None) -> None:
        self._token = token.encode() if token else None
        self.prefix = prefix
        self.sign_in_path = f"{prefix}/sign-in"
        self.sessions = sessions or DashboardSessions(token)

    @property
    def token_required(self) -> bool:
        return self._token is not None

    def accepts_token(self, offered: str) -> bool:
        return self._token is not None and hmac.compare_digest(offered.encode(), self._token)

    def check_bearer(self, connection: HTTPConnection) -> None:
        """The rule of /mcp for a machine client such as a Prometheus scraper: without a token, a loopback Host;
        with one, `Authorization: Bearer <token>`. Raise Forbidden or Unauthorized."""
        if not self.token_required:
            self.check_origin(connection)
            return
        scheme, _, offered = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.accepts_token(offered.strip()):
            raise Unauthorized("send the access token (STRIPE_INBOX_TOKEN) as `Authorization: Bearer <token>`")

    # -- per request -----------------------------------------------------------------------------

    def check_origin(self, connection: HTTPConnection) -> None:
        """Raise Forbidden for a foreign Host (without a token) or a foreign Origin (always)."""
        host = connection.headers.get("host", "")
        if not self.token_required and _host_name(host) not in LOOPBACK_NAMES:
            raise Forbidden("without STRIPE_INBOX_TOKEN the dashboard answers only on this machine (a loopback Host)")
        origin = connection.headers.get("origin")
        if origin is not None and not _same_origin(origin, connection):
            raise Forbidden("a request from another site")

    def signed_in(self, connection: HTTPConnection) -> bool:
        return not self.token_required or self.sessions.signed_in(connection)

    @staticmethod
    def csrf_token(connection: HTTPConnection) -> str:
        """The session's CSRF token, made on first use."""
        session = connection.session
        if not isinstance(session.get("csrf"), str):
            session["csrf"] = secrets.token_urlsafe(24)
        return session["csrf"]  # type: ignore[no-any-return]

    async def checked_form(self, request: Request) -> FormData:
        """The form of a state-changing request that proved it came from a dashboard page; else Forbidden."""
        referer = request.headers.get("referer")
        if request.headers.get("origin") is None and referer is not None and not _same_origin(referer, request):
            raise Forbidden("a request from another site")
        if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            raise Forbidden("a request from another site")
        form = await request.form()
        offered = form.get(CSRF_FIELD)
        expected = request.session.get("csrf")
        if not isinstance(offered, str) or not isinstance(expected, str) or not hmac.compare_digest(offered, expected):
            raise Forbidden("the form's CSRF token is missing or stale: reload the page and try again")
        return form

    def sign_in(self, request: Request) -> None:
        """A new session, so a session fixed before sign-in is worth nothing after it."""
        self.sessions.sign_in(request.session)
        request.session["csrf"] = secrets.token_urlsafe(24)

    async def sign_out(self, request: Request) -> None:
        await self.sessions.sign_out(request.session)

    def safe_next(self, value: object) -> str:
        """Where to go after signing in: a dashboard path only, never another site."""
        if isinstance(value, str) and value.startswith(f"{self.prefix}/") and not value.startswith("//"):
            return value
        return f"{self.prefix}/"


class Guard:
    """ASGI middleware in front of every dashboard route: origin rules, then sign-in when a token is set."""

    def __init__(self, app: ASGIApp, access: Access, open_paths: tuple[str, ...]) -> None:
        self.app = app
        self.access = access
        self.open_paths = open_paths  # reachable signed out: the sign-in form, the style sheet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        try:
            self.access.check_origin(connection)
        except Forbidden as refusal:
            await PlainTextResponse(f"403 Forbidden: {refusal}", status_code=403)(scope, receive, send)
            return
        path = connection.url.path
        if self.access.token_required:
            await self.access.sessions.refresh()
        if self.access.signed_in(connection) or path.startswith(self.open_paths):
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD") and "x-inbox-live" not in connection.headers:
            target = f"{self.access.sign_in_path}?{urlencode({'next': path})}"
            await RedirectResponse(target, status_code=303)(scope, receive, send)
            return
        await PlainTextResponse("401 Unauthorized: sign in first", status_code=401)(scope, receive, send)


def _same_origin(url: str, connection: HTTPConnection) -> bool:
    """Whether `url` (an Origin or Referer) names the host the request was sent to. The scheme is left out: a
    TLS-terminating proxy that does not say X-Forwarded-Proto would otherwise make every form a foreign one."""
    return urlsplit(url).netloc.lower() == connection.headers.get("host", "").lower()


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `[::1]`, `localhost:80` -> `localhost`."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
