"""What MCP Events reads of the store: the events and the incident log in the order they were stored (their
seq), from a position on, and what tells a reader it may have missed some (what pruning deleted)."""

from __future__ import annotations

from typing import Any, Literal

from .area import AreaStore
from .events import PRUNED_KEY
from .rows import EVENT_COLUMNS, stored_event

FeedTable = Literal["events", "incident_log"]
# Each table a feed reads: its columns, and the column saying when its row was written.
COLUMNS: dict[FeedTable, str] = {"events": EVENT_COLUMNS, "incident_log": "seq, name, state, detail, at"}
WRITTEN_AT: dict[FeedTable, str] = {"events": "received_at", "incident_log": "at"}
# received_at follows seq only roughly (replicas' clocks, group commits): the first row written since a time is
# looked for among this many.
FIRST_SINCE_SLACK = 100


class FeedStore(AreaStore):
    async def feed_head(self, table: FeedTable) -> int:
        """The highest seq in `table` now (0 when empty)."""
        (row,) = await self.db.fetch(f"SELECT coalesce(max(seq), 0) FROM {table}")
        return int(row[0])

    async def feed_seqs(self, table: FeedTable, after: int) -> list[int]:
        """The seqs in `table` above `after`, in order (no payloads: the index alone answers)."""
        rows = await self.db.fetch(f"SELECT seq FROM {table} WHERE seq > ? ORDER BY seq", after)
        return [int(row[0]) for row in rows]

    async def feed_rows(self, table: FeedTable, after: int, limit: int) -> list[Any]:
        """Up to `limit` rows of `table` above seq `after`, in seq order: StoredEvents for the events, else
        (seq, name, state, detail, at) tuples."""
        rows = await self.db.fetch(
            f"SELECT {COLUMNS[table]} FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?", after, limit
        )
        if table == "events":
            return [stored_event(row) for row in rows]
        return [tuple(row) for row in rows]

    async def feed_first_since(self, table: FeedTable, written_since: float) -> int | None:
        """About the lowest seq of a row of `table` written since `written_since` (epoch seconds), None if none."""
        column = WRITTEN_AT[table]
        (row,) = await self.db.fetch(
            f"SELECT min(seq) FROM (SELECT seq FROM {table} WHERE {column} >= ? ORDER BY {column} LIMIT ?) AS first",
            written_since,
            FIRST_SINCE_SLACK,
        )
        return None if row[0] is None else int(row[0])

    async def feed_any_between(self, table: FeedTable, after: int, before: int) -> bool:
        """Whether `table` holds a row with a seq strictly between `after` and `before`."""
        rows = await self.db.fetch(f"SELECT 1 FROM {table} WHERE seq > ? AND seq < ? LIMIT 1", after, before)
        return bool(rows)

    async def pruned_through(self) -> int:
        """The highest seq of an event that pruning (retention) deleted; 0 if none ever was."""
        rows = await self.db.fetch("SELECT value FROM state WHERE key = ?", PRUNED_KEY)
        return int(rows[0][0]) if rows else 0
