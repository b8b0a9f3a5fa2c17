"""The errors of webhook subscriptions, each with the JSON-RPC code DESIGN §9 fixes for it."""

from __future__ import annotations

from typing import Any

from ..errors import InboxError


class EventsError(InboxError):
    code = -32603
    data: dict[str, Any] | None = None


class UnknownSubscription(EventsError):
    """No such subscription, or not the caller's: the caller cannot tell which."""

    code = -32011


class Forbidden(EventsError):
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
