"""The search index's queue: what the background indexer reads and writes."""

from __future__ import annotations

from collections.abc import Sequence

from ..indexing import Findable
from .area import AreaStore
from .search import write_index


class SearchIndexStore(AreaStore):
    async def unindexed(self, at_most: int | None = None) -> int:
        """How many stored events the search index does not hold yet (counted up to `at_most`)."""
        if at_most is None:
            rows = await self.db.fetch("SELECT count(*) FROM search_queue")
        else:
            rows = await self.db.fetch("SELECT count(*) FROM (SELECT 1 FROM search_queue LIMIT ?) AS queued", at_most)
        return int(rows[0][0])

    async def oldest_unindexed_at(self) -> float | None:
        """When the event that has waited longest for the search index arrived."""
        rows = await self.db.fetch(
            "SELECT e.received_at FROM search_queue q JOIN events e ON e.seq = q.seq ORDER BY q.seq LIMIT 1"
        )
        return float(rows[0][0]) if rows else None

    async def queued_for_index(self, limit: int, after: int = 0) -> list[tuple[int, bytes]]:
        """Up to `limit` of the events queued for the search index past seq `after`, oldest first: their seqs and
        payloads. A long catch-up passes the last seq it took: the queue's index then starts there, instead of
        stepping over every entry it dequeued so far (dead until vacuumed), which slowed a 1M backlog twofold."""
        rows = await self.db.fetch(
            "SELECT q.seq, e.payload FROM search_queue q JOIN events e ON e.seq = q.seq WHERE q.seq > ? "
            "ORDER BY q.seq LIMIT ?",
            after,
            limit,
        )
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    async def index(self, found: Sequence[tuple[int, Findable]]) -> int:
        """Write what search knows of queued events, each by its seq, in one write; how many were still queued
        (another process may have indexed some meanwhile)."""
        if not found:
            return 0
        return await self.db.write_batched(lambda tx: write_index(tx, self.db.dialect, found))
