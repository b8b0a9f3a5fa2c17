"""Group commit, the write path both connectors share: what callers queue while a transaction is being written
shares the next one, so one fsync makes many writes durable, and each caller is answered only after the commit
that holds its write. What a batch writes is the store's (a BatchWrite); when, and in which transaction, the
connector's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from ..errors import StoreUnavailable

# Writes a batch of the callers' items in `tx` (a connector's Transaction); one answer per item, in order.
BatchWrite = Callable[[Any, Sequence[Any]], Coroutine[Any, Any, list[Any]]]
# What one caller queued: the batch's writer (None: only a wake-up), the item, its size, and who waits.
Queued = tuple[BatchWrite | None, Any, int, "asyncio.Future[Any]"]
MAX_BATCH_SIZE = 500  # events: 16 parameters each stays far below SQLite's limit of 32766


class IngestQueue(Protocol):
    """What group commit needs of its queue: queue.SimpleQueue (a thread) and asyncio.Queue both fit."""

    def empty(self) -> bool: ...
    def get_nowait(self) -> Queued | None: ...
    def put_nowait(self, item: Queued | None) -> None: ...


def take_batch(first: Queued, queue: IngestQueue) -> list[Queued]:
    """`first` and whatever else is queued, up to MAX_BATCH_SIZE; a None (closing) stays queued."""
    batch, size = [first], first[2]
    while size < MAX_BATCH_SIZE and not queue.empty():
        if (more := queue.get_nowait()) is None:
            queue.put_nowait(None)
            break
        batch.append(more)
        size += more[2]
    return batch


def written(batch: list[Queued]) -> tuple[BatchWrite | None, list[Queued]]:
    """The batch's writer and the items it writes (wake-ups left out). One store queues with one writer."""
    items = [queued for queued in batch if queued[0] is not None]
    return (items[0][0] if items else None), items


def settle(batch: list[Queued], results: Sequence[Any] | Exception) -> None:
    """Answer each caller of a batch with its answer, or, when the commit failed, with StoreUnavailable (a 503 to
    Stripe, which retries): none is left hanging."""
    for index, (_, _, _, future) in enumerate(batch):
        if future.done():  # the caller went away; its write is committed all the same
            continue
        if isinstance(results, Exception):
            future.set_exception(StoreUnavailable(f"the inbox database cannot be written: {results}"))
        else:
            future.set_result(results[index])
