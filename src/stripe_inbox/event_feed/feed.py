"""Reading a feed from a cursor: the Stripe events in the order the inbox stored them, or the incident log.
`scan` reads the rows after a place ONCE, for any number of selectors to test in memory (a delivery loop serving
many subscribers), and `assess` triages only the entries they admit; `read` is one subscriber's poll. A cursor
older than what the inbox keeps (retention pruned events after it) or than `max_age_ms` reads on from the oldest
kept, `truncated`."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from ..inbox import Inbox
from ..presenter import Presenter
from ..stores import StoredEvent
from ..stores.feed import FeedTable
from .cursor import FeedCursor
from .entries import INBOX_ALERT, STRIPE_EVENT, AlertEntry, Occurrence, StripeEntry
from .selectors import Entry, Selector

TABLES: dict[str, FeedTable] = {STRIPE_EVENT: "events", INBOX_ALERT: "incident_log"}
CHUNK = 200  # rows a scan reads at once
SCAN_BUDGET = 5000  # rows one read looks through before it answers with what it found (has_more)
MAX_EVENTS = 100
# A new cursor ("from now") looks this far below the newest row for numbers not committed yet.
START_WINDOW = 1000


@dataclass(frozen=True, slots=True)
class Batch:
    events: list[Occurrence]
    cursor: str  # read on from here
    truncated: bool  # events after the cursor given were no longer kept, or older than max_age_ms
    has_more: bool  # more may be read at once


@dataclass(frozen=True, slots=True)
class Scan:
    entries: list[Entry]  # the rows not read before, in stored order, each with its own cursor; not assessed yet
    cursor: FeedCursor  # after every row scanned
    truncated: bool
    has_more: bool  # the scan stopped at its limit


async def start(inbox: Inbox, name: str) -> FeedCursor:
    """A cursor at the feed's end now: what is stored from now on (or commits late below it) is read next."""
    table, now = TABLES[name], time.time()
    head = await inbox.store.feed_head(table)
    low = max(head - START_WINDOW, 0)
    present = set(await inbox.store.feed_seqs(table, low))
    return FeedCursor(name, head, {seq: now for seq in range(low + 1, head) if seq not in present})


async def scan(
    inbox: Inbox, after: FeedCursor, limit: int = CHUNK, max_age_ms: int | None = None, now: float | None = None
) -> Scan:
    """The rows of `after`'s feed stored after it (up to `limit` read), each once."""
    now = time.time() if now is None else now
    cursor, table = after.copy(), TABLES[after.name]
    pruned = await inbox.store.pruned_through() if table == "events" else 0
    truncated = cursor.position < pruned
    cutoff = None if max_age_ms is None else now - max_age_ms / 1000
    if cutoff is not None:
        first = await inbox.store.feed_first_since(table, cutoff)
        skip_to = await inbox.store.feed_head(table) if first is None else first - 1
        if skip_to > cursor.read_after:
            truncated |= await inbox.store.feed_any_between(table, cursor.read_after, skip_to + 1)
            cursor.skip_to(skip_to)
    rows = await inbox.store.feed_rows(table, cursor.read_after, limit)
    fresh: list[tuple[Any, str]] = []
    for row in rows:
        if not cursor.take(_seq(row), now, settled=pruned):
            continue
        if cutoff is not None and _written_at(row) < cutoff:
            truncated = True
            continue
        fresh.append((row, cursor.encode()))
    has_more = len(rows) == limit
    cursor.expire(now, _seq(rows[-1]) if has_more else math.inf)
    if not has_more:
        cursor.position = max(cursor.position, pruned)
    return Scan(_entries(inbox, fresh), cursor, truncated, has_more)


async def assess(inbox: Inbox, entries: Iterable[Entry]) -> None:
    """Give the Stripe events among `entries` not assessed yet what resolved them and their triage, from one read."""
    waiting = [entry for entry in entries if isinstance(entry, StripeEntry) and entry.classification is None]
    if waiting:
        assessed = await inbox.assessed([entry.stored for entry in waiting])
        for entry, (summary, classification) in zip(waiting, assessed, strict=True):
            entry.assessed(summary, classification)


async def read(
    inbox: Inbox, selector: Selector, cursor: str | None, max_events: int = MAX_EVENTS, max_age_ms: int | None = None
) -> Batch:
    """One subscriber's next events after `cursor` (None: none yet, and a cursor from now on)."""
    if isinstance(max_events, bool) or not isinstance(max_events, int) or not 1 <= max_events <= MAX_EVENTS:
        raise InvalidArgument(f"maxEvents must be a whole number from 1 to {MAX_EVENTS}, not {max_events!r}")
    if max_age_ms is not None and (isinstance(max_age_ms, bool) or not isinstance(max_age_ms, int) or max_age_ms < 0):
        raise InvalidArgument(f"maxAgeMs must be a whole number of milliseconds, 0 or more, not {max_age_ms!r}")
    if cursor is None:
        return Batch([], (await start(inbox, selector.name)).encode(), truncated=False, has_more=False)
    place = FeedCursor.decode(cursor, selector.name)
    found: list[Occurrence] = []
    truncated, scanned = False, 0
    while True:
        step = await scan(inbox, place, CHUNK, max_age_ms if scanned == 0 else None)
        await assess(inbox, filter(selector.admits, step.entries))
        truncated |= step.truncated
        for index, entry in enumerate(step.entries):
            occurrence = selector.occurrence(entry)
            if occurrence is None:
                continue
            found.append(occurrence)
            if len(found) == max_events:
                rest = step.entries[index + 1 :]
                more = step.has_more or any(selector.matches(later) for later in rest)
                return Batch(found, occurrence.cursor, truncated, more)
        place, scanned = step.cursor, scanned + CHUNK
        if not step.has_more or scanned >= SCAN_BUDGET:
            return Batch(found, place.encode(), truncated, step.has_more)


def _entries(inbox: Inbox, fresh: list[tuple[Any, str]]) -> list[Entry]:
    if not fresh or not isinstance(fresh[0][0], StoredEvent):
        return [AlertEntry(row[0], row[1], row[2], row[3], row[4], cursor) for row, cursor in fresh]
    presenter = Presenter(inbox.settings.redact, inbox.triage)
    return [StripeEntry(row, cursor, presenter) for row, cursor in fresh]


def _seq(row: Any) -> int:
    return row.seq if isinstance(row, StoredEvent) else int(row[0])


def _written_at(row: Any) -> float:
    return row.received_at if isinstance(row, StoredEvent) else float(row[4])
