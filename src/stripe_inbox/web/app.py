"""The HTTP side of `serve`: the Stripe ingress, health, metrics, MCP over Streamable HTTP at /mcp, and the
dashboard at /ui/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import StoreUnavailable
from ..inbox import Inbox
from ..mcp.server import InboxServer
from ..metrics import CONTENT_TYPE, Metrics
from ..runtime import Runtime
from .auth import Access, Forbidden, Unauthorized
from .dashboard import create_dashboard
from .ingress import PATHS, Ingress
from .oauth import oauth_routes
from .session import DashboardSessions
from .throttle import SignInThrottle

LOOPBACK_HOST_HEADERS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def create_app(inbox: Inbox, mcp_server: InboxServer | None = None, metrics: Metrics | None = None) -> ASGIApp:
    """The ASGI app of `serve`. The inbox is opened (and closed) by the caller; served, the app's lifespan runs
    the inbox's runtime (every background loop, upkeep too, and the MCP server's own)."""
    metrics = metrics or Metrics()
    ingress = Ingress(inbox, metrics)
    sessions = DashboardSessions(inbox.settings.mcp_token, inbox.store)
    scrapers = Access(inbox.settings.mcp_token, "/metrics", sessions)  # /metrics follows the rule of /mcp

    async def metrics_endpoint(request: Request) -> Response:
        try:
            scrapers.check_bearer(request)
        except Forbidden as refusal:
            return PlainTextResponse(f"403 Forbidden: {refusal}", status_code=403)
        except Unauthorized as refusal:
            headers = {"www-authenticate": "Bearer"}
            return PlainTextResponse(f"401 Unauthorized: {refusal}", status_code=401, headers=headers)
        counts = await inbox.store.counts()
        forwards = await inbox.store.forward_counts()
        metrics.event_streams.set(mcp_server.events.open_streams if mcp_server is not None else 0)
        return Response(metrics.render(counts, await inbox.stats(), forwards), media_type=CONTENT_TYPE)

    async def to_dashboard(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    routes: list[Route | Mount] = [
        Route("/healthz", _health(inbox), methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/", to_dashboard, methods=["GET"]),
        Route("/ui", to_dashboard, methods=["GET"]),
        Mount("/ui", app=create_dashboard(inbox, "/ui", sessions, SignInThrottle())),
    ]

    if mcp_server is not None and mcp_server.auth_provider is not None and inbox.settings.mcp_token:
        # Ahead of /ui: the consent page lives under it, where the dashboard's session cookie reaches.
        routes[:0] = oauth_routes(mcp_server.auth_provider, inbox.settings.mcp_token, sessions, "/ui")
    if mcp_server is not None:
        mcp_app = mcp_server.streamable_http_app(
            streamable_http_path="/mcp",
            transport_security=_transport_security(inbox.settings.mcp_token is not None),
        )
        routes.append(Mount("/", app=_without_header_whitespace(mcp_app)))
    rest = Starlette(routes=routes, lifespan=_running(inbox, mcp_server))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in PATHS:
            await ingress(scope, receive, send)
        else:
            await rest(scope, receive, send)

    return app


def _health(inbox: Inbox) -> Callable[[Request], Awaitable[Response]]:
    """GET /healthz: the store answers and no background loop is down or crash-looping."""

    async def healthz(request: Request) -> Response:
        try:
            await inbox.store.ping()
        except StoreUnavailable as error:
            return JSONResponse({"status": "unavailable", "message": str(error)}, status_code=503)
        if down := inbox.loops.unhealthy():
            listed = ", ".join(f"{loop.name} ({loop.error}, failures in a row: {loop.crashes})" for loop in down)
            return JSONResponse(
                {
                    "status": "unavailable",
                    "message": f"background loops down or restarting: {listed}",
                    "loops": {
                        loop.name: {"restarting": loop.restarting, "failures": loop.crashes, "error": loop.error}
                        for loop in down
                    },
                },
                status_code=503,
            )
        return JSONResponse({"status": "ok"})

    return healthz


def _running(inbox: Inbox, mcp_server: InboxServer | None) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: served, it runs the inbox's runtime with or without MCP (the outbox, the forwards, the
    index, upkeep), and the MCP server's own loops and sessions when there is one."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        faces = mcp_server.face_loops() if mcp_server is not None else {}
        async with AsyncExitStack() as stack:
            if mcp_server is not None:
                await stack.enter_async_context(mcp_server.session_manager.run())
            await stack.enter_async_context(Runtime(inbox, faces).running())
            yield

    return lifespan


def _without_header_whitespace(app: ASGIApp) -> ASGIApp:
    """`app` seeing each header value without leading or trailing spaces and tabs, as RFC 9110 §5.5 has a field
    value parsed. uvicorn's httptools parser keeps trailing ones, and the SDK compares Mcp-Name and Mcp-Method
    with the request body as they come, so `Mcp-Name: ' get_stats '` was refused."""

    async def stripped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(name, value.strip(b" \t")) for name, value in scope["headers"]]
            scope = {**scope, "headers": headers}
        await app(scope, receive, send)

    return stripped


def _transport_security(token_required: bool) -> TransportSecuritySettings:
    if token_required:
        # A bearer token is what a DNS-rebinding page cannot supply, so any Host may reach /mcp.
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=LOOPBACK_HOST_HEADERS, allowed_origins=LOOPBACK_ORIGINS
    )
