"""Whose claim is it: the agent name an MCP caller gives, bound to the OAuth client its token was issued to, so
that one client can neither ack nor take over another client's claims by using the same name."""

from __future__ import annotations

from mcp.server.auth.middleware.auth_context import get_access_token

from .tokens import InboxAccessToken

SEPARATOR = "/"


def bound_agent(agent: str | None) -> str | None:
    """`agent` as the inbox knows it: `<client_id>/<agent>` for a caller with an OAuth token (just `<client_id>`
    when it gives no name), else `agent` as given (stdio, loopback, the operator's static token)."""
    token = get_access_token()
    if not isinstance(token, InboxAccessToken):
        return agent
    prefix = token.client_id + SEPARATOR
    if not agent:
        return token.client_id
    return agent if agent.startswith(prefix) else prefix + agent
