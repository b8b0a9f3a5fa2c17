"""The outbox: tickets and notifications, and their deliveries to trackers and channels (claimed with a lease,
their outcomes recorded and audited)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument, NotFound
from ..models import DeliveryStatus, Notification, Priority, Ticket
from .area import AreaStore
from .connector import Transaction
from .interface import Audit, Delivery, DeliveryKind
from .journal import record_audit, record_change
from .rows import read_event, read_notifications, read_tickets

# A new notification or ticket is first attempted by the call that made it (the outbox's deliver_now);
# the background delivery takes it only if that call has not within this long (its process died, say).
CREATOR_ATTEMPT_SECONDS = 60.0


class OutboxStore(AreaStore):
    async def tickets(self, event_id: str) -> list[Ticket]:
        return await read_tickets(self.db, "t.event_id = ?", event_id)

    async def ticket(self, ticket_id: int) -> Ticket:
        (found,) = await read_tickets(self.db, "t.id = ?", ticket_id)
        return found

    async def notifications(self, event_id: str) -> list[Notification]:
        return await read_notifications(self.db, "n.event_id = ?", event_id)

    async def notification(self, notification_id: int) -> Notification:
        (found,) = await read_notifications(self.db, "n.id = ?", notification_id)
        return found

    async def add_ticket(
        self,
        event_id: str,
        title: str,
        body: str,
        priority: Priority,
        tracker: str | None,
        at: float,
        audit: Audit,
        status: DeliveryStatus = "queued",
    ) -> tuple[Ticket, bool]:
        """Create the ticket (its forward to `tracker`, if given, starting as `status`), or return the one this
        event already has with this title (False)."""
        async with self.changes.write() as tx:
            await read_event(tx, event_id)
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
                    await _queue(tx, "ticket", ticket_id, tracker, event_id, at, status)
                result = {"ticket_id": ticket_id, "tracker": tracker}
                await record_audit(tx, at, audit, event_id, result | ({"status": status} if status != "queued" else {}))
            (made,) = await read_tickets(tx, "t.event_id = ? AND t.title = ?", event_id, title)
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
        status: DeliveryStatus = "queued",
        reason: str | None = None,
    ) -> tuple[Notification, bool]:
        """Queue a notification (or hold it as `status`, awaiting_approval or rejected, for `reason`), or return
        the one already made with this idempotency key (False)."""
        async with self.changes.write() as tx:
            if event_id is not None:
                await read_event(tx, event_id)
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
                await _queue(tx, "notification", notification_id, channel, event_id, at, status, reason)
                result = {"notification_id": notification_id, "queued": status == "queued"}
                await record_audit(tx, at, audit, event_id, result | ({"status": status} if status != "queued" else {}))
            (made,) = await read_notifications(tx, "n.idempotency_key = ?", idempotency_key)
        return made, bool(created)

    async def retry_delivery(self, kind: DeliveryKind, ref_id: int, at: float, audit: Audit) -> None:
        """Queue a failed notification or ticket forward again, with a fresh count of attempts; the caller
        makes the first one (as a new one's creator does)."""
        async with self.changes.write() as tx:
            rows = await tx.fetch(
                "UPDATE deliveries SET status = 'queued', attempts = 0, next_attempt_at = ?, lease_until = NULL, "
                "finished_at = NULL WHERE kind = ? AND ref_id = ? AND status = 'failed' RETURNING event_id",
                at + CREATOR_ATTEMPT_SECONDS,
                kind,
                ref_id,
            )
            if not rows:
                found = await tx.fetch("SELECT status FROM deliveries WHERE kind = ? AND ref_id = ?", kind, ref_id)
                if not found:
                    raise NotFound(f"no {kind} {ref_id} in the outbox")
                raise InvalidArgument(f"{kind} {ref_id} is {found[0][0]}: only a failed one can be retried")
            await record_audit(tx, at, audit, rows[0][0], {"status": "queued"})

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
        async with self.changes.write() as tx:
            claimed = await tx.fetch(
                f"WITH chosen AS ({chosen}{self.db.dialect.skip_locked}) "
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_until = ? "
                "WHERE id IN (SELECT id FROM chosen) RETURNING id, kind, ref_id, target, event_id, attempts",
                *parameters,
                now + lease_seconds,
            )
            deliveries = []
            for delivery_id, kind, ref_id, target, event_id, attempts in sorted(claimed, key=lambda row: row[0]):
                made = await read_notifications(tx, "n.id = ?", ref_id) if kind == "notification" else [None]
                opened = await read_tickets(tx, "t.id = ?", ref_id) if kind == "ticket" else [None]
                event = await read_event(tx, event_id) if event_id is not None else None
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
        async with self.changes.write() as tx:
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
                await record_audit(
                    tx,
                    at,
                    Audit("outbox", f"deliver_{delivery.kind}", {"id": ref.id if ref else None, "to": delivery.target}),
                    event_id,
                    {"status": status, "attempts": delivery.attempts, "reason": reason, "tracker_url": tracker_url},
                )
            elif event_id is not None:
                await record_change(tx, event_id)

    async def next_delivery_at(self) -> float | None:
        rows = await self.db.fetch(
            "SELECT min(CASE status WHEN 'queued' THEN next_attempt_at ELSE lease_until END) FROM deliveries "
            "WHERE kind != 'forward' AND status IN ('queued', 'sending')"
        )
        return rows[0][0]

    async def delivery_counts(self) -> dict[str, int]:
        """Outgoing actions by delivery status."""
        counts = dict.fromkeys(("queued", "sending", "sent", "failed"), 0)
        rows = await self.db.fetch("SELECT status, count(*) FROM deliveries WHERE kind != 'forward' GROUP BY status")
        counts.update({row[0]: row[1] for row in rows})
        return counts


async def _queue(
    tx: Transaction,
    kind: str,
    ref_id: int,
    target: str,
    event_id: str | None,
    at: float,
    status: DeliveryStatus = "queued",
    reason: str | None = None,
) -> None:
    await tx.execute(
        "INSERT INTO deliveries (kind, ref_id, target, event_id, next_attempt_at, created_at, status, reason, "
        "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        kind,
        ref_id,
        target,
        event_id,
        at + CREATOR_ATTEMPT_SECONDS,
        at,
        status,
        reason,
        at if status == "rejected" else None,
    )
