"""Search in SQL: full text as a WHERE clause (every other filter carries its own clause in filters.py), and the
search index the background indexer keeps: what it writes for a batch of queued events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..filters import EventQuery
from ..indexing import Findable
from .connector import Connector, Dialect, Transaction

SEARCH_COUNT_CAP = 10_000  # a search counts its matches up to here: the count of a broad one would cost a scan
# A full-text search counts up to here: PostgreSQL reads a heap page for each match it counts (its bitmap scans
# never skip them), 9,000 pages and 67 ms warm for `insufficient funds` at 1M under the cap above.
TEXT_COUNT_CAP = 1_000

# Reading a match through the full-text index costs about as much as testing this many rows of a walk in seq order.
RANDOM_READ_COST = 8
WALK_MARGIN = 4  # a walk reads this many times the rows its page is expected to take, then gives way to the index


def count_cap(query: EventQuery) -> int:
    """How far a search counts its matches."""
    return TEXT_COUNT_CAP if query.words else SEARCH_COUNT_CAP


def search_where(query: EventQuery, dialect: Dialect, scan: bool = False) -> tuple[list[str], list[Any]]:
    """The clause and parameter of `query`'s full text; with `scan`, as the test of each row of a walk in seq order
    (see text_walk)."""
    where: list[str] = []
    parameters: list[Any] = []
    if query.words:
        where.append(dialect.text_scan if scan and dialect.text_scan else dialect.text_match)
        parameters.append(dialect.text_query(query.words))
    return where, parameters


@dataclass(frozen=True, slots=True)
class Walk:
    """The seqs a full-text walk reads, from the cursor on, in the page's order."""

    low: int
    high: int
    whole: bool  # every event on the walk's side of the cursor is between low and high


async def text_walk(db: Connector, query: EventQuery, matches: int | None) -> Walk | None:
    """Where a full-text page is cheaper to read by walking the events in seq order, testing each one's terms,
    than through the index, which yields every match, each read at random, to be sorted for the page: the seqs
    to walk, or None. A walk expects to read events / matches rows for each one of the page, so a broad search
    meets its page at once; it reads WALK_MARGIN times that at most, since matches may lie elsewhere (a
    customer's events all a year old), and then the index finds the page."""
    if not query.words or db.dialect.text_scan is None or not matches:
        return None
    first, last = (await db.fetch("SELECT min(seq), max(seq) FROM events"))[0]
    if first is None:
        return None
    span = last - first + 1
    # A count that reached its cap is broad whatever the span: through the index, every match would be sorted.
    if matches <= TEXT_COUNT_CAP and matches * matches * RANDOM_READ_COST < span * query.limit:
        return None
    reach = WALK_MARGIN * span * query.limit // matches + query.limit
    if query.newest_first:
        high = last if query.after is None else query.after - 1
        return Walk(high - reach, high, high - reach <= first)
    low = first if query.after is None else query.after + 1
    return Walk(low, low + reach, low + reach >= last)


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
