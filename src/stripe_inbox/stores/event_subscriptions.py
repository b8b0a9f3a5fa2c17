"""MCP Events webhook subscriptions in the SQL store: saved (and refreshed) by subscribe, ended by the client,
the operator or the delivery loop, and leased to one replica at a time, which alone delivers their events and moves
their cursors. Nothing here runs on the ingress's commit path: delivery reads the events table after each cursor."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from .area import AreaStore
from .changes import ChangeLog
from .connector import Connector
from .interface import Audit
from .journal import record_audit

SubscriptionState = Literal["active", "ended"]  # verified before it is saved: never half-made
COLUMNS = (
    "id, principal, name, arguments, callback, secret, cursor, generation, created_at, refresh_before, state, "
    "ended_reason, terminate_pending, attempts, next_attempt_at, last_delivery_at, last_error, failures, delivered, "
    "lease_owner, lease_until"
)
CURSOR_VALUES = "(CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS INTEGER))"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One webhook subscription as stored; `secret` is the ciphertext, never the client's secret itself."""

    id: str
    principal: str
    name: str
    arguments: dict[str, Any]
    url: str
    secret: str
    cursor: str | None
    generation: int
    created_at: float
    refresh_before: float | None
    state: SubscriptionState
    ended_reason: str | None
    terminate_pending: bool
    attempts: int  # failed attempts in a row at the event (or control message) now due
    next_attempt_at: float
    last_delivery_at: float | None
    last_error: str | None  # the latest failure, kept after later successes (attempts says whether it lasts)
    failures: int  # failed POSTs in all
    delivered: int  # events delivered in all
    lease_owner: str | None
    lease_until: float | None

    def public(self) -> dict[str, Any]:
        """What an operator may see: everything but the secret and the lease."""
        return {
            "id": self.id,
            "principal": self.principal,
            "name": self.name,
            "arguments": self.arguments,
            "url": self.url,
            "state": self.state,
            "ended_reason": self.ended_reason,
            "cursor": self.cursor,
            "created_at": self.created_at,
            "refresh_before": self.refresh_before,
            "last_delivery_at": self.last_delivery_at,
            "last_error": self.last_error,
            "failures": self.failures,
            "delivered": self.delivered,
        }


@dataclass(frozen=True, slots=True)
class NewSubscription:
    id: str
    principal: str
    name: str
    arguments: dict[str, Any]  # canonical
    url: str
    secret: str  # encrypted
    cursor: str | None
    refresh_before: float | None


def _subscription(row: Sequence[Any]) -> Subscription:
    values = list(row)
    values[3] = json.loads(values[3])
    values[12] = bool(values[12])
    return Subscription(*values)


