"""The errors of MCP Events, however events are delivered (poll, stream, webhook), and the one table of their
JSON-RPC codes (the README's "MCP Events" lists them): each error carries its own, an InvalidArgument or NotFound
is invalid params, anything else internal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import InboxError, InvalidArgument, NotFound

INVALID_PARAMS = -32602
INTERNAL = -32603


class EventsError(InboxError):
    code = INTERNAL
    data: dict[str, Any] | None = None


class UnknownEventType(EventsError):
    """An event type this server does not offer."""

    code = -32011

    def __init__(self, name: Any, offered: Iterable[str]) -> None:
        super().__init__(f"no event type {name!r}: this server offers {', '.join(offered)} (events/list)")


class UnknownSubscription(EventsError):
    """No such subscription, or not the caller's: the caller cannot tell which."""

    code = -32011


class Forbidden(EventsError):
    """No principal, or one without the scope; also what a callback is told when its subscription ends."""

    code = -32012


class SubscriptionLimit(EventsError):
    code = -32013


class UnsupportedDelivery(EventsError):
    code = -32014


class CallbackRejected(EventsError):
    code = -32015

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.data = {"reason": reason}


def code_of(error: InboxError) -> int:
    """The JSON-RPC code an MCP Events method answers `error` with."""
    if isinstance(error, EventsError):
        return error.code
    return INVALID_PARAMS if isinstance(error, InvalidArgument | NotFound) else INTERNAL
