"""The two scopes a token can carry, and which one each tool needs: a tool that only reads (its annotations say
`readOnlyHint`) needs `inbox:read`, any other `inbox:write`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mcp.types as types
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver.tools import Tool

READ = "inbox:read"
WRITE = "inbox:write"
SCOPES = (READ, WRITE)
DESCRIPTIONS = {
    READ: "read the inbox: list, read and search events, timelines, waits and stats",
    WRITE: "change the inbox: acknowledge, claim and classify events, open tickets, send notifications, backfill",
}


def required_scope(annotations: types.ToolAnnotations | None) -> str:
    """A tool nobody declared read-only (or one the server does not have) changes something."""
    return READ if annotations is not None and annotations.read_only_hint else WRITE


def granted(requested: list[str]) -> list[str]:
    """What a consent grants: the scopes asked for, in their usual order, and always `inbox:read`, without which
    an agent could not even see what it is to change."""
    return [scope for scope in SCOPES if scope == READ or scope in requested]


def require_scopes(tools: Iterable[Tool]) -> ServerMiddleware[Any]:
    """A server middleware: a call to one of `tools` whose token lacks the tool's scope is refused as
    `insufficient_scope`. Without a token (stdio, or loopback without one) nothing is checked; the static access
    token has both."""
    needs = {tool.name: required_scope(tool.annotations) for tool in tools}

    async def middleware(ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        token = get_access_token()
        if token is None or ctx.method != "tools/call" or not ctx.params:
            return await call_next(ctx)
        tool = str(ctx.params.get("name"))
        needed = needs.get(tool, WRITE)
        if needed in token.scopes:
            return await call_next(ctx)
        has = " ".join(token.scopes) or "no scope"
        message = f"insufficient_scope: {tool} needs the {needed} scope; this client was granted {has}"
        return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)

    return middleware