class EventSubscriptionStore(AreaStore):
    def __init__(self, db: Connector, changes: ChangeLog) -> None:
        super().__init__(db, changes)
        self._watchers: set[anyio.Event] = set()

    @contextmanager
    def waking_on_subscriptions(self, wake: anyio.Event) -> Iterator[None]:
        """Set `wake` when a subscription is saved or ended in this process while open."""
        self._watchers.add(wake)
        try:
            yield
        finally:
            self._watchers.discard(wake)

    def _saved(self) -> None:
        for wake in self._watchers:
            wake.set()

    async def save_subscription(self, new: NewSubscription, at: float, audit: Audit) -> Subscription:
        """Create the subscription, or refresh it (same id): new secret, cursor and lifetime, active again, its
        failures forgotten, its generation moved on so that a pass in flight does not overwrite the cursor."""
        async with self.db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO event_subscriptions ({COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, 0, ?, ?, 'active', NULL, 0, 0, ?, NULL, NULL, 0, 0, NULL, NULL) "
                "ON CONFLICT (id) DO UPDATE SET secret = excluded.secret, cursor = excluded.cursor, "
                "generation = event_subscriptions.generation + 1, refresh_before = excluded.refresh_before, "
                "state = 'active', ended_reason = NULL, terminate_pending = 0, attempts = 0, "
                "next_attempt_at = excluded.next_attempt_at, last_error = NULL",
                new.id,
                new.principal,
                new.name,
                json.dumps(new.arguments, sort_keys=True, separators=(",", ":")),
                new.url,
                new.secret,
                new.cursor,
                at,
                new.refresh_before,
                at,
            )
            await record_audit(tx, at, audit, None, {"subscription_id": new.id})
            (row,) = await tx.fetch(f"SELECT {COLUMNS} FROM event_subscriptions WHERE id = ?", new.id)
        self._saved()
        return _subscription(row)

    async def subscription(self, subscription_id: str) -> Subscription | None:
        rows = await self.db.fetch(f"SELECT {COLUMNS} FROM event_subscriptions WHERE id = ?", subscription_id)
        return _subscription(rows[0]) if rows else None

    async def subscriptions(self, principal: str | None = None, *, ended: bool = False) -> list[Subscription]:
        """Every subscription (of `principal`), oldest first; ended ones only when asked."""
        where = ["1 = 1"] + ([] if ended else ["state != 'ended'"]) + ([] if principal is None else ["principal = ?"])
        rows = await self.db.fetch(
            f"SELECT {COLUMNS} FROM event_subscriptions WHERE {' AND '.join(where)} ORDER BY created_at, id",
            *([] if principal is None else [principal]),
        )
        return [_subscription(row) for row in rows]

    async def count_subscriptions(self, principal: str | None = None) -> int:
        """Subscriptions not ended (of `principal`)."""
        if principal is None:
            rows = await self.db.fetch("SELECT count(*) FROM event_subscriptions WHERE state != 'ended'")
        else:
            rows = await self.db.fetch(
                "SELECT count(*) FROM event_subscriptions WHERE state != 'ended' AND principal = ?", principal
            )
        return int(rows[0][0])

    async def subscription_counts(self) -> dict[str, int]:
        """Per state, for stats and metrics; failing: active ones whose last attempt failed."""
        counts = {"active": 0, "ended": 0, "failing": 0}
        for state, count in await self.db.fetch("SELECT state, count(*) FROM event_subscriptions GROUP BY state"):
            counts[state] = counts.get(state, 0) + int(count)
        (row,) = await self.db.fetch("SELECT count(*) FROM event_subscriptions WHERE state = 'active' AND attempts > 0")
        counts["failing"] = int(row[0])
        return counts

    async def end_subscription(
        self, subscription_id: str, reason: str, at: float, audit: Audit, *, terminate: bool
    ) -> bool:
        """End it for good (until subscribed again); `terminate`: the delivery loop tells the callback once.
        False when there is no such subscription or it has ended already."""
        async with self.db.transaction() as tx:
            ended = await tx.fetch(
                "UPDATE event_subscriptions SET state = 'ended', ended_reason = ?, terminate_pending = ?, "
                "next_attempt_at = ? WHERE id = ? AND state != 'ended' RETURNING id",
                reason,
                int(terminate),
                at,
                subscription_id,
            )
            if ended:
                await record_audit(tx, at, audit, None, {"subscription_id": subscription_id, "reason": reason})
        self._saved()
        return bool(ended)

    async def claim_subscriptions(self, owner: str, now: float, lease_seconds: float) -> int:
        """Lease to `owner` the subscriptions with work (active, or ended with a termination to send) that no live
        lease holds, and renew `owner`'s own leases past half their time; how many it holds now. Only the first
        replica to ask gets a lapsed lease: the condition is checked again by the UPDATE, row by row."""
        renew_before = now + lease_seconds / 2
        wanted = (
            "(state = 'active' OR terminate_pending = 1) AND "
            "(lease_until IS NULL OR lease_until < ? OR (lease_owner = ? AND lease_until < ?))"
        )
        wanting = f"SELECT count(*) FROM event_subscriptions WHERE {wanted}"
        (row,) = await self.db.fetch(wanting, now, owner, renew_before)
        if row[0]:
            async with self.db.transaction() as tx:
                await tx.execute(
                    "UPDATE event_subscriptions SET lease_owner = ?, lease_until = ? WHERE id IN "
                    f"(SELECT id FROM event_subscriptions WHERE {wanted} {self.db.dialect.skip_locked})",
                    owner,
                    now + lease_seconds,
                    now,
                    owner,
                    renew_before,
                )
        (held,) = await self.db.fetch(
            "SELECT count(*) FROM event_subscriptions WHERE lease_owner = ? AND lease_until >= ?", owner, now
        )
        return int(held[0])

    async def held_subscriptions(self, owner: str, now: float) -> list[Subscription]:
        """The subscriptions `owner` holds a live lease on and that have work, oldest first."""
        rows = await self.db.fetch(
            f"SELECT {COLUMNS} FROM event_subscriptions WHERE lease_owner = ? AND lease_until >= ? "
            "AND (state = 'active' OR terminate_pending = 1) ORDER BY created_at, id",
            owner,
            now,
        )
        return [_subscription(row) for row in rows]

    async def record_delivered(
        self, subscription_id: str, owner: str, generation: int, cursor: str | None, delivered: int, at: float
    ) -> bool:
        """Events up to `cursor` were delivered (`delivered` of them POSTed): the cursor moves, under `owner`'s
        lease and at `generation` only; False when the lease or the subscription has moved on."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE event_subscriptions SET cursor = ?, attempts = 0, "
                "delivered = delivered + ?, "
                "last_delivery_at = CASE WHEN CAST(? AS INTEGER) > 0 THEN CAST(? AS DOUBLE PRECISION) "
                "ELSE last_delivery_at END "
                "WHERE id = ? AND lease_owner = ? AND generation = ? AND state = 'active' RETURNING id",
                cursor,
                delivered,
                delivered,
                at,
                subscription_id,
                owner,
                generation,
            )
        return bool(rows)

    async def record_cursors(self, owner: str, cursors: Sequence[tuple[str, str | None, int]]) -> None:
        """Move many cursors past events that matched nothing, in one statement: (id, cursor, generation) each,
        under `owner`'s lease and at that generation only."""
        if not cursors:
            return
        values = ", ".join([CURSOR_VALUES] * len(cursors))
        async with self.db.transaction() as tx:
            await tx.execute(
                f"UPDATE event_subscriptions SET cursor = v.column2 FROM (VALUES {values}) AS v "
                "WHERE event_subscriptions.id = v.column1 AND event_subscriptions.generation = v.column3 "
                "AND event_subscriptions.lease_owner = ? AND event_subscriptions.state = 'active'",
                *[value for entry in cursors for value in entry],
                owner,
            )

    async def record_failed_attempt(
        self, subscription_id: str, owner: str, error: str, next_attempt_at: float, *, end_reason: str | None = None
    ) -> None:
        """A POST failed: retried at `next_attempt_at`, or the subscription ends (`end_reason`)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE event_subscriptions SET attempts = attempts + 1, failures = failures + 1, last_error = ?, "
                "next_attempt_at = ?, state = CASE WHEN CAST(? AS TEXT) IS NULL THEN state ELSE 'ended' END, "
                "ended_reason = coalesce(CAST(? AS TEXT), ended_reason) WHERE id = ? AND lease_owner = ?",
                error,
                next_attempt_at,
                end_reason,
                end_reason,
                subscription_id,
                owner,
            )

    async def terminated(self, subscription_id: str, owner: str) -> None:
        """The termination was sent (or given up on): nothing more to do for this subscription."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE event_subscriptions SET terminate_pending = 0, lease_owner = NULL, lease_until = NULL "
                "WHERE id = ? AND lease_owner = ?",
                subscription_id,
                owner,
            )

    async def release_subscriptions(self, owner: str) -> None:
        """At shutdown: the leases `owner` holds are handed back, so another replica takes over at once."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE event_subscriptions SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", owner
            )
