"""The MCP server over one inbox, for stdio (`mcp`) and Streamable HTTP (`serve`)."""

from __future__ import annotations

import base64
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

import mcp.types as types
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..auth.protection import protection
from ..auth.provider import InboxAuthProvider
from ..auth.scopes import SCOPES, require_scopes
from ..inbox import Inbox
from ..metrics import Metrics
from ..presenter import Presenter
from ..runtime import Loop, Runtime
from .boundary import Boundary
from .channel import ClaudeChannel
from .event_webhooks import WebhookMethods
from .events import EventMethods
from .prompts import register_prompts
from .resources import PENDING_URI, STATS_URI, event_uri, register_resources
from .subscriptions import ChangeNotifier, LegacySubscriptions
from .tools import inbox_tools

__all__ = ["PENDING_URI", "STATS_URI", "InboxServer", "create_mcp_server", "event_uri", "serve_stdio"]

ICON = types.Icon(
    src="data:image/svg+xml;base64," + base64.b64encode(files(__package__).joinpath("icon.svg").read_bytes()).decode(),
    mime_type="image/svg+xml",
    sizes=["any"],
)


class StaticTokenVerifier:
    """Accepts exactly the configured STRIPE_INBOX_MCP_TOKEN, compared in constant time; it carries every scope."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id="stripe-inbox", scopes=list(SCOPES))
        return None


class InboxServer(MCPServer):
    """An MCPServer over one inbox; the runtime with its `face_loops()` (`running()`, or the web app's lifespan)
    must run while it serves clients."""

    def __init__(
        self, inbox: Inbox, metrics: Metrics | None = None, channel: bool = False, stdio: bool = False
    ) -> None:
        """`stdio`: served over stdio, where MCP Events webhooks are refused (-32014)."""
        self.inbox = inbox
        self.notifier = ChangeNotifier()
        presenter = Presenter(inbox.settings.redact, inbox.triage)
        boundary = Boundary(presenter)
        tools = inbox_tools(inbox, boundary)
        middleware: list[ServerMiddleware[Any]] = [
            _lean_identity_stamp,
            require_scopes(tools),
            LegacySubscriptions(self.notifier),
        ]
        # Plain http callbacks to loopback stay off unless `serve` says it listens on loopback alone.
        self.webhooks = WebhookMethods(inbox, stdio=stdio)
        self.events = EventMethods(inbox, stdio=stdio)
        middleware += [self.webhooks, self.events]
        # Pushed into a Claude Code session only when asked for: a client that does not know the channel
        # capability is never sent its notifications.
        self.channel = ClaudeChannel(inbox, inbox.settings.push, presenter) if channel else None
        if self.channel is not None:
            middleware.append(self.channel)
        if metrics is not None:
            middleware.insert(0, _count_tool_calls(metrics))
        token = inbox.settings.mcp_token
        guard = protection(inbox.settings, inbox.store, StaticTokenVerifier(token) if token else None)
        # With public_url, `serve` is also the authorization server; web/oauth.py serves its routes.
        self.auth_provider: InboxAuthProvider | None = guard.provider if guard else None
        super().__init__(
            "stripe-inbox",
            title="Stripe event inbox",
            instructions=inbox.settings.policy.instructions,
            icons=[ICON],
            tools=tools,
            subscriptions=self.notifier.bus,
            middleware=middleware,
            token_verifier=guard.verifier if guard else None,
            auth=guard.settings if guard else None,
        )
        register_resources(self, inbox, boundary)
        register_prompts(self, inbox, boundary)

    def face_loops(self) -> dict[str, Loop]:
        """This server's own background loops, for the runtime: tell subscribed clients which resources changed,
        and push into a Claude Code session when asked."""

        async def publish() -> None:
            async for changed in self.inbox.changes():
                await self.notifier.updated(PENDING_URI, STATS_URI, *map(event_uri, sorted(changed)))

        loops: dict[str, Loop] = {"subscriptions": publish}
        if self.channel is not None:
            loops["channel"] = self.channel.run
        return loops

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The runtime with this server's loops, for a server in-process: the inbox's changes reach subscribed
        clients, the outbox and the forwards are delivered, the search index kept. Upkeep is `serve`'s."""
        async with Runtime(self.inbox, self.face_loops(), upkeep=False).running():
            yield


def create_mcp_server(inbox: Inbox, metrics: Metrics | None = None) -> InboxServer:
    return InboxServer(inbox, metrics)


async def serve_stdio(inbox: Inbox, channel: bool = False) -> None:
    """`stripe-inbox mcp`: the server over stdio, with the runtime's loops but no upkeep (that is `serve`'s)."""
    server = InboxServer(inbox, channel=channel, stdio=True)
    async with Runtime(inbox, server.face_loops(), upkeep=False).running():
        await server.run_stdio_async()


def _count_tool_calls(metrics: Metrics) -> ServerMiddleware[Any]:
    async def middleware(ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method == "tools/call" and ctx.params:
            # What call_next returns is the wire form, a dict; a middleware further in may return a model.
            failed = result.get("isError") if isinstance(result, dict) else getattr(result, "is_error", False)
            metrics.record_tool_call(str(ctx.params.get("name")), bool(failed))
        return result

    return middleware


async def _lean_identity_stamp(ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
    """In the 2026-07-28 era the SDK stamps every result's `_meta` with the server's whole identity, its icon's
    data URI included: some 700 bytes on each tool call. A client reads the icon from `server/discover`, which
    keeps the whole stamp; every other result names the server without it."""
    result = await call_next(ctx)
    meta = result.get("_meta") if isinstance(result, dict) else None
    stamp = meta.get(SERVER_INFO_META_KEY) if isinstance(meta, dict) else None
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and ctx.method != "server/discover" and isinstance(stamp, dict):
        result["_meta"] = {**meta, SERVER_INFO_META_KEY: {key: value for key, value in stamp.items() if key != "icons"}}
    return result
