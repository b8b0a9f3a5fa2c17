"""MCP Events' domain, free of MCP: the event types offered (catalog), a subscriber's checked choice (selectors),
cursors into the inbox's durable order (cursor) and reading from them (feed). The MCP face and the webhook
delivery loop both stand on it."""

from .catalog import CATALOG, DELIVERY, EventType, UnknownEventType, definitions, event_type, selector
from .cursor import FeedCursor
from .entries import INBOX_ALERT, STRIPE_EVENT, AlertEntry, Occurrence, StripeEntry
from .feed import MAX_EVENTS, Batch, Scan, read, scan, start
from .selectors import AlertSelector, Entry, Selector, StripeEventSelector

__all__ = [
    "CATALOG",
    "DELIVERY",
    "INBOX_ALERT",
    "MAX_EVENTS",
    "STRIPE_EVENT",
    "AlertEntry",
    "AlertSelector",
    "Batch",
    "Entry",
    "EventType",
    "FeedCursor",
    "Occurrence",
    "Scan",
    "Selector",
    "StripeEntry",
    "StripeEventSelector",
    "UnknownEventType",
    "definitions",
    "event_type",
    "read",
    "scan",
    "selector",
    "start",
]
