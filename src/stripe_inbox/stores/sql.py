"""The Store in SQL, written once: each method's logic and statements, over a connector that runs them on
SQLite or PostgreSQL. Every write that changes an event records its id in the change log, in the same
transaction, so every process can tell its clients exactly which events changed."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ..errors import InvalidArgument, NotFound
from ..events import IncomingEvent
from ..indexing import Findable
from ..models import (
    Approval,
    AuditEntry,
    Classification,
    DeliveryStatus,
    Notification,
    Outcome,
    Priority,
    Ticket,
    utc,
)
from ..resolution import Fact, Resolution, resolve
from .changes import ChangeCursor
from .connector import Connector, Dialect, Transaction
from .forwarding import ForwardingStore
from .interface import AddOutcome, Audit, Delivery, DeliveryKind, EventQuery, StoredEvent
from .journal import record_audit, record_change
from .oauth_records import OAUTH_TOKEN_COLUMNS, NewOAuthToken, OAuthCode, OAuthRequest, OAuthToken, oauth_token
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
from .search import SEARCH_COUNT_CAP, search_where, text_walk, write_index

CHANGE_COALESCE_SECONDS = 0.05  # a burst of commits reaches watchers as one set of ids
CHANGE_LOG_PRUNE_SECONDS = 600.0  # each watcher drops what it had read this long ago
FILTER_COLUMNS = ("status", "type", "customer", "account")
FACT_COLUMNS = "e.id, e.type, e.object_id, e.object_status, e.created, e.seq"  # what resolution reads (Fact)
# The events still queued for the search index about their own object `e.object_id`: the queue walked (CROSS JOIN
# keeps SQLite from walking every event instead), each event read by its seq.
QUEUED_ABOUT = "SELECT q.seq FROM search_queue q CROSS JOIN events e WHERE e.seq = q.seq AND e.object_id"
APPROVAL_COLUMNS = "id, kind, ref_id, target, event_id, status, reason, created_at"
# A new notification or ticket is first attempted by the call that made it (the outbox's deliver_now);
# the background delivery takes it only if that call has not within this long (its process died, say).
CREATOR_ATTEMPT_SECONDS = 60.0
# A used authorization code is remembered this long past its expiry, so a replay is still told apart (and
# revokes what the code bought) rather than looking like a code that never existed.
CODE_REPLAY_MEMORY_SECONDS = 3600.0


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

    async def get_events(self, event_ids: Sequence[str]) -> list[StoredEvent]:
        """The stored events among `event_ids`, in no particular order."""
        if not event_ids:
            return []
        marks = ", ".join("?" * len(event_ids))
        rows = await self.db.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id IN ({marks})", *event_ids)
        return [stored_event(row) for row in rows]

    async def list_events(self, query: EventQuery, matches: int | None = None) -> list[StoredEvent]:
        """`matches`: count_events(query), where the caller has it already: a range or full-text search picks its
        plan by it."""
        walk = await text_walk(self.db, query, matches)
        where, parameters = _where(query, self.db.dialect, walk is not None)
        if query.after is not None:
            where.append("seq < ?" if query.newest_first else "seq > ?")
            parameters.append(query.after)
        if walk is not None:
            where.append("seq BETWEEN ? AND ?")
            parameters += [walk.low, walk.high]
        order = "DESC" if query.newest_first else "ASC"
        if not query.searches:
            rows = await self.db.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events {_sql_where(where)} ORDER BY seq {order} LIMIT ?",
                *parameters,
                query.limit,
            )
            return [stored_event(row) for row in rows]
        # A search picks its page's seqs first, so only those rows are read whole. Full text is read from
        # its index in seq order where the index yields that order (FTS5); elsewhere a broad search walks the
        # events, testing each one's terms, and a narrow one sorts the few matches its index yields. A range
        # that matches more than a count's worth of events is read in seq order, where the page is met at once;
        # a narrower one through its index, sorting the few it matches.
        dialect, seq = self.db.dialect, "seq"
        if query.words:
            source, seq = dialect.text_source, dialect.text_seq if walk else dialect.text_seq_sorted
        elif query.ranged and (await self.count_events(query) if matches is None else matches) > SEARCH_COUNT_CAP:
            source = f"events{dialect.in_seq_order}"
        else:
            source = "events"
        rows = await self.db.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN (SELECT {seq} FROM {source} {_sql_where(where)} "
            f"ORDER BY {seq} {order} LIMIT ?) ORDER BY seq {order}",
            *parameters,
            query.limit,
        )
        if walk is not None and not walk.whole and len(rows) < query.limit:
            return await self.list_events(query)  # the matches lie beyond the walk: the index finds them
        return [stored_event(row) for row in rows]

    async def count_events(self, query: EventQuery) -> int:
        """How many events match; for a search, up to SEARCH_COUNT_CAP + 1."""
        where, parameters = _where(query, self.db.dialect)
        if query.searches:
            source = "events"
            if query.words:
                source = self.db.dialect.text_index if len(where) == 1 else self.db.dialect.text_source
            rows = await self.db.fetch(
                f"SELECT count(*) FROM (SELECT 1 FROM {source} {_sql_where(where)} LIMIT ?) AS matched",
                *parameters,
                SEARCH_COUNT_CAP + 1,
            )
            return int(rows[0][0])
        # Totals come from the counts the triggers keep; a customer's or account's events through their index.
        if query.customer or query.account:
            source = "count(*) FROM events"
        else:
            source = "CAST(coalesce(sum(n), 0) AS BIGINT) FROM event_counts"
        rows = await self.db.fetch(f"SELECT {source} {_sql_where(where)}", *parameters)
        return int(rows[0][0])

    async def timeline(self, object_id: str, limit: int) -> list[StoredEvent]:
        """The events about an object, oldest first by Stripe's time, then arrival: those the search index holds,
        and those still queued for it whose own object it is (those that only refer to it wait for the index)."""
        rows = await self.db.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN (SELECT seq FROM event_keys WHERE key = ? "
            f"UNION ALL {QUEUED_ABOUT} = ?) ORDER BY created, seq LIMIT ?",
            object_id,
            object_id,
            limit,
        )
        return [stored_event(row) for row in rows]

    async def resolutions(self, events: Sequence[StoredEvent]) -> dict[str, Resolution]:
        """Each event's superseded_by and stale, from one read of the events about the same objects."""
        facts = [_fact(event) for event in events]
        objects = sorted({fact.object_id for fact in facts if fact.object_id is not None})
        if not objects:
            return resolve(facts, [])
        # Indexed events are found through their keys; those still queued for the index (a few, or under
        # overload a few seconds' worth) by their object_id, which the insert stores, so resolution never waits
        # for the index: the queue is walked (CROSS JOIN keeps SQLite from walking every event created since
        # instead). One statement reads one snapshot: an event being indexed is met once, on one side.
        marks, since = ", ".join(["?"] * len(objects)), min(fact.created for fact in facts)
        rows = await self.db.fetch(
            f"SELECT {FACT_COLUMNS} FROM event_keys k JOIN events e ON e.seq = k.seq WHERE k.key IN ({marks}) "
            "AND e.object_id = k.key AND e.created >= ? "
            f"UNION ALL SELECT {FACT_COLUMNS} FROM search_queue q CROSS JOIN events e "
            f"WHERE e.seq = q.seq AND e.object_id IN ({marks}) AND e.created >= ?",
            *objects,
            since,
            *objects,
            since,
        )
        return resolve(facts, [Fact(*row) for row in rows])

    async def unindexed(self, at_most: int | None = None) -> int:
        """How many stored events the search index does not hold yet (counted up to `at_most`)."""
        if at_most is None:
            rows = await self.db.fetch("SELECT count(*) FROM search_queue")
        else:
            rows = await self.db.fetch("SELECT count(*) FROM (SELECT 1 FROM search_queue LIMIT ?) AS queued", at_most)
        return int(rows[0][0])

    async def oldest_unindexed_at(self) -> float | None:
        """When the event that has waited longest for the search index arrived."""
        rows = await self.db.fetch(
            "SELECT e.received_at FROM search_queue q JOIN events e ON e.seq = q.seq ORDER BY q.seq LIMIT 1"
        )
        return float(rows[0][0]) if rows else None

    async def queued_for_index(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` of the events queued for the search index, oldest first: their seqs and payloads."""
        rows = await self.db.fetch(
            "SELECT q.seq, e.payload FROM search_queue q JOIN events e ON e.seq = q.seq ORDER BY q.seq LIMIT ?", limit
        )
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    async def index(self, found: Sequence[tuple[int, Findable]]) -> int:
        """Write what search knows of queued events, each by its seq, in one write; how many were still queued
        (another process may have indexed some meanwhile)."""
        if not found:
            return 0
        return await self.db.write_batched(lambda tx: write_index(tx, self.db.dialect, found))

    async def currencies(self) -> list[str]:
        """The lowest and highest currency the stored amounts are in: one when they agree, none without amounts."""
        rows = await self.db.fetch("SELECT (SELECT min(currency) FROM events), (SELECT max(currency) FROM events)")
        return sorted({currency for currency in rows[0] if currency is not None})

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

    async def received_per_hour(self, since: float, until: float = math.inf) -> dict[int, int]:
        """How many events were first received in each hour from `since` to `until`, keyed by hours since the
        epoch. Whole seconds divided as integers read the same on both databases (a float CAST rounds in
        PostgreSQL but truncates in SQLite)."""
        rows = await self.db.fetch(
            "SELECT CAST(received_at AS BIGINT) / 3600 AS hour, count(*) FROM events "
            "WHERE received_at >= ? AND received_at < ? GROUP BY hour",
            since,
            until,
        )
        return {int(row[0]): int(row[1]) for row in rows}

    async def change_marker(self) -> int:
        """The latest position in the change log: it moves whenever any event changes, in any process."""
        rows = await self.db.fetch("SELECT coalesce(max(seq), 0) FROM changes")
        return int(rows[0][0])

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
            await record_audit(tx, at, audit, event_id, {"status": "acked", "outcome": outcome})
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
                await record_audit(
                    tx, now, Audit(holder, "claim_events", {"lease_seconds": lease_seconds}), event.id, {}
                )
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
            await record_audit(tx, at, audit, event_id, result)

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
                    await _queue(tx, "ticket", ticket_id, tracker, event_id, at, status)
                result = {"ticket_id": ticket_id, "tracker": tracker}
                await record_audit(tx, at, audit, event_id, result | ({"status": status} if status != "queued" else {}))
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
        status: DeliveryStatus = "queued",
        reason: str | None = None,
    ) -> tuple[Notification, bool]:
        """Queue a notification (or hold it as `status`, awaiting_approval or rejected, for `reason`), or return
        the one already made with this idempotency key (False)."""
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
                await _queue(tx, "notification", notification_id, channel, event_id, at, status, reason)
                result = {"notification_id": notification_id, "queued": status == "queued"}
                await record_audit(tx, at, audit, event_id, result | ({"status": status} if status != "queued" else {}))
            (made,) = await _notifications(tx, "n.idempotency_key = ?", idempotency_key)
        return made, bool(created)

    async def retry_delivery(self, kind: DeliveryKind, ref_id: int, at: float, audit: Audit) -> None:
        """Queue a failed notification or ticket forward again, with a fresh count of attempts; the caller
        makes the first one (as a new one's creator does)."""
        async with self._write() as tx:
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

    async def add_audit(self, event_id: str, at: float, audit: Audit) -> None:
        """An audit entry for something done with an event that changes nothing else (e.g. a reveal)."""
        async with self._write() as tx:
            await _event(tx, event_id)
            await record_audit(tx, at, audit, event_id, {})

    async def prune(self, acked_before: float, audit: Audit | None = None) -> int:
        doomed = "SELECT id FROM events WHERE status = 'acked' AND acked_at < ?"
        async with self._write() as tx:
            (count,) = await tx.fetch(f"SELECT count(*) FROM ({doomed}) AS doomed", acked_before)
            if audit is not None:
                await record_audit(tx, time.time(), audit, None, {"deleted": int(count[0])})
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

    # -- approvals -------------------------------------------------------------------------------

    async def approvals(self, status: DeliveryStatus = "awaiting_approval", limit: int = 100) -> list[Approval]:
        """Deliveries in `status` (those waiting for a person, by default), oldest first."""
        rows = await self.db.fetch(
            f"SELECT {APPROVAL_COLUMNS} FROM deliveries WHERE status = ? ORDER BY id LIMIT ?", status, limit
        )
        return [await _approval(self.db, row) for row in rows]

    async def count_approvals(self, created_since: float) -> int:
        """How many deliveries wait for a person and have not lapsed (created at or after `created_since`)."""
        (row,) = await self.db.fetch(
            "SELECT count(*) FROM deliveries WHERE status = 'awaiting_approval' AND created_at >= ?", created_since
        )
        return int(row[0])

    async def approval(self, delivery_id: int) -> Approval:
        rows = await self.db.fetch(f"SELECT {APPROVAL_COLUMNS} FROM deliveries WHERE id = ?", delivery_id)
        if not rows:
            raise NotFound(f"no approval {delivery_id}: `stripe-inbox approvals list` shows those waiting")
        return await _approval(self.db, rows[0])

    async def approval_of(self, kind: DeliveryKind, ref_id: int) -> Approval:
        """The delivery of a notification or ticket, as an approval."""
        rows = await self.db.fetch(
            f"SELECT {APPROVAL_COLUMNS} FROM deliveries WHERE kind = ? AND ref_id = ?", kind, ref_id
        )
        return await _approval(self.db, rows[0])

    async def decide(self, delivery_id: int, approved: bool, reason: str | None, at: float, audit: Audit) -> Approval:
        """A person's answer to a delivery awaiting approval: queued to be sent at once, or rejected for good.
        Only the first answer counts; a delivery no longer waiting is refused (InvalidArgument)."""
        async with self._write() as tx:
            decided = await tx.fetch(
                "UPDATE deliveries SET status = ?, reason = ?, next_attempt_at = ?, finished_at = ? "
                "WHERE id = ? AND status = 'awaiting_approval' RETURNING event_id",
                "queued" if approved else "rejected",
                reason,
                at + CREATOR_ATTEMPT_SECONDS,
                None if approved else at,
                delivery_id,
            )
            if not decided:
                current = await self.approval(delivery_id)
                raise InvalidArgument(f"approval {delivery_id} is not awaiting approval: it is {current.status}")
            result = {"delivery_id": delivery_id, "status": "queued" if approved else "rejected", "reason": reason}
            await record_audit(tx, at, audit, decided[0][0], result)
        return await self.approval(delivery_id)

    async def lapse_approvals(self, created_before: float, reason: str, at: float, audit: Audit) -> list[int]:
        """Reject every delivery that has awaited approval since before `created_before`; their ids."""
        async with self._write() as tx:
            lapsed = await tx.fetch(
                "UPDATE deliveries SET status = 'rejected', reason = ?, finished_at = ? "
                "WHERE status = 'awaiting_approval' AND created_at < ? RETURNING id, event_id",
                reason,
                at,
                created_before,
            )
            for delivery_id, event_id in sorted(lapsed):
                await record_audit(tx, at, audit, event_id, {"delivery_id": delivery_id, "status": "rejected"})
        return sorted(row[0] for row in lapsed)

    # -- the inbox watching itself ---------------------------------------------------------------

    async def incidents(self) -> dict[str, tuple[float, str]]:
        """The open incidents: name -> (when opened, what was found)."""
        rows = await self.db.fetch("SELECT name, opened_at, detail FROM incidents")
        return {name: (opened_at, detail) for name, opened_at, detail in rows}

    async def open_incident(self, name: str, detail: str, at: float, audit: Audit) -> bool:
        """Open the incident; True for the one caller (of any replica) that did, who then alerts."""
        async with self.db.transaction() as tx:
            opened = await tx.fetch(
                "INSERT INTO incidents (name, opened_at, detail) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING RETURNING name",
                name,
                at,
                detail,
            )
            if opened:
                await record_audit(tx, at, audit, None, {"incident": name, "detail": detail})
        return bool(opened)

    async def close_incident(self, name: str, at: float, audit: Audit) -> float | None:
        """Close the incident; when it was opened, for the one caller that closed it, else None."""
        async with self.db.transaction() as tx:
            closed = await tx.fetch("DELETE FROM incidents WHERE name = ? RETURNING opened_at", name)
            if closed:
                await record_audit(tx, at, audit, None, {"incident": name, "open_seconds": round(at - closed[0][0], 3)})
        return closed[0][0] if closed else None

    async def failed_deliveries(self, since: float, limit: int = 10) -> list[tuple[str, str, str | None]]:
        """(kind, target, reason) of outgoing actions that ended failed since `since`, newest first; the
        inbox's own alerts (idempotency keys `alert:…`) are not among them."""
        rows = await self.db.fetch(
            "SELECT d.kind, d.target, d.reason FROM deliveries d "
            "LEFT JOIN notifications n ON d.kind = 'notification' AND n.id = d.ref_id "
            "WHERE d.status = 'failed' AND d.finished_at >= ? "
            "AND (n.idempotency_key IS NULL OR n.idempotency_key NOT LIKE 'alert:%') ORDER BY d.id DESC LIMIT ?",
            since,
            limit,
        )
        return [(kind, target, reason) for kind, target, reason in rows]

    async def claim_turn(self, key: str, now: float, every_seconds: float) -> bool:
        """True for the one caller, of any replica, whose turn it is to do the work named `key` (at most once
        every `every_seconds`)."""
        async with self.db.transaction() as tx:
            claimed = await tx.fetch(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value "
                "WHERE CAST(state.value AS DOUBLE PRECISION) <= ? RETURNING key",
                key,
                repr(now),
                now - every_seconds,
            )
        return bool(claimed)

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
                    # The newest line stays: on SQLite, numbers continue from the highest one left.
                    await tx.execute(
                        "DELETE FROM changes WHERE seq <= ? AND seq < (SELECT max(seq) FROM changes)", prune_upto
                    )
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

    # -- OAuth (issue #18): clients, consent requests, codes and tokens; secrets only as digests --------------

    async def add_oauth_client(self, client_id: str, metadata: str, at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO oauth_clients (client_id, metadata, registered_at) VALUES (?, ?, ?)",
                client_id,
                metadata,
                at,
            )

    async def oauth_client(self, client_id: str) -> str | None:
        """A registered client's metadata (JSON), or None."""
        rows = await self.db.fetch("SELECT metadata FROM oauth_clients WHERE client_id = ?", client_id)
        return str(rows[0][0]) if rows else None

    async def prune_oauth_clients(self, registered_before: float) -> int:
        """Forget registered clients that never got a token and registered before then; how many. Registration
        is open to anyone, so what nobody used must not stay."""
        async with self.db.transaction() as tx:
            pruned = await tx.fetch(
                "DELETE FROM oauth_clients WHERE registered_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM oauth_tokens WHERE oauth_tokens.client_id = oauth_clients.client_id) "
                "RETURNING client_id",
                registered_before,
            )
        return len(pruned)

    async def add_oauth_request(self, request_hash: str, client_id: str, params: str, expires_at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM oauth_requests WHERE expires_at < ?", time.time())
            await tx.execute(
                "INSERT INTO oauth_requests (request_hash, client_id, params, expires_at) VALUES (?, ?, ?, ?)",
                request_hash,
                client_id,
                params,
                expires_at,
            )

    async def oauth_request(self, request_hash: str, now: float) -> OAuthRequest | None:
        rows = await self.db.fetch(
            "SELECT client_id, params, expires_at FROM oauth_requests WHERE request_hash = ? AND expires_at > ?",
            request_hash,
            now,
        )
        return OAuthRequest(str(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None

    async def take_oauth_request(self, request_hash: str, now: float) -> OAuthRequest | None:
        """The request, removed, so that one consent answers it once; None when unknown, answered or expired."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "DELETE FROM oauth_requests WHERE request_hash = ? RETURNING client_id, params, expires_at",
                request_hash,
            )
        if not rows or float(rows[0][2]) <= now:
            return None
        return OAuthRequest(str(rows[0][0]), str(rows[0][1]), float(rows[0][2]))

    async def add_oauth_code(
        self, code_hash: str, client_id: str, grant_id: str, params: str, expires_at: float
    ) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM oauth_codes WHERE expires_at < ?", time.time() - CODE_REPLAY_MEMORY_SECONDS)
            await tx.execute(
                "INSERT INTO oauth_codes (code_hash, client_id, grant_id, params, expires_at) VALUES (?, ?, ?, ?, ?)",
                code_hash,
                client_id,
                grant_id,
                params,
                expires_at,
            )

    async def oauth_code(self, code_hash: str) -> OAuthCode | None:
        rows = await self.db.fetch(
            "SELECT client_id, grant_id, params, expires_at, used_at FROM oauth_codes WHERE code_hash = ?", code_hash
        )
        if not rows:
            return None
        client_id, grant_id, params, expires_at, used_at = rows[0]
        return OAuthCode(str(client_id), str(grant_id), str(params), float(expires_at), used_at)

    async def redeem_oauth_code(self, code_hash: str, at: float, tokens: Sequence[NewOAuthToken]) -> bool:
        """Use the code up and store the tokens it buys, together; False (and nothing stored) when the code
        is unknown, expired or already used."""
        async with self.db.transaction() as tx:
            used = await tx.fetch(
                "UPDATE oauth_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL AND expires_at > ? "
                "RETURNING code_hash",
                at,
                code_hash,
                at,
            )
            if not used:
                return False
            await _add_oauth_tokens(tx, tokens)
        return True

    async def oauth_token(self, token_hash: str) -> OAuthToken | None:
        """The token with this digest, whatever its state."""
        rows = await self.db.fetch(f"SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE token_hash = ?", token_hash)
        return oauth_token(rows[0]) if rows else None

    async def rotate_oauth_refresh_token(self, token_hash: str, at: float, tokens: Sequence[NewOAuthToken]) -> bool:
        """Retire a usable refresh token and its grant's access tokens, and store the next pair, together;
        False (and nothing changed) when it is not usable."""
        async with self.db.transaction() as tx:
            retired = await tx.fetch(
                "UPDATE oauth_tokens SET rotated_at = ? WHERE token_hash = ? AND kind = 'refresh' "
                "AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > ? RETURNING grant_id",
                at,
                token_hash,
                at,
            )
            if not retired:
                return False
            await tx.execute(
                "UPDATE oauth_tokens SET revoked_at = ? WHERE grant_id = ? AND kind = 'access' AND revoked_at IS NULL",
                at,
                retired[0][0],
            )
            await _add_oauth_tokens(tx, tokens)
        return True

    async def touch_oauth_token(self, token_id: str, at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE oauth_tokens SET last_used_at = ? WHERE id = ?", at, token_id)

    async def revoke_oauth_grant(self, grant_id: str, at: float, audit: Audit | None = None) -> int:
        """Revoke every token descending from one consent; how many of them were still usable. With `audit`,
        the revocation is in the audit trail, written in the same transaction."""
        async with self.db.transaction() as tx:
            revoked = await tx.fetch(
                "UPDATE oauth_tokens SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL "
                "RETURNING rotated_at, expires_at",
                at,
                grant_id,
            )
            usable = sum(1 for rotated_at, expires_at in revoked if rotated_at is None and expires_at > at)
            if audit is not None:
                await record_audit(tx, at, audit, None, {"grant_id": grant_id, "revoked": usable})
        return usable

    async def revoke_oauth_token(self, token_id: str, at: float, audit: Audit | None = None) -> int | None:
        """Revoke the token with this public id and the rest of its grant (the client loses access, not one of
        its two tokens); None when no token has this id."""
        rows = await self.db.fetch("SELECT grant_id FROM oauth_tokens WHERE id = ?", token_id)
        return await self.revoke_oauth_grant(str(rows[0][0]), at, audit) if rows else None

    async def oauth_tokens(self, now: float | None = None) -> list[OAuthToken]:
        """The tokens still usable at `now`, newest first; every token ever issued when `now` is None. What
        `stripe-inbox tokens list` prints and a tokens page of the dashboard can render."""
        if now is None:
            rows = await self.db.fetch(f"SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens ORDER BY created_at DESC")
        else:
            rows = await self.db.fetch(
                f"SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE revoked_at IS NULL AND rotated_at IS NULL "
                "AND expires_at > ? ORDER BY created_at DESC",
                now,
            )
        return [oauth_token(row) for row in rows]


async def _approval(db: Transaction | Connector, row: Any) -> Approval:
    delivery_id, kind, ref_id, target, event_id, status, reason, created_at = row
    made = await _notifications(db, "n.id = ?", ref_id) if kind == "notification" else [None]
    opened = await _tickets(db, "t.id = ?", ref_id) if kind == "ticket" else [None]
    return Approval(
        id=delivery_id,
        kind=kind,
        target=target,
        event_id=event_id,
        created_at=utc(created_at),
        lapses_at=utc(created_at),  # the inbox, which knows the timeout, moves it on
        status=status,
        reason=reason,
        notification=made[0],
        ticket=opened[0],
    )


def _where(query: EventQuery, dialect: Dialect, scan: bool = False) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    parameters: list[Any] = []
    for column in FILTER_COLUMNS:
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            parameters.append(value)
    searched, values = search_where(query, dialect, scan)
    return where + searched, parameters + values


def _fact(event: StoredEvent) -> Fact:
    return Fact(event.id, event.type, event.object_id, event.object_status, event.created, event.seq)


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


async def _add_oauth_tokens(tx: Transaction, tokens: Sequence[NewOAuthToken]) -> None:
    for token in tokens:
        await tx.execute(
            "INSERT INTO oauth_tokens (id, token_hash, kind, grant_id, client_id, client_name, scopes, resource, "
            "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            token.id,
            token.token_hash,
            token.kind,
            token.grant_id,
            token.client_id,
            token.client_name,
            " ".join(token.scopes),
            token.resource,
            token.created_at,
            token.expires_at,
        )
