"""The Store in SQL, written once: each method's logic and statements, over a connector that runs them on
SQLite or PostgreSQL. Every write that changes an event records its id in the change log, in the same
transaction, so every process can tell its clients exactly which events changed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ..errors import NotFound
from ..events import IncomingEvent
from ..models import AuditEntry, Classification, DeliveryStatus, Notification, Outcome, Priority, Ticket
from .changes import ChangeCursor
from .connector import Connector, Transaction
from .forwarding import ForwardingStore
from .interface import AddOutcome, Audit, Delivery, DeliveryKind, EventQuery, StoredEvent
from .rows import (
    AUDIT_SELECT,
    EVENT_COLUMNS,
    NOTIFICATION_SELECT,
    TICKET_SELECT,
    audit_entry,
    notification,
    stored_event,
    ticket,
)

CHANGE_COALESCE_SECONDS = 0.05  # a burst of commits reaches watchers as one set of ids
CHANGE_LOG_PRUNE_SECONDS = 600.0  # each watcher drops what it had read this long ago
FILTER_COLUMNS = ("status", "type", "customer", "account")
# A new notification or ticket is first attempted by the call that made it (the outbox's deliver_now);
# the background delivery takes it only if that call has not within this long (its process died, say).
CREATOR_ATTEMPT_SECONDS = 60.0


class SqlStore(ForwardingStore):
    def __init__(self, connector: Connector) -> None:
        self.db = connector
        self._watchers: set[anyio.Event] = set()  # change watchers waiting in this process
        connector.on_commit(self._committed)

    # -- ingest ----------------------------------------------------------------------------------

    async def add_events(self, events: Sequence[IncomingEvent], received_at: float) -> list[AddOutcome]:
        """Insert each new event, or count one more delivery of a known one, in one durable transaction."""
        if not events:
            return []
        outcomes = await self.db.add_events(events, received_at)
        self._committed()
        return outcomes

    # -- reading ---------------------------------------------------------------------------------

    async def get_event(self, event_id: str) -> StoredEvent | None:
        rows = await self.db.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", event_id)
        return stored_event(rows[0]) if rows else None

    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        where, parameters = _where(query)
        if query.after is not None:
            where.append("seq < ?" if query.newest_first else "seq > ?")
            parameters.append(query.after)
        order = "DESC" if query.newest_first else "ASC"
        rows = await self.db.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events {_sql_where(where)} ORDER BY seq {order} LIMIT ?",
            *parameters,
            query.limit,
        )
        return [stored_event(row) for row in rows]

    async def count_events(self, query: EventQuery) -> int:
        where, parameters = _where(query)
        # Totals come from the counts the triggers keep; a customer's or account's events through their index.
        if query.customer or query.account:
            source = "count(*) FROM events"
        else:
            source = "CAST(coalesce(sum(n), 0) AS BIGINT) FROM event_counts"
        rows = await self.db.fetch(f"SELECT {source} {_sql_where(where)}", *parameters)
        return int(rows[0][0])

    async def tickets(self, event_id: str) -> list[Ticket]:
        return await _tickets(self.db, "t.event_id = ?", event_id)

    async def ticket(self, ticket_id: int) -> Ticket:
        (found,) = await _tickets(self.db, "t.id = ?", ticket_id)
        return found

    async def notifications(self, event_id: str) -> list[Notification]:
        return await _notifications(self.db, "n.event_id = ?", event_id)

    async def notification(self, notification_id: int) -> Notification:
        (found,) = await _notifications(self.db, "n.id = ?", notification_id)
        return found

    async def audit_trail(self, event_id: str) -> list[AuditEntry]:
        rows = await self.db.fetch(f"{AUDIT_SELECT} WHERE event_id = ? ORDER BY id", event_id)
        return [audit_entry(row) for row in rows]

    async def counts(self) -> list[tuple[str, str, int]]:
        """(status, type, number of events) for every status and type present."""
        rows = await self.db.fetch(
            "SELECT status, type, CAST(sum(n) AS BIGINT) FROM event_counts "
            "GROUP BY status, type HAVING sum(n) > 0 ORDER BY type"
        )
        return [(row[0], row[1], row[2]) for row in rows]

    async def oldest_pending(self) -> float | None:
        """When the oldest pending event was received."""
        rows = await self.db.fetch("SELECT received_at FROM events WHERE status = 'pending' ORDER BY seq LIMIT 1")
        return rows[0][0] if rows else None

    async def delivery_counts(self) -> dict[str, int]:
        """Outgoing actions by delivery status."""
        counts = dict.fromkeys(("queued", "sending", "sent", "failed"), 0)
        rows = await self.db.fetch("SELECT status, count(*) FROM deliveries WHERE kind != 'forward' GROUP BY status")
        counts.update({row[0]: row[1] for row in rows})
        return counts

    async def get_state(self, key: str) -> str | None:
        """A small named value the inbox keeps for itself (e.g. where a backfill got to)."""
        rows = await self.db.fetch("SELECT value FROM state WHERE key = ?", key)
        return rows[0][0] if rows else None

    async def ping(self) -> None:
        await self.db.fetch("SELECT 1")

    # -- acting ----------------------------------------------------------------------------------

    async def ack(
        self, event_id: str, outcome: Outcome, note: str | None, at: float, audit: Audit, holder: str | None = None
    ) -> tuple[StoredEvent, bool]:
        """Ack a pending event; an acked event is returned unchanged. True when this call acked it.
        With a `holder` (an agent), an event another agent holds a live claim on is refused (Claimed);
        without one (an operator) the ack goes through."""
        async with self._write() as tx:
            event = await _event(tx, event_id, lock=self.db.dialect.lock_row)
            if event.status == "acked":
                return event, False
            event.check_claim(holder, at)
            (row,) = await tx.fetch(
                "UPDATE events SET status = 'acked', outcome = ?, note = ?, acked_at = ? WHERE id = ? "
                f"RETURNING {EVENT_COLUMNS}",
                outcome,
                note,
                at,
                event_id,
            )
            await _audit(tx, at, audit, event_id, {"status": "acked", "outcome": outcome})
            return stored_event(row), True

    async def claim_events(self, holder: str, limit: int, lease_seconds: float, now: float) -> list[StoredEvent]:
        """Lease up to `limit` pending events, oldest first, that no agent holds a live claim on, to
        `holder` until now + lease_seconds. Two callers never get the same event; a lapsed lease frees it."""
        claimable = (
            "SELECT seq FROM events WHERE status = 'pending' AND (claim_expires_at IS NULL OR claim_expires_at < ?) "
            f"ORDER BY seq LIMIT ?{self.db.dialect.skip_locked}"
        )
        async with self._write() as tx:
            rows = await tx.fetch(
                f"WITH chosen AS ({claimable}) UPDATE events SET claimed_by = ?, claim_expires_at = ? "
                f"WHERE seq IN (SELECT seq FROM chosen) RETURNING {EVENT_COLUMNS}",
                now,
                limit,
                holder,
                now + lease_seconds,
            )
            claimed = sorted((stored_event(row) for row in rows), key=lambda event: event.seq)
            for event in claimed:
                await _audit(tx, now, Audit(holder, "claim_events", {"lease_seconds": lease_seconds}), event.id, {})
        return claimed

    async def set_classification(self, event_id: str, classification: Classification, at: float, audit: Audit) -> None:
        async with self._write() as tx:
            updated = await tx.fetch(
                "UPDATE events SET classification = ? WHERE id = ? RETURNING id",
                classification.model_dump_json(),
                event_id,
            )
            if not updated:
                raise NotFound.event(event_id)
            result = {"category": classification.category, "priority": classification.priority}
            await _audit(tx, at, audit, event_id, result)

    async def add_ticket(
        self, event_id: str, title: str, body: str, priority: Priority, tracker: str | None, at: float, audit: Audit
    ) -> tuple[Ticket, bool]:
        """Create the ticket (queued for `tracker` if given), or return the one this event already has with
        this title (False)."""
        async with self._write() as tx:
            await _event(tx, event_id)
            created = await tx.fetch(
                "INSERT INTO tickets (event_id, title, body, priority, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id, title) DO NOTHING RETURNING id",
                event_id,
                title,
                body,
                priority,
                at,
            )
            if created:
                ticket_id = created[0][0]
                if tracker is not None:
                    await _queue(tx, "ticket", ticket_id, tracker, event_id, at)
                await _audit(tx, at, audit, event_id, {"ticket_id": ticket_id, "tracker": tracker})
            (made,) = await _tickets(tx, "t.event_id = ? AND t.title = ?", event_id, title)
        return made, bool(created)

    async def add_notification(
        self,
        channel: str,
        message: str,
        subject: str | None,
        recipient: str | None,
        event_id: str | None,
        idempotency_key: str,
        at: float,
        audit: Audit,
    ) -> tuple[Notification, bool]:
        """Queue a notification, or return the one already made with this idempotency key (False)."""
        async with self._write() as tx:
            if event_id is not None:
                await _event(tx, event_id)
            created = await tx.fetch(
                "INSERT INTO notifications (event_id, channel, subject, message, recipient, idempotency_key, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                event_id,
                channel,
                subject,
                message,
                recipient,
                idempotency_key,
                at,
            )
            if created:
                notification_id = created[0][0]
                await _queue(tx, "notification", notification_id, channel, event_id, at)
                await _audit(tx, at, audit, event_id, {"notification_id": notification_id, "queued": True})
            (made,) = await _notifications(tx, "n.idempotency_key = ?", idempotency_key)
        return made, bool(created)

    async def prune(self, acked_before: float) -> int:
        doomed = "SELECT id FROM events WHERE status = 'acked' AND acked_at < ?"
        async with self._write() as tx:
            (count,) = await tx.fetch(f"SELECT count(*) FROM ({doomed}) AS doomed", acked_before)
            await tx.execute(f"INSERT INTO changes (event_id) {doomed}", acked_before)
            for table in ("deliveries", "tickets", "notifications", "audit"):
                await tx.execute(f"DELETE FROM {table} WHERE event_id IN ({doomed})", acked_before)
            await tx.execute("DELETE FROM events WHERE status = 'acked' AND acked_at < ?", acked_before)
        return int(count[0])

    async def set_state(self, key: str, value: str | None) -> None:
        async with self.db.transaction() as tx:
            if value is None:
                await tx.execute("DELETE FROM state WHERE key = ?", key)
            else:
                await tx.execute(
                    "INSERT INTO state (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    key,
                    value,
                )

    # -- the outbox ------------------------------------------------------------------------------

    async def claim_deliveries(
        self, now: float, lease_seconds: float, limit: int, of: tuple[DeliveryKind, int] | None = None
    ) -> list[Delivery]:
        """Take due deliveries (or the queued one `of` a notification or ticket) for `lease_seconds`;
        a lease that lapses frees them again."""
        if of is None:
            chosen = (
                "SELECT id FROM deliveries WHERE kind != 'forward' AND ((status = 'queued' AND next_attempt_at <= ?) "
                "OR (status = 'sending' AND lease_until < ?)) ORDER BY next_attempt_at LIMIT ?"
            )
            parameters: tuple[Any, ...] = (now, now, limit)
        else:
            chosen = "SELECT id FROM deliveries WHERE kind = ? AND ref_id = ? AND status = 'queued'"
            parameters = of
        async with self._write() as tx:
            claimed = await tx.fetch(
                f"WITH chosen AS ({chosen}{self.db.dialect.skip_locked}) "
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_until = ? "
                "WHERE id IN (SELECT id FROM chosen) RETURNING id, kind, ref_id, target, event_id, attempts",
                *parameters,
                now + lease_seconds,
            )
            deliveries = []
            for delivery_id, kind, ref_id, target, event_id, attempts in sorted(claimed, key=lambda row: row[0]):
                made = await _notifications(tx, "n.id = ?", ref_id) if kind == "notification" else [None]
                opened = await _tickets(tx, "t.id = ?", ref_id) if kind == "ticket" else [None]
                event = await _event(tx, event_id) if event_id is not None else None
                deliveries.append(Delivery(delivery_id, kind, target, attempts, made[0], opened[0], event))
        return deliveries

    async def finish_delivery(
        self,
        delivery: Delivery,
        status: DeliveryStatus,
        reason: str | None,
        next_attempt_at: float | None,
        at: float,
        tracker_id: str | None = None,
        tracker_url: str | None = None,
    ) -> None:
        """Record an attempt's outcome; a final one (sent, failed) also goes into the audit trail."""
        final = status in ("sent", "failed")
        event_id = delivery.event.id if delivery.event else None
        async with self._write() as tx:
            await tx.execute(
                "UPDATE deliveries SET status = ?, reason = ?, next_attempt_at = coalesce(?, next_attempt_at), "
                "lease_until = NULL, finished_at = ? WHERE id = ?",
                status,
                reason,
                next_attempt_at,
                at if final else None,
                delivery.id,
            )
            if delivery.ticket is not None and (tracker_id or tracker_url):
                await tx.execute(
                    "UPDATE tickets SET tracker_id = ?, tracker_url = ? WHERE id = ?",
                    tracker_id,
                    tracker_url,
                    delivery.ticket.id,
                )
            if final:
                ref = delivery.notification or delivery.ticket
                await _audit(
                    tx,
                    at,
                    Audit("outbox", f"deliver_{delivery.kind}", {"id": ref.id if ref else None, "to": delivery.target}),
                    event_id,
                    {"status": status, "attempts": delivery.attempts, "reason": reason, "tracker_url": tracker_url},
                )
            elif event_id is not None:
                await _changed(tx, event_id)

    async def next_delivery_at(self) -> float | None:
        rows = await self.db.fetch(
            "SELECT min(CASE status WHEN 'queued' THEN next_attempt_at ELSE lease_until END) FROM deliveries "
            "WHERE kind != 'forward' AND status IN ('queued', 'sending')"
        )
        return rows[0][0]

    # -- changes ---------------------------------------------------------------------------------

    async def watch_changes(self) -> AsyncIterator[set[str]]:
        """The ids of the events each commit from now on changed, made in this process or any other; a
        burst of commits comes as one set."""
        (last,) = await self.db.fetch("SELECT coalesce(max(seq), 0) FROM changes")
        cursor = ChangeCursor(int(last[0]))
        prune_upto, pruned_at = cursor.position, time.monotonic()
        while True:
            wake = anyio.Event()
            self._watchers.add(wake)
            try:
                marker = await self.db.commit_marker()  # taken before the read: a later commit moves it
                rows = await self.db.fetch(
                    "SELECT seq, event_id FROM changes WHERE seq > ? ORDER BY seq", cursor.read_after
                )
                if changed := cursor.take(rows, time.time()):
                    yield changed
                    await anyio.sleep(CHANGE_COALESCE_SECONDS)
                while not wake.is_set():
                    with anyio.move_on_after(self.db.poll_seconds):
                        await wake.wait()
                    if await self.db.commit_marker() != marker:
                        break
            finally:
                self._watchers.discard(wake)
            if time.monotonic() - pruned_at >= CHANGE_LOG_PRUNE_SECONDS:
                async with self.db.transaction() as tx:
                    await tx.execute("DELETE FROM changes WHERE seq <= ?", prune_upto)
                prune_upto, pruned_at = cursor.position, time.monotonic()

    def _committed(self) -> None:
        for wake in self._watchers:
            wake.set()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Transaction]:
        """A transaction that may change events (_audit and _changed record which); watchers in this process
        hear of its commit at once."""
        async with self.db.transaction() as tx:
            yield tx
        self._committed()

    async def close(self) -> None:
        await self.db.close()


