"""A catch-up reads the search queue past the last seq it took; what is queued behind it waits for the next round."""

from __future__ import annotations

import time
from typing import Any

import pytest

from stripe_inbox import search_indexer
from stripe_inbox.events import IncomingEvent
from stripe_inbox.search_indexer import SearchIndexer
from stripe_inbox.stores import EventQuery, Store

from .conftest import encode
from .test_search import made
from .test_store import db, store  # noqa: F401  # the database fixtures: SQLite and PostgreSQL

pytestmark = pytest.mark.anyio


async def test_an_event_queued_behind_a_catch_up_is_indexed_by_the_next_one(
    store: Store,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [made("invoice.paid", description=f"plan{n}") for n in range(6)]
    await store.add_events([IncomingEvent.parse(encode(event)) for event in events], time.time())
    monkeypatch.setattr(search_indexer, "INDEX_BATCH", 2)
    first_seq = (await store.queued_for_index(1))[0][0]
    index, rounds, dialect = store.index, [], store.db.dialect  # type: ignore[attr-defined]

    async def index_then_requeue_the_first(found: Any) -> int:
        indexed = await index(found)
        rounds.append(indexed)
        if len(rounds) == 2:  # as if the first event's commit came late, with a seq below where the round is
            async with store.db.transaction() as tx:  # type: ignore[attr-defined]
                await tx.execute(f"DELETE FROM event_search WHERE {dialect.text_seq} = ?", first_seq)
                await tx.execute("DELETE FROM event_keys WHERE seq = ?", first_seq)
                await tx.execute("INSERT INTO search_queue (seq) VALUES (?)", first_seq)
        return indexed

    monkeypatch.setattr(store, "index", index_then_requeue_the_first)
    assert await SearchIndexer(store).catch_up() == 6
    assert rounds == [2, 2, 2]  # three batches, none re-reading the queue from its start
    assert await store.unindexed() == 1
    plans = EventQuery(status=None, words=("plan",), limit=10)
    assert first_seq not in {event.seq for event in await store.list_events(plans)}
    assert await SearchIndexer(store).catch_up() == 1
    assert sorted(event.id for event in await store.list_events(plans)) == sorted(event["id"] for event in events)
