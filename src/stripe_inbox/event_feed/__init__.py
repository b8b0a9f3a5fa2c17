"""MCP Events' domain, free of MCP: the event types offered (catalog), a subscriber's checked choice (selectors),
cursors into the inbox's durable order (cursor) and reading from them (feed). The MCP face and the webhook
delivery loop both stand on it."""

from .catalog import CATALOG, DELIVERY, EventType, definitions, event_type, selector
from .cursor import FeedCursor
from .entries import EVENT_LABEL, INBOX_ALERT, STRIPE_EVENT, AlertEntry, Occurrence, StripeEntry
from .errors import (
    CallbackRejected,
    EventsError,
    Forbidden,
    SubscriptionLimit,
    UnknownEventType,
    UnknownSubscription,
    UnsupportedDelivery,
    code_of,
)
from .feed import MAX_EVENTS, Batch, Scan, assess, read, scan, start
from .selectors import AlertSelector, Entry, Selector, StripeEventSelector

__all__ = [
    "CATALOG",
    "DELIVERY",
    "EVENT_LABEL",
    "INBOX_ALERT",
    "MAX_EVENTS",
    "STRIPE_EVENT",
    "AlertEntry",
    "AlertSelector",
    "Batch",
    "CallbackRejected",
    "Entry",
    "EventType",
    "EventsError",
    "FeedCursor",
    "Forbidden",
    "Occurrence",
    "Scan",
    "Selector",
    "StripeEntry",
    "StripeEventSelector",
    "SubscriptionLimit",
    "UnknownEventType",
    "UnknownSubscription",
    "UnsupportedDelivery",
    "assess",
    "code_of",
    "definitions",
    "event_type",
    "read",
    "scan",
    "selector",
    "start",
]
