"""MCP Events' reading side (DESIGN §9): the `events` capability in both eras' handshakes, `events/list`,
`events/poll`, and `events/stream`, whose events and heartbeats ride the request's own stream (its SSE response
over HTTP, the pipe over stdio) until the client cancels it or goes away. A middleware, the SDK's public way to
answer methods MCPServer has no handler for (as LegacySubscriptions does); what is read comes from event_feed."""

from __future__ import annotations

import time
from typing import Any, Literal

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import Notification
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from ..auth.scopes import READ
from ..errors import InboxError, InvalidArgument
from ..event_feed import DELIVERY, MAX_EVENTS, Forbidden, code_of, definitions, read, selector
from ..inbox import Inbox

HANDSHAKES = ("initialize", "server/discover")
EVENT, HEARTBEAT = "notifications/events/event", "notifications/events/heartbeat"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
NEXT_POLL_MS = 5000  # what a poller is told to wait when nothing more is waiting
STDIO_DELIVERY = ("poll", "push")  # a webhook needs a principal and a callback only HTTP has


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class EventNotification(Notification[Loose, Literal["notifications/events/event"]]):
    method: Literal["notifications/events/event"] = EVENT


class HeartbeatNotification(Notification[Loose, Literal["notifications/events/heartbeat"]]):
    method: Literal["notifications/events/heartbeat"] = HEARTBEAT


class EventMethods:
    """The middleware; `stdio`: events/list offers poll and push only (webhooks are refused there: -32014)."""

    def __init__(self, inbox: Inbox, *, stdio: bool = False) -> None:
        self.inbox = inbox
        self.delivery = STDIO_DELIVERY if stdio else DELIVERY
        self.heartbeat_seconds = inbox.settings.event_stream_heartbeat_seconds
        self.methods = {"events/list": self._list, "events/poll": self._poll, "events/stream": self._stream}
        self.open_streams = 0  # events/stream requests being served now

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        method = self.methods.get(ctx.method)
        if method is None:
            result = await call_next(ctx)
            if ctx.method in HANDSHAKES and isinstance(result, dict):
                result.setdefault("capabilities", {})["events"] = {}
            return result
        token = get_access_token()
        params = dict(ctx.params or {})
        params.pop("_meta", None)
        try:
            if token is not None and READ not in token.scopes:
                raise Forbidden(f"insufficient_scope: {ctx.method} needs the {READ} scope")
            result = await method(ctx, params)
        except InboxError as error:
            raise mcp_error(error) from None
        if ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            result["resultType"] = "complete"
        return result

    async def _list(self, ctx: ServerRequestContext[Any], params: dict[str, Any]) -> dict[str, Any]:
        if params.get("cursor") is not None:
            raise InvalidArgument(f"events/list has one page; cursor {params['cursor']!r} is not one it returned")
        return {"events": definitions(self.delivery)}

    async def _poll(self, ctx: ServerRequestContext[Any], params: dict[str, Any]) -> dict[str, Any]:
        chosen = selector(params.get("name"), params.get("arguments"))
        max_events = MAX_EVENTS if params.get("maxEvents") is None else params["maxEvents"]
        batch = await read(self.inbox, chosen, params.get("cursor"), max_events, params.get("maxAgeMs"))
        return {
            "events": [occurrence.labelled() for occurrence in batch.events],
            "cursor": batch.cursor,
            "truncated": batch.truncated,
            "hasMore": batch.has_more,
            "nextPollMs": 0 if batch.has_more else NEXT_POLL_MS,
        }

    async def _stream(self, ctx: ServerRequestContext[Any], params: dict[str, Any]) -> dict[str, Any]:
        """Events as they are stored, each once and in order, and a heartbeat with the cursor after the first read
        (saying whether what came before was cut short) and whenever nothing was sent for `heartbeat_seconds`.
        Returns only when the client went away; a cancel ends it mid-wait."""
        chosen = selector(params.get("name"), params.get("arguments"))
        cursor, max_age = params.get("cursor"), params.get("maxAgeMs")
        meta = {SUBSCRIPTION_ID: ctx.request_id}
        if cursor is None:
            cursor = (await read(self.inbox, chosen, None, MAX_EVENTS, max_age)).cursor
        beat_due, truncated, last_sent = True, False, time.monotonic()
        self.open_streams += 1
        try:
            while True:
                changed = self.inbox.feed.changed  # taken before the read: a change after it wakes the wait
                batch = await read(self.inbox, chosen, cursor, MAX_EVENTS, max_age)
                max_age, truncated, cursor = None, truncated or batch.truncated, batch.cursor
                for occurrence in batch.events:
                    await self._send(ctx, EventNotification(params=Loose(**occurrence.labelled(meta))))
                    last_sent = time.monotonic()
                if beat_due or time.monotonic() - last_sent >= self.heartbeat_seconds:
                    if await _gone(ctx):
                        return {}
                    await self._beat(ctx, cursor, truncated, meta)
                    beat_due, truncated, last_sent = False, False, time.monotonic()
                if batch.events or batch.has_more:
                    continue
                with anyio.move_on_after(self.heartbeat_seconds - (time.monotonic() - last_sent)):
                    await changed.wait()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            return {}
        finally:
            self.open_streams -= 1

    async def _beat(self, ctx: ServerRequestContext[Any], cursor: str, truncated: bool, meta: dict[str, Any]) -> None:
        extra = {"truncated": True} if truncated else {}
        await self._send(ctx, HeartbeatNotification(params=Loose(cursor=cursor, **extra, _meta=meta)))

    @staticmethod
    async def _send(ctx: ServerRequestContext[Any], notification: Notification[Any, Any]) -> None:
        await ctx.session.send_notification(notification, related_request_id=ctx.request_id)  # type: ignore[arg-type]


async def _gone(ctx: ServerRequestContext[Any]) -> bool:
    """Whether the HTTP client that opened the stream went away. A 2025-era session keeps a request's handler
    running after its SSE response closed (the client could resume it), and what it sends then is dropped
    without an error; a 2026-07-28 request is cancelled with its connection."""
    return isinstance(ctx.request, Request) and await ctx.request.is_disconnected()


def mcp_error(error: InboxError) -> MCPError:
    """An MCP Events method's error as JSON-RPC answers it: the code event_feed/errors.py gives it, and its data."""
    return MCPError(code=code_of(error), message=str(error), data=getattr(error, "data", None))
