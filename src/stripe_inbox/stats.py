"""The inbox's figures (`stripe://stats`, `get_stats`, /metrics): events by status and by type, the age of the
oldest pending one, and the outgoing actions and forwards by state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .models import STATUSES, Stats

if TYPE_CHECKING:
    from .stores import Store

FORWARD_STATES = ("queued", "sending", "sent", "failed")


async def tally(store: Store, now: float) -> Stats:
    """The figures as the store holds them at `now`."""
    by_status = dict.fromkeys(STATUSES, 0)
    by_type: dict[str, int] = {}
    for status, event_type, count in await store.counts():
        by_status[status] += count
        by_type[event_type] = by_type.get(event_type, 0) + count
    oldest_pending = await store.oldest_pending()
    forwards = dict.fromkeys(FORWARD_STATES, 0)
    for _, state, count in await store.forward_counts():
        forwards[state] += count
    return Stats(
        total=sum(by_status.values()),
        by_status=by_status,
        by_type=by_type,
        oldest_pending_age_seconds=None if oldest_pending is None else round(now - oldest_pending, 3),
        actions=await store.delivery_counts(),
        forwards=forwards,
        unindexed=await store.unindexed(),
        subscriptions=await store.subscription_counts(),
    )
