"""Search in SQL: the filters beyond status, type, customer and account as WHERE clauses, and the search index
the background indexer keeps: what it writes for a batch of queued events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..indexing import Findable
from .connector import Connector, Dialect, Transaction
from .interface import EventQuery

SEARCH_COUNT_CAP = 10_000  # a search counts its matches up to here: the count of a broad one would cost a scan
# Reading a match through the full-text index costs about as much as testing this many rows of a walk in seq order.
RANDOM_READ_COST = 8
KEYED = "seq IN (SELECT seq FROM event_keys WHERE key = ?)"


def search_where(query: EventQuery, dialect: Dialect, scan: bool = False) -> tuple[list[str], list[Any]]:
    """The clauses and parameters of `query`'s search filters; with `scan`, full text as the test of each row of
    a walk in seq order (see text_scan_pays)."""
    where: list[str] = []
    parameters: list[Any] = []
    if query.words:
        where.append(dialect.text_scan if scan and dialect.text_scan else dialect.text_match)
        parameters.append(dialect.text_query(query.words))
    for key in (query.object_id, query.email):
        if key is not None:
            where.append(KEYED)
            parameters.append(key)
    for clause, value in (
        ("currency = ?", query.currency),
        ("amount >= ?", query.amount_gte),
        ("amount <= ?", query.amount_lte),
        ("created >= ?", query.created_after),
        ("created < ?", query.created_before),
        ("livemode = ?", query.livemode),
    ):
        if value is not None:
            where.append(clause)
            parameters.append(value)
    return where, parameters


async def text_scan_pays(db: Connector, query: EventQuery, matches: int | None) -> bool:
    """Whether a full-text page is cheaper to read by walking the events in seq order, testing each one's terms,
    than through the index, which yields every match, each read at random, to be sorted for the page. The walk
    reads about events / matches rows for each one of the page: a broad search meets its page at once."""
    if not query.words or db.dialect.text_scan is None or matches is None:
        return False
    rows = await db.fetch("SELECT coalesce(max(seq) - min(seq), 0) FROM events")
    return matches * matches * RANDOM_READ_COST >= int(rows[0][0]) * query.limit


async def write_index(tx: Transaction, dialect: Dialect, found: Sequence[tuple[int, Findable]]) -> int:
    """Index the events of `found` that are still queued (another process may have indexed some meanwhile), in
    one transaction; returns how many."""
    marks = ", ".join("?" * len(found))
    dequeued = await tx.fetch(f"DELETE FROM search_queue WHERE seq IN ({marks}) RETURNING seq", *(s for s, _ in found))
    taken = {row[0] for row in dequeued}
    texts = [(seq, facts.text) for seq, facts in found if seq in taken and facts.text]
    keys = [(key, seq) for seq, facts in found if seq in taken for key in facts.keys]
    await tx.execute_many(dialect.text_insert, texts)
    await tx.execute_many("INSERT INTO event_keys (key, seq) VALUES (?, ?)", keys)
    return len(taken)