def _where(query: EventQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    parameters: list[Any] = []
    for column in FILTER_COLUMNS:
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            parameters.append(value)
    return where, parameters


def _sql_where(where: list[str]) -> str:
    return f"WHERE {' AND '.join(where)}" if where else ""


async def _event(tx: Transaction, event_id: str, lock: str = "") -> StoredEvent:
    rows = await tx.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?{lock}", event_id)
    if not rows:
        raise NotFound.event(event_id)
    return stored_event(rows[0])


async def _tickets(db: Transaction | Connector, where: str, *parameters: Any) -> list[Ticket]:
    return [ticket(row) for row in await db.fetch(f"{TICKET_SELECT} WHERE {where} ORDER BY t.id", *parameters)]


async def _notifications(db: Transaction | Connector, where: str, *parameters: Any) -> list[Notification]:
    rows = await db.fetch(f"{NOTIFICATION_SELECT} WHERE {where} ORDER BY n.id", *parameters)
    return [notification(row) for row in rows]


async def _queue(tx: Transaction, kind: str, ref_id: int, target: str, event_id: str | None, at: float) -> None:
    await tx.execute(
        "INSERT INTO deliveries (kind, ref_id, target, event_id, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        kind,
        ref_id,
        target,
        event_id,
        at + CREATOR_ATTEMPT_SECONDS,
        at,
    )


async def _audit(tx: Transaction, at: float, audit: Audit, event_id: str | None, result: dict[str, Any]) -> None:
    """The audit entry of a change, and, for a change to an event, its line in the change log."""
    await tx.execute(
        "INSERT INTO audit (at, actor, action, event_id, arguments, result) VALUES (?, ?, ?, ?, ?, ?)",
        at,
        audit.actor,
        audit.action,
        event_id,
        json.dumps(audit.arguments),
        json.dumps(result),
    )
    if event_id is not None:
        await _changed(tx, event_id)


async def _changed(tx: Transaction, event_id: str) -> None:
    await tx.execute("INSERT INTO changes (event_id) VALUES (?)", event_id)
