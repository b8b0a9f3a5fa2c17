"""Where the inbox keeps its events: one SQL store, over a connector for SQLite or for PostgreSQL (another
database is another connector)."""

from __future__ import annotations

import importlib.util

from ..errors import ConfigError
from .interface import AddOutcome, Audit, Delivery, DeliveryKind, EventQuery, StoredEvent
from .sql import SqlStore

Store = SqlStore  # what the inbox talks to, whichever database is under it

__all__ = [
    "AddOutcome",
    "Audit",
    "Delivery",
    "DeliveryKind",
    "EventQuery",
    "SqlStore",
    "Store",
    "StoredEvent",
    "is_postgres_url",
    "open_store",
]


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


async def open_store(db: str, lock_timeout_seconds: float = 5.0) -> Store:
    """The store for a database location: an SQLite path, or a postgresql:// URL."""
    if is_postgres_url(db):
        if importlib.util.find_spec("asyncpg") is None:
            raise ConfigError("a postgresql:// inbox needs the PostgreSQL extra: pip install 'stripe-inbox[postgres]'")
        from .postgres import PostgresConnector

        return SqlStore(await PostgresConnector.open(db, lock_timeout_seconds))
    from .sqlite import SQLiteConnector

    return SqlStore(await SQLiteConnector.open(db, lock_timeout_seconds))
