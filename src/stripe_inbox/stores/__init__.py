"""Where the inbox keeps its events: a store per area (events, outbox, approvals, forwards, OAuth, state), composed
into one Store over one connector; a connector per database, chosen by the location's scheme (connectors.py)."""

from __future__ import annotations

from ..filters import EventQuery
from .connectors import is_postgres_url, is_server_url, open_connector
from .interface import AddOutcome, Audit, Delivery, DeliveryKind, StoredEvent
from .store import Store

__all__ = [
    "AddOutcome",
    "Audit",
    "Delivery",
    "DeliveryKind",
    "EventQuery",
    "Store",
    "StoredEvent",
    "is_postgres_url",
    "is_server_url",
    "open_store",
]


async def open_store(db: str, lock_timeout_seconds: float = 5.0) -> Store:
    """The store for a database location: an SQLite path, or a postgresql:// URL."""
    return Store(await open_connector(db, lock_timeout_seconds))
