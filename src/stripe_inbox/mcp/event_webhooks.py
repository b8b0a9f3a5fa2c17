"""`events/subscribe` and `events/unsubscribe` (MCP Events webhook delivery, DESIGN §9): a middleware, the SDK's
public way to answer methods MCPServer has no handler for. The caller's principal is its OAuth client (or
`operator` for the static access token); the errors carry the codes §9 fixes, -32015's with `data.reason`."""

from __future__ import annotations

from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from ..auth.scopes import READ
from ..auth.tokens import InboxAccessToken
from ..errors import InboxError
from ..event_feed import Forbidden, UnsupportedDelivery
from ..event_webhooks.subscriptions import OPERATOR, WebhookSubscriptions
from ..inbox import Inbox
from .events import mcp_error

SUBSCRIBE, UNSUBSCRIBE = "events/subscribe", "events/unsubscribe"


def principal() -> str | None:
    """Who calls: the OAuth client its token was issued to, `operator` for the static access token, None without
    a token (stdio, or loopback with no access token set)."""
    token = get_access_token()
    if token is None:
        return None
    if READ not in token.scopes:
        raise Forbidden(f"webhook subscriptions need the {READ} scope")
    return token.client_id if isinstance(token, InboxAccessToken) else OPERATOR


class WebhookMethods:
    """The middleware answering events/subscribe and events/unsubscribe; `stdio`: webhooks are refused (-32014)."""

    def __init__(self, inbox: Inbox, *, stdio: bool = False, loopback_http: bool = False) -> None:
        self.stdio = stdio
        self.subscriptions = WebhookSubscriptions(inbox, loopback_http=loopback_http)

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        if ctx.method not in (SUBSCRIBE, UNSUBSCRIBE):
            return await call_next(ctx)
        params = dict(ctx.params or {})
        params.pop("_meta", None)
        try:
            if self.stdio:
                raise UnsupportedDelivery("no webhook delivery over stdio: use events/poll or events/stream")
            if ctx.method == SUBSCRIBE:
                result = (await self.subscriptions.subscribe(principal(), params)).wire()
            else:
                await self.subscriptions.unsubscribe(principal(), params)
                result = {}
        except InboxError as error:
            raise mcp_error(error) from None
        if ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            result["resultType"] = "complete"
        return result
