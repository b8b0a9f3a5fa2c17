"""Group commit, the ingest path both connectors share: deliveries that arrive while a transaction is
being written share the next one, so one fsync makes many events durable, and each caller is answered
only after the commit that holds its events."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import StoreUnavailable
from ..events import IncomingEvent
from .interface import AddOutcome

INSERTED_COLUMNS = (  # in the order of insert_rows' rows
    "id, type, created, livemode, customer, account, object_id, amount, currency, payload, "
    "received_at, last_delivery_at, kind, related_object, object_status, deliveries"
)
Batch = Sequence[tuple[Sequence[IncomingEvent], float]]  # each caller's events and when they arrived
IngestItem = tuple[list[IncomingEvent], float, "asyncio.Future[list[AddOutcome]]"]  # ... and who waits
MAX_BATCH_EVENTS = 500  # 16 parameters each stays far below SQLite's limit of 32766


class IngestQueue(Protocol):
    """What group commit needs of its queue: queue.SimpleQueue (a thread) and asyncio.Queue both fit."""

    def empty(self) -> bool: ...
    def get_nowait(self) -> IngestItem | None: ...
    def put_nowait(self, item: IngestItem | None) -> None: ...


def take_batch(first: IngestItem, queue: IngestQueue) -> list[IngestItem]:
    """`first` and whatever else is queued, up to MAX_BATCH_EVENTS events; a None (closing) stays queued."""
    batch, size = [first], len(first[0])
    while size < MAX_BATCH_EVENTS and not queue.empty():
        if (more := queue.get_nowait()) is None:
            queue.put_nowait(None)
            break
        batch.append(more)
        size += len(more[0])
    return batch


def settle(batch: list[IngestItem], results: list[list[AddOutcome]] | Exception) -> None:
    """Answer each caller of a batch with its outcomes, or, when the commit failed, with StoreUnavailable
    (a 503 to Stripe, which retries): none is left hanging."""
    for index, (_, _, future) in enumerate(batch):
        if future.done():  # the caller went away; its events are stored all the same
            continue
        if isinstance(results, Exception):
            future.set_exception(StoreUnavailable(f"the inbox database cannot be written: {results}"))
        else:
            future.set_result(results[index])


def insert_rows(batch: Batch) -> list[tuple[Any, ...]]:
    """One row per distinct event, in id order (so concurrent writers lock rows in the same order), its
    last column the number of deliveries in this batch: one id may come twice, a retry racing the original."""
    first: dict[str, tuple[IncomingEvent, float]] = {}
    last: dict[str, float] = {}
    copies: Counter[str] = Counter()
    for events, received_at in batch:
        for event in events:
            first.setdefault(event.id, (event, received_at))
            last[event.id] = received_at
            copies[event.id] += 1
    return [_row(*first[event_id], last[event_id], copies[event_id]) for event_id in sorted(first)]


def answers(batch: Batch, returned: Sequence[Sequence[Any]]) -> list[list[AddOutcome]]:
    """Each caller's answers from the upsert's (id, deliveries) rows: the first copy of an id in the batch
    was stored when its row holds exactly this batch's copies of it; every other copy is a duplicate."""
    deliveries = {row[0]: row[1] for row in returned}
    copies = Counter(event.id for events, _ in batch for event in events)
    seen: set[str] = set()
    results = []
    for events, _ in batch:
        mine: list[AddOutcome] = []
        for event in events:
            first = event.id not in seen
            seen.add(event.id)
            mine.append("stored" if first and deliveries[event.id] == copies[event.id] else "duplicate")
        results.append(mine)
    return results


def _row(event: IncomingEvent, received_at: float, last_delivery_at: float, copies: int) -> tuple[Any, ...]:
    return (
        event.id,
        event.type,
        event.created,
        event.livemode,
        event.customer,
        event.account,
        event.object_id,
        event.amount,
        event.currency,
        event.payload,
        received_at,
        last_delivery_at,
        event.kind,
        None if event.related_object is None else json.dumps(event.related_object),
        event.object_status,
        copies,
    )
