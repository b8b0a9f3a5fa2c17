"""Seeding a large PostgreSQL inbox for the search bench in minutes rather than the indexer's three quarters of an
hour: the events queued for the search index are indexed by the indexer's own functions (`findables` reads what
search knows of each payload, `SearchIndexStore.index` writes the terms and keys and dequeues), in large batches,
with the full-text GIN index dropped meanwhile and built once at the end from its own stored definition. Only the
GIN's upkeep per batch is skipped: what is indexed is exactly what `serve`'s indexer would write."""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from stripe_inbox.inbox import Inbox
from stripe_inbox.indexing import findables

BULK_BATCH = 5_000  # events read, extracted and written per round (a round's IN list stays under 32k parameters)
FULL_TEXT_INDEX = "event_search_terms"


async def bulk_index(inbox: Inbox) -> int:
    """Index every queued event of a PostgreSQL inbox in bulk; how many."""
    db = inbox.store.db  # type: ignore[attr-defined]
    backlog = await inbox.store.unindexed()
    if backlog == 0:
        return 0
    (definition,) = await db.fetch(
        "SELECT pg_get_indexdef(c.oid) FROM pg_class c "
        "WHERE c.relname = ? AND c.relnamespace = current_schema()::regnamespace",
        FULL_TEXT_INDEX,
    )
    async with db.transaction() as tx:
        await tx.execute(f"DROP INDEX {FULL_TEXT_INDEX}")
    try:
        return await _index_queued(inbox, backlog)
    finally:  # built again even when interrupted, so a kept schema is never left without it
        async with db.transaction() as tx:
            await tx.execute("SET LOCAL maintenance_work_mem = '256MB'")
            await tx.execute(definition[0])


async def _index_queued(inbox: Inbox, backlog: int) -> int:
    started, done = time.perf_counter(), 0
    prefixed = inbox.store.db.dialect.text_prefixes  # type: ignore[attr-defined]
    with ProcessPoolExecutor(max_workers=1) as pool:  # the next batch is extracted while this one is written
        queued = await inbox.store.queued_for_index(BULK_BATCH)
        extracting = pool.submit(findables, queued, prefixed) if queued else None
        while extracting is not None:
            found = await asyncio.wrap_future(extracting)
            following = await inbox.store.queued_for_index(BULK_BATCH, found[-1][0])
            extracting = pool.submit(findables, following, prefixed) if following else None
            done += await inbox.store.index(found)
            if done // 100_000 > (done - len(found)) // 100_000:
                rate = done / (time.perf_counter() - started)
                print(f"  indexed {done:,} of {backlog:,} events ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return done
