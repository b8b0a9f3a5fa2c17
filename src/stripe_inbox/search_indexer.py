"""The search indexer: keeps the search index within a bounded lag of the inbox, off the path to the 200. A new
event is only queued by its insert; each process that serves indexes what is queued, in batches, within
INDEX_SECONDS; searches and timelines say how many events are not indexed yet. Several processes may run it on
one inbox: each queued event is indexed once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from .errors import StoreUnavailable

if TYPE_CHECKING:
    from .stores import Store

log = logging.getLogger("stripe_inbox")
INDEX_BATCH = 500  # events indexed per write
INDEX_SECONDS = 0.5  # the lag of a quiet inbox's search index, and how often a busy one's catches up
PROGRESS_FROM = 20_000  # a backlog this large (an upgrade, a backfill) is indexed with progress in the log
PROGRESS_STEPS = 10


class SearchIndexer:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def run(self) -> None:
        while True:
            try:
                await self.catch_up()
            except StoreUnavailable as error:
                log.warning("search index: %s; retrying", error)
            await anyio.sleep(INDEX_SECONDS)

    async def catch_up(self) -> int:
        """Index every event queued now (and whatever arrives meanwhile); how many."""
        backlog = await self.store.unindexed()
        announced = backlog >= PROGRESS_FROM
        if announced:
            log.info("indexing %s stored events for search", f"{backlog:,}")
        done, step = 0, max(backlog // PROGRESS_STEPS, 1)
        while indexed := await self.store.index_queued(INDEX_BATCH):
            if announced and (done + indexed) // step > done // step:
                log.info("indexed %s of %s events", f"{min(done + indexed, backlog):,}", f"{backlog:,}")
            done += indexed
        return done
