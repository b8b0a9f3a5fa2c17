"""The Store on an SQLite file: WAL, one writer, BEGIN IMMEDIATE, synchronous FULL, versioned schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import anyio.to_thread

from ..errors import NotFound, StoreUnavailable
from ..events import IncomingEvent
from ..models import AuditEntry, Classification, DeliveryStatus, Notification, Outcome, Priority, Ticket
from .interface import AddOutcome, Audit, Delivery, DeliveryKind, EventQuery, StoredEvent
from .rows import (
    AUDIT_SELECT,
    EVENT_COLUMNS,
    INSERTED_COLUMNS,
    NOTIFICATION_SELECT,
    TICKET_SELECT,
    IngestItem,
    answers,
    audit_entry,
    insert_rows,
    notification,
    outcome_audit,
    settle,
    stored_event,
    take_batch,
    ticket,
)
from .sqlite_schema import migrate

INSERT_EVENTS = f"""
    INSERT INTO events ({INSERTED_COLUMNS})
    VALUES {{values}}
    ON CONFLICT (id) DO UPDATE SET deliveries = deliveries + excluded.deliveries,
                                   last_delivery_at = excluded.last_delivery_at
    RETURNING id, deliveries
"""
INSERT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
CHECKPOINT_SECONDS = 1.0
WATCH_SECONDS = 0.2
CLAIMABLE = (
    "SELECT seq FROM events WHERE status = 'pending' AND (claim_expires_at IS NULL OR claim_expires_at < ?) "
    "ORDER BY seq LIMIT ?"
)


class SQLiteStore:
    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: str, lock_timeout_seconds: float
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = anyio.Lock()
        # Event inserts, the hot path, skip aiosqlite's hop per statement: a thread of their own batches them.
        self._ingest: queue.SimpleQueue[IngestItem | None] = queue.SimpleQueue()
        self._ingest_thread = threading.Thread(
            target=self._ingest_forever,
            args=(path, lock_timeout_seconds, asyncio.get_running_loop()),
            name="stripe-inbox-ingest",
            daemon=True,
        )
        self._ingest_thread.start()
        self._closing = threading.Event()
        self._checkpoint_thread = threading.Thread(
            target=self._checkpoint_forever, args=(path,), name="stripe-inbox-checkpoint", daemon=True
        )
        self._checkpoint_thread.start()

    @classmethod
    async def open(cls, path: str, lock_timeout_seconds: float = 5.0) -> SQLiteStore:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        opened: list[aiosqlite.Connection] = []
        try:
            opened.append(writer := await _connect(path, lock_timeout_seconds))
            await writer.execute("PRAGMA journal_mode = WAL")
            await migrate(writer)
            opened.append(reader := await _connect(path, lock_timeout_seconds))
        except BaseException as error:
            for connection in opened:
                await connection.close()
            if isinstance(error, sqlite3.Error):
                raise StoreUnavailable(f"cannot open the SQLite database {path}: {error}") from error
            raise
        return cls(writer, reader, path, lock_timeout_seconds)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise StoreUnavailable(f"the inbox database cannot be written: {error}") from error
            try:
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException as error:
                if self._writer.in_transaction:
                    with anyio.CancelScope(shield=True):
                        await self._writer.execute("ROLLBACK")
                if isinstance(error, sqlite3.Error):
                    raise StoreUnavailable(f"the inbox database cannot be written: {error}") from error
                raise

    async def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            async with self._reader.execute(sql, parameters) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as error:
            raise StoreUnavailable(f"the inbox database cannot be read: {error}") from error

    async def add_events(self, events: Sequence[IncomingEvent], received_at: float) -> list[AddOutcome]:
        """Group commit: deliveries that arrive while a transaction is being written share the next one,
        so one fsync makes many events durable; each caller still returns only after its own commit."""
        if not events:
            return []
        outcomes: asyncio.Future[list[AddOutcome]] = asyncio.get_running_loop().create_future()
        self._ingest.put((list(events), received_at, outcomes))
        return await outcomes

    def _ingest_forever(self, path: str, lock_timeout_seconds: float, loop: asyncio.AbstractEventLoop) -> None:
        """The ingest thread: its own connection, one transaction per batch of whatever is queued."""
        db = sqlite3.connect(path, isolation_level=None, timeout=lock_timeout_seconds, check_same_thread=False)
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it, off the commit path
        db.execute("PRAGMA temp_store = MEMORY")  # an upsert's statement journal: no temporary file per commit
        try:
            while (first := self._ingest.get()) is not None:
                batch = take_batch(first, self._ingest)
                try:
                    results: list[list[AddOutcome]] | Exception = _insert(db, batch)
                except Exception as error:  # a failed commit fails every delivery in it
                    results = error
                loop.call_soon_threadsafe(settle, batch, results)
        finally:
            db.close()

    def _checkpoint_forever(self, path: str) -> None:
        """Moves committed WAL pages into the database file every second. A commit that had to do it
        itself (SQLite's default) would stall every delivery waiting on that commit."""
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            while not self._closing.wait(CHECKPOINT_SECONDS):
                with contextlib.suppress(sqlite3.Error):  # busy now: the next round catches up
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    async def get_state(self, key: str) -> str | None:
        rows = await self._read("SELECT value FROM state WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    async def set_state(self, key: str, value: str | None) -> None:
        async with self._transaction() as db:
            if value is None:
                await db.execute("DELETE FROM state WHERE key = ?", (key,))
            else:
                await db.execute(
                    "INSERT INTO state (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    async def get_event(self, event_id: str) -> StoredEvent | None:
        rows = await self._read(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))
        return stored_event(rows[0]) if rows else None

    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        where, parameters = _where(query)
        if query.after is not None:
            where.append("seq < ?" if query.newest_first else "seq > ?")
            parameters.append(query.after)
        order = "DESC" if query.newest_first else "ASC"
        rows = await self._read(
            f"SELECT {EVENT_COLUMNS} FROM events {_sql_where(where)} ORDER BY seq {order} LIMIT ?",
            (*parameters, query.limit),
        )
        return [stored_event(row) for row in rows]

    async def count_events(self, query: EventQuery) -> int:
        where, parameters = _where(query)
        # Totals come from the counts the triggers keep; a customer's or account's events through their index.
        source = "count(*) FROM events" if query.customer or query.account else "coalesce(sum(n), 0) FROM event_counts"
        rows = await self._read(f"SELECT {source} {_sql_where(where)}", tuple(parameters))
        return int(rows[0][0])

    async def ack(
        self, event_id: str, outcome: Outcome, note: str | None, at: float, audit: Audit, holder: str | None = None
    ) -> tuple[StoredEvent, bool]:
        async with self._transaction() as db:
            event = await _get_in(db, event_id)
            if event.status == "acked":
                return event, False
            event.check_claim(holder, at)
            async with db.execute(
                f"UPDATE events SET status = 'acked', outcome = ?, note = ?, acked_at = ? WHERE id = ? "
                f"RETURNING {EVENT_COLUMNS}",
                (outcome, note, at, event_id),
            ) as cursor:
                acked = stored_event(await cursor.fetchone())  # type: ignore[arg-type]
            await _audit(db, at, audit, event_id, {"status": "acked", "outcome": outcome})
            return acked, True

    async def claim_events(self, holder: str, limit: int, lease_seconds: float, now: float) -> list[StoredEvent]:
        async with self._transaction() as db:
            async with db.execute(
                f"UPDATE events SET claimed_by = ?, claim_expires_at = ? WHERE seq IN ({CLAIMABLE}) "
                f"RETURNING {EVENT_COLUMNS}",
                (holder, now + lease_seconds, now, limit),
            ) as cursor:
                claimed = sorted((stored_event(row) for row in await cursor.fetchall()), key=lambda e: e.seq)
            for event in claimed:
                await _audit(db, now, Audit(holder, "claim_events", {"lease_seconds": lease_seconds}), event.id, {})
        return claimed

    async def set_classification(self, event_id: str, classification: Classification, at: float, audit: Audit) -> None:
        async with self._transaction() as db:
            async with db.execute(
                "UPDATE events SET classification = ? WHERE id = ?",
                (classification.model_dump_json(), event_id),
            ) as cursor:
                if cursor.rowcount != 1:
                    raise NotFound.event(event_id)
            await _audit(
                db,
                at,
                audit,
                event_id,
                {"category": classification.category, "priority": classification.priority},
            )

    async def add_ticket(
        self, event_id: str, title: str, body: str, priority: Priority, tracker: str | None, at: float, audit: Audit
    ) -> tuple[Ticket, bool]:
        async with self._transaction() as db:
            await _get_in(db, event_id)
            async with db.execute(
                "INSERT INTO tickets (event_id, title, body, priority, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id, title) DO NOTHING RETURNING id",
                (event_id, title, body, priority, at),
            ) as cursor:
                row = await cursor.fetchone()
            if row is not None:
                if tracker is not None:
                    await _queue(db, "ticket", row[0], tracker, event_id, at)
                await _audit(db, at, audit, event_id, {"ticket_id": row[0], "tracker": tracker})
            (ticket,) = await _tickets(db, "t.event_id = ? AND t.title = ?", (event_id, title))
        return ticket, row is not None

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
        async with self._transaction() as db:
            if event_id is not None:
                await _get_in(db, event_id)
            async with db.execute(
                "INSERT INTO notifications (event_id, channel, subject, message, recipient, idempotency_key, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                (event_id, channel, subject, message, recipient, idempotency_key, at),
            ) as cursor:
                row = await cursor.fetchone()
            if row is not None:
                await _queue(db, "notification", row[0], channel, event_id, at)
                await _audit(db, at, audit, event_id, {"notification_id": row[0], "queued": True})
            (notification,) = await _notifications(db, "n.idempotency_key = ?", (idempotency_key,))
        return notification, row is not None

    async def claim_deliveries(
        self, now: float, lease_seconds: float, limit: int, of: tuple[DeliveryKind, int] | None = None
    ) -> list[Delivery]:
        if of is None:
            chosen = (
                "SELECT id FROM deliveries WHERE (status = 'queued' AND next_attempt_at <= :now) "
                "OR (status = 'sending' AND lease_until < :now) ORDER BY next_attempt_at LIMIT :limit"
            )
        else:
            chosen = "SELECT id FROM deliveries WHERE kind = :kind AND ref_id = :ref_id AND status = 'queued'"
        kind, ref_id = of or (None, None)
        async with self._transaction() as db:
            async with db.execute(
                f"UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_until = :now + :lease "
                f"WHERE id IN ({chosen}) RETURNING id, kind, ref_id, target, event_id, attempts",
                {"now": now, "lease": lease_seconds, "limit": limit, "kind": kind, "ref_id": ref_id},
            ) as cursor:
                claimed = list(await cursor.fetchall())
            deliveries = []
            for delivery_id_, kind, ref_id, target, event_id, attempts in claimed:
                notifications = await _notifications(db, "n.id = ?", (ref_id,)) if kind == "notification" else [None]
                tickets = await _tickets(db, "t.id = ?", (ref_id,)) if kind == "ticket" else [None]
                event = await _get_in(db, event_id) if event_id is not None else None
                deliveries.append(Delivery(delivery_id_, kind, target, attempts, notifications[0], tickets[0], event))
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
        final = status in ("sent", "failed")
        async with self._transaction() as db:
            await db.execute(
                "UPDATE deliveries SET status = ?, reason = ?, next_attempt_at = coalesce(?, next_attempt_at), "
                "lease_until = NULL, finished_at = ? WHERE id = ?",
                (status, reason, next_attempt_at, at if final else None, delivery.id),
            )
            if delivery.ticket is not None and (tracker_id or tracker_url):
                await db.execute(
                    "UPDATE tickets SET tracker_id = ?, tracker_url = ? WHERE id = ?",
                    (tracker_id, tracker_url, delivery.ticket.id),
                )
            if final:
                await _audit(db, at, *outcome_audit(delivery, status, reason, tracker_url))

    async def next_delivery_at(self) -> float | None:
        rows = await self._read(
            "SELECT min(CASE status WHEN 'queued' THEN next_attempt_at ELSE lease_until END) FROM deliveries "
            "WHERE status IN ('queued', 'sending')"
        )
        return rows[0][0]

    async def notification(self, notification_id: int) -> Notification:
        (notification,) = await _notifications(self._reader, "n.id = ?", (notification_id,))
        return notification

    async def ticket(self, ticket_id: int) -> Ticket:
        (ticket,) = await _tickets(self._reader, "t.id = ?", (ticket_id,))
        return ticket

    async def tickets(self, event_id: str) -> list[Ticket]:
        return await _tickets(self._reader, "t.event_id = ?", (event_id,))

    async def notifications(self, event_id: str) -> list[Notification]:
        return await _notifications(self._reader, "n.event_id = ?", (event_id,))

    async def audit_trail(self, event_id: str) -> list[AuditEntry]:
        rows = await self._read(f"{AUDIT_SELECT} WHERE event_id = ? ORDER BY id", (event_id,))
        return [audit_entry(row) for row in rows]

    async def counts(self) -> list[tuple[str, str, int]]:
        rows = await self._read("SELECT status, type, n FROM event_counts WHERE n > 0 ORDER BY type")
        return [(row[0], row[1], row[2]) for row in rows]

    async def oldest_pending(self) -> float | None:
        rows = await self._read("SELECT received_at FROM events WHERE status = 'pending' ORDER BY seq LIMIT 1")
        return rows[0][0] if rows else None

    async def delivery_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "sending", "sent", "failed"), 0)
        counts.update(dict(await self._read("SELECT status, count(*) FROM deliveries GROUP BY status")))
        return counts

    async def prune(self, acked_before: float) -> int:
        async with self._transaction() as db:
            doomed = "SELECT id FROM events WHERE status = 'acked' AND acked_at < ?"
            for table in ("deliveries", "tickets", "notifications", "audit"):
                await db.execute(f"DELETE FROM {table} WHERE event_id IN ({doomed})", (acked_before,))
            async with db.execute(
                "DELETE FROM events WHERE status = 'acked' AND acked_at < ?", (acked_before,)
            ) as cursor:
                return cursor.rowcount

    async def watch_commits(self) -> AsyncIterator[None]:
        # SQLite tells no one of a commit: its data_version moves when another connection has committed.
        version = await self._read("PRAGMA data_version")
        while True:
            await anyio.sleep(WATCH_SECONDS)
            latest = await self._read("PRAGMA data_version")
            if latest[0][0] != version[0][0]:
                version = latest
                yield

    async def ping(self) -> None:
        await self._read("SELECT 1 FROM events LIMIT 1")

    async def close(self) -> None:
        self._ingest.put(None)
        self._closing.set()
        await anyio.to_thread.run_sync(self._ingest_thread.join)
        await anyio.to_thread.run_sync(self._checkpoint_thread.join)
        await self._reader.close()
        await self._writer.close()


