"""Telling subscribed clients that a resource changed, in both protocol eras."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp.types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError


class ListenedBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, knowing whether anyone listens: under load with no `subscriptions/listen`
    stream open, a burst of changed events costs nothing to announce."""

    def __init__(self) -> None:
        super().__init__()
        self._live: set[object] = set()

    @property
    def listened(self) -> bool:
        return bool(self._live)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        self._live.add(token)
        unsubscribe = super().subscribe(listener)

        def done() -> None:
            self._live.discard(token)
            unsubscribe()

        return done


@dataclass
class LegacySubscriber:
    """One handshake-era connection's subscriptions. Any request's session of that connection will do to tell
    it: each sends on the connection's own stream (its GET stream over HTTP, the pipe over stdio)."""

    session: ServerSession
    identity: object  # held, so that no other object takes its id (the key) while this lives
    uris: set[str] = field(default_factory=set)


class ChangeNotifier:
    """Tells subscribed clients a resource changed: `subscriptions/listen` streams (2026-07-28) through
    the SDK's bus, and `resources/subscribe` connections (the 2025 handshake era) directly."""

    def __init__(self) -> None:
        self.bus = ListenedBus()
        self._legacy: dict[int, LegacySubscriber] = {}

    async def subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        identity = connection_identity(ctx)
        subscriber = self._legacy.setdefault(id(identity), LegacySubscriber(ctx.session, identity))
        subscriber.uris.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        key = id(connection_identity(ctx))
        subscriber = self._legacy.get(key)
        if subscriber is not None:
            subscriber.uris.discard(str(params.uri))
            if not subscriber.uris:
                del self._legacy[key]
        return types.EmptyResult()

    async def updated(self, *uris: str) -> None:
        if self.bus.listened:
            for uri in uris:
                await self.bus.publish(ResourceUpdated(uri=uri))
        for key, subscriber in list(self._legacy.items()):
            for uri in [uri for uri in uris if uri in subscriber.uris]:  # in the order given: the queue first
                try:
                    await subscriber.session.send_resource_updated(uri)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._legacy.pop(key, None)
                    break


def connection_identity(ctx: ServerRequestContext[Any]) -> object:
    """An object that stays the same across one client connection's requests, to key its subscriptions by
    identity. The SDK builds a ServerSession per request, so the session cannot be it; the `initialize`
    parameters the connection recorded at its handshake are one object for its whole life, over stdio and over a
    Streamable HTTP session alike."""
    return ctx.session.client_params or ctx.session


class LegacySubscriptions:
    """Serves `resources/subscribe` and `resources/unsubscribe` to handshake-era sessions and offers them in
    the handshake. MCPServer 2.3 takes no handler for these two verbs (the SDK's migration guide: "Registering
    lowlevel handlers from MCPServer"); a middleware, which may answer a message itself, is its public way in."""

    def __init__(self, notifier: ChangeNotifier) -> None:
        self.verbs = {
            "resources/subscribe": (types.SubscribeRequestParams, notifier.subscribe),
            "resources/unsubscribe": (types.UnsubscribeRequestParams, notifier.unsubscribe),
        }

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        verb = self.verbs.get(ctx.method)
        if verb is not None and ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            params_type, handler = verb
            try:
                params = params_type.model_validate(ctx.params or {}, by_name=False)
            except ValidationError:
                raise MCPError(code=types.INVALID_PARAMS, message=f"{ctx.method} needs a resource uri") from None
            return await handler(ctx, params)  # type: ignore[arg-type]
        result = await call_next(ctx)
        if ctx.method == "initialize" and isinstance(result, dict):
            resources = result.get("capabilities", {}).get("resources")
            if resources is not None:
                resources["subscribe"] = True
        return result
