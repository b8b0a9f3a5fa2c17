"""Which connector opens which database, by the scheme of its location: a new database registers its connector
here by name, and nothing else in the package learns of it. A location with no scheme is an SQLite path."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError
from .connector import Connector

Opener = Callable[[str, float], Awaitable[Connector]]  # (location, lock timeout in seconds) -> an open connector


@dataclass(frozen=True, slots=True)
class ConnectorEntry:
    module: str  # in this package, imported only when a location of its scheme is opened
    driver: str  # the module the connector needs installed
    extra: str  # the package extra that installs it


CONNECTORS: dict[str, ConnectorEntry] = {
    "": ConnectorEntry("sqlite", "aiosqlite", ""),
    "postgresql": ConnectorEntry("postgres", "asyncpg", "postgres"),
    "postgres": ConnectorEntry("postgres", "asyncpg", "postgres"),
}


def scheme(location: str) -> str:
    """The scheme of a database location: '' for a path (a Windows drive letter is no scheme)."""
    found = urlsplit(location).scheme if "://" in location else ""
    return found.lower()


def is_server_url(location: str) -> bool:
    """Whether the location names a database server (shared by replicas) rather than a file beside this process."""
    return scheme(location) != ""


def is_postgres_url(location: str) -> bool:
    return CONNECTORS.get(scheme(location)) == CONNECTORS["postgresql"]


async def open_connector(location: str, lock_timeout_seconds: float) -> Connector:
    """The connector registered for `location`'s scheme, open."""
    entry = CONNECTORS.get(scheme(location))
    if entry is None:
        known = ", ".join(f"{name}://" for name in sorted(CONNECTORS) if name)
        raise ConfigError(f"no inbox database speaks {scheme(location)}://: use an SQLite path or one of {known}")
    if importlib.util.find_spec(entry.driver) is None:
        raise ConfigError(
            f"a {scheme(location)}:// inbox needs the {entry.extra} extra: pip install 'stripe-inbox[{entry.extra}]'"
        )
    module = importlib.import_module(f"{__package__}.{entry.module}")
    opener: Opener = module.open_connector
    return await opener(location, lock_timeout_seconds)