async def _connect(path: str, lock_timeout_seconds: float) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a write never upgrades a read lock.
    db = await aiosqlite.connect(path, isolation_level=None, timeout=lock_timeout_seconds)
    await db.execute("PRAGMA synchronous = FULL")  # a 200 to Stripe promises the commit is on disk
    await db.execute("PRAGMA foreign_keys = ON")
    return db


def _where(query: EventQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    parameters: list[Any] = []
    for column in ("status", "type", "customer", "account"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            parameters.append(value)
    return where, parameters


def _sql_where(where: list[str]) -> str:
    return f"WHERE {' AND '.join(where)}" if where else ""


def _insert(db: sqlite3.Connection, batch: list[IngestItem]) -> list[list[AddOutcome]]:
    """One transaction for every delivery queued in `batch`; each caller's answers in its own list."""
    deliveries = [(events, received_at) for events, received_at, _ in batch]
    rows = insert_rows(deliveries)
    db.execute("BEGIN IMMEDIATE")
    try:
        returned = db.execute(
            INSERT_EVENTS.format(values=", ".join([INSERT_VALUES] * len(rows))),
            [value for row in rows for value in row],
        ).fetchall()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return answers(deliveries, returned)


async def _tickets(db: aiosqlite.Connection, where: str, parameters: tuple[Any, ...]) -> list[Ticket]:
    async with db.execute(f"{TICKET_SELECT} WHERE {where} ORDER BY t.id", parameters) as cursor:
        return [ticket(row) for row in await cursor.fetchall()]


async def _notifications(db: aiosqlite.Connection, where: str, parameters: tuple[Any, ...]) -> list[Notification]:
    async with db.execute(f"{NOTIFICATION_SELECT} WHERE {where} ORDER BY n.id", parameters) as cursor:
        return [notification(row) for row in await cursor.fetchall()]


async def _queue(
    db: aiosqlite.Connection, kind: str, ref_id: int, target: str, event_id: str | None, at: float
) -> None:
    await db.execute(
        "INSERT INTO deliveries (kind, ref_id, target, event_id, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (kind, ref_id, target, event_id, at, at),
    )


async def _get_in(db: aiosqlite.Connection, event_id: str) -> StoredEvent:
    async with db.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise NotFound.event(event_id)
    return stored_event(row)


async def _audit(
    db: aiosqlite.Connection, at: float, audit: Audit, event_id: str | None, result: dict[str, Any]
) -> None:
    await db.execute(
        "INSERT INTO audit (at, actor, action, event_id, arguments, result) VALUES (?, ?, ?, ?, ?, ?)",
        (at, audit.actor, audit.action, event_id, json.dumps(audit.arguments), json.dumps(result)),
    )
