"""The operator's dashboard under /ui/: the inbox at a glance, each event with what was done about it, and the
actions MCP and the CLI have, through the same `Inbox` methods, audited as `dashboard`. Pages are rendered on
the server and read without JavaScript; a small script only refreshes the list when the inbox changes. The pages
live in `views/`; this assembles them behind the access rule, the session and the page headers."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import StoreUnavailable
from ..inbox import Inbox
from ..presenter import Presenter
from .auth import Access, Guard
from .session import DashboardSessions
from .throttle import SignInThrottle
from .views.approvals import approval_routes, with_waiting_count
from .views.event import EventPages
from .views.forwards import forward_routes
from .views.kit import PageKit
from .views.lists import LIVE_HEADER, Lists
from .views.sign_in import SignIn
from .views.subscriptions import subscription_routes
from .views.templating import dashboard_templates
from .views.tokens import token_routes

ACTOR = "dashboard"
HERE = Path(__file__).parent
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def create_dashboard(
    inbox: Inbox,
    prefix: str = "/ui",
    sessions: DashboardSessions | None = None,
    throttle: SignInThrottle | None = None,
) -> ASGIApp:
    """The dashboard's ASGI app, to be mounted at `prefix`; `sessions` and `throttle` are shared with any other
    page that signs the operator in."""
    access = Access(inbox.settings.mcp_token, prefix, sessions)
    kit = PageKit(prefix, ACTOR, access, dashboard_templates(prefix))
    presenter = Presenter(inbox.settings.redact, inbox.triage)
    approvals = inbox.approvals

    async def unavailable(request: Request, error: Exception) -> Response:
        return kit.fail(request, 503, "The inbox is unavailable", str(error))

    routes: list[BaseRoute] = [
        *approval_routes(approvals, kit, presenter),
        *token_routes(inbox, kit),
        *subscription_routes(inbox, kit),
        *forward_routes(inbox, kit),
        *Lists(inbox, presenter, kit).routes(),
        *EventPages(inbox, presenter, kit).routes(),
        *SignIn(kit, throttle or SignInThrottle()).routes(),
        Mount("/static", StaticFiles(directory=HERE / "static")),
    ]
    app = Starlette(routes=routes, exception_handlers={StoreUnavailable: unavailable})
    counted = with_waiting_count(app, approvals, LIVE_HEADER.encode())
    guarded = Guard(counted, access, open_paths=(access.sign_in_path, f"{prefix}/static/"))
    return _with_page_headers(access.sessions.middleware(guarded, path=prefix))


def _with_page_headers(app: ASGIApp) -> ASGIApp:
    """Every answer: a strict content policy, no caching of pages that show customers' data, and the time
    the server took (Server-Timing, read by the benchmark and the browser's developer tools)."""

    async def with_headers(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        static = "/static/" in scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                extra = [*SECURITY_HEADERS, (b"server-timing", f"app;dur={elapsed:.2f}".encode())]
                if not static:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await app(scope, receive, send_with_headers)

    return with_headers
