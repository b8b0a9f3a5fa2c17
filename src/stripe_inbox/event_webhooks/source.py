"""What webhook delivery reads, in event_feed's terms: selectors, a subscription's starting cursor, and scans
whose rows each cursor's subscribers share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..event_feed import Entry, FeedCursor, Occurrence, Selector, assess, catalog, feed

if TYPE_CHECKING:
    from ..inbox import Inbox

__all__ = ["Occurrence", "Scan", "Selector", "assess", "scan", "selector", "start"]


@dataclass(frozen=True, slots=True)
class Scan:
    entries: list[Entry]
    cursor: str  # after every row scanned
    truncated: bool  # rows after the cursor scanned from are no longer kept
    start_cursor: str  # where reading really began: the cursor given, or just before the oldest row kept
    has_more: bool


def selector(name: Any, arguments: Any) -> Selector:
    if arguments is not None and not isinstance(arguments, dict):
        raise InvalidArgument("arguments must be an object")
    return catalog.selector(name, arguments)


async def start(inbox: Inbox, chosen: Selector, cursor: Any, max_age_ms: Any) -> tuple[str, bool]:
    """A new subscription's cursor, and whether events after the one given are no longer kept (or older than
    `max_age_ms`): it then resumes at the oldest kept. `cursor` None: from now."""
    if max_age_ms is not None and (isinstance(max_age_ms, bool) or not isinstance(max_age_ms, int) or max_age_ms < 0):
        raise InvalidArgument(f"maxAgeMs must be a whole number of milliseconds, 0 or more, not {max_age_ms!r}")
    if cursor is None:
        return (await feed.start(inbox, chosen.name)).encode(), False
    place = FeedCursor.decode(cursor, chosen.name)
    found = await feed.scan(inbox, place, 1, max_age_ms)
    if not found.truncated:
        return cursor, False
    return _before(found), True


async def scan(inbox: Inbox, name: str, cursor: str | None, limit: int) -> Scan:
    """The rows after `cursor` (None: from now), read once for every subscriber at that cursor."""
    place = await feed.start(inbox, name) if cursor is None else FeedCursor.decode(cursor, name)
    found = await feed.scan(inbox, place, limit)
    start_cursor = _before(found) if found.truncated else place.encode()
    return Scan(found.entries, found.cursor.encode(), found.truncated, start_cursor, found.has_more)


def _before(found: feed.Scan) -> str:
    """The cursor just before the first row a truncated scan found (after all it scanned when it found none)."""
    if not found.entries:
        return found.cursor.encode()
    return FeedCursor(found.cursor.name, _seq(found.entries[0]) - 1).encode()


def _seq(entry: Entry) -> int:
    stored = getattr(entry, "stored", None)
    return int(stored.seq if stored is not None else entry.seq)  # type: ignore[union-attr]
