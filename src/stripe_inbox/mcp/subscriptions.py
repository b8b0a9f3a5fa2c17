"""Telling subscribed clients that a resource changed, in both protocol eras."""

from __future__ import annotations

from collections.abc import Callable
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


class ChangeNotifier:
    """Tells subscribed clients a resource changed: `subscriptions/listen` streams (2026-07-28) through
    the SDK's bus, and `resources/subscribe` sessions (the 2025 handshake era) directly."""

    def __init__(self) -> None:
        self.bus = ListenedBus()
        self._legacy: dict[ServerSession, set[str]] = {}

    async def subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        self._legacy.setdefault(ctx.session, set()).add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self._legacy.get(ctx.session, set()).discard(str(params.uri))
        return types.EmptyResult()

    async def updated(self, *uris: str) -> None:
        if self.bus.listened:
            for uri in uris:
                await self.bus.publish(ResourceUpdated(uri=uri))
        for session, subscribed in list(self._legacy.items()):
            for uri in [uri for uri in uris if uri in subscribed]:  # in the order given: the queue first
                try:
                    await session.send_resource_updated(uri)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._legacy.pop(session, None)
                    break


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
