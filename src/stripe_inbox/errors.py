"""Every error stripe-inbox raises on purpose; only adapters turn them into HTTP codes or tool errors."""

from __future__ import annotations


class InboxError(Exception):
    """Root of every anticipated stripe-inbox failure; the message is safe to show a user."""


class ConfigError(InboxError):
    """A setting is missing or malformed; the message names the key, never a secret's value."""


class DeliveryRejected(InboxError):
    """A webhook delivery that must not be stored; `code` is the public error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(InboxError):
    """The store could not complete a read or a durable write (locked, full, unreachable)."""


class NotFound(InboxError):
    """An event, or something else asked for by id, is not in the inbox."""

    @classmethod
    def event(cls, event_id: str) -> NotFound:
        return cls(f"no event {event_id!r} in the inbox")


class Claimed(InboxError):
    """Another agent holds a live claim on the event."""

    @classmethod
    def by_another(cls, event_id: str, holder: str, until: str) -> Claimed:
        return cls(
            f"event {event_id!r} is claimed by agent {holder!r} until {until}: pass agent={holder!r} if that "
            "is you; otherwise leave it (claim_events hands out events no one else holds)"
        )


class InvalidArgument(InboxError):
    """An argument from a tool call or command line is out of its domain."""


class DeliveryFailed(InboxError):
    """A channel or tracker did not take a message; `permanent` when retrying cannot help."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.permanent = permanent
