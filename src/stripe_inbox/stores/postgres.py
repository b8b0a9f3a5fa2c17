"""The Store on PostgreSQL, for several `serve` replicas and several agents on one inbox: group commit by
writer tasks, row locks with SKIP LOCKED for claims and the outbox, LISTEN/NOTIFY for wake-ups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

from ..errors import NotFound, StoreUnavailable
from ..events import IncomingEvent
from ..models import AuditEntry, Classification, DeliveryStatus, Notification, Outcome, Priority, Ticket
from .interface import AddOutcome, Audit, Delivery, DeliveryKind, EventQuery, StoredEvent
from .postgres_schema import migrate
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

DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
INSERT_EVENTS = f"""
    INSERT INTO events ({INSERTED_COLUMNS})
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[], $5::text[], $6::text[],
                         $7::text[], $8::bigint[], $9::text[], $10::bytea[], $11::float8[], $12::float8[],
                         $13::text[], $14::text[], $15::integer[])
    ON CONFLICT (id) DO UPDATE SET deliveries = events.deliveries + excluded.deliveries,
                                   last_delivery_at = excluded.last_delivery_at
    RETURNING id, deliveries
"""
CLAIM_EVENTS = f"""
    WITH chosen AS (
        SELECT seq FROM events
        WHERE status = 'pending' AND (claim_expires_at IS NULL OR claim_expires_at < $1)
        ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED
    )
    UPDATE events SET claimed_by = $3, claim_expires_at = $1::float8 + $4::float8 WHERE seq IN (SELECT seq FROM chosen)
    RETURNING {EVENT_COLUMNS}
"""
CLAIM_DELIVERIES = """
    WITH chosen AS ({chosen} FOR UPDATE SKIP LOCKED)
    UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_until = $1::float8 + $2::float8
    WHERE id IN (SELECT id FROM chosen) RETURNING id, kind, ref_id, target, event_id, attempts
"""
DUE_DELIVERIES = (
    "SELECT id FROM deliveries WHERE (status = 'queued' AND next_attempt_at <= $1) "
    "OR (status = 'sending' AND lease_until < $1) ORDER BY next_attempt_at LIMIT $3"
)
QUEUED_DELIVERY = "SELECT id FROM deliveries WHERE kind = $3 AND ref_id = $4 AND status = 'queued'"
WRITERS = 2  # while one batch waits for its commit, the next one is being written
LISTEN_CHECK_SECONDS = 1.0


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool, listener: asyncpg.Connection, dsn: str, channel: str) -> None:
        self._pool = pool
        self._listener = listener
        self._dsn = dsn
        self._channel = channel  # one per schema, so inboxes sharing a database do not wake each other
        self._commit = asyncio.Event()
        self._ingest: asyncio.Queue[IngestItem | None] = asyncio.Queue()
        self._writers = [asyncio.create_task(self._ingest_forever()) for _ in range(WRITERS)]

    @classmethod
    async def open(cls, dsn: str, lock_timeout_seconds: float = 5.0) -> PostgresStore:
        settings = {
            # A 200 promises the commit is on disk, whatever the server's default says.
            "synchronous_commit": "on",
            # A row lock held longer than this (another replica's stuck transaction) fails the write with a 503.
            "lock_timeout": f"{round(lock_timeout_seconds * 1000)}ms",
        }
        pool = listener = None
        try:
            pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10, server_settings=settings)
            async with pool.acquire() as db:
                await migrate(db)
                schema = await db.fetchval("SELECT current_schema()")
            channel = f"stripe_inbox.{schema}"
            listener = await asyncpg.connect(dsn)
        except BaseException as error:
            if pool is not None:
                await pool.close()
            if isinstance(error, DB_ERRORS):
                raise StoreUnavailable(f"cannot open the PostgreSQL database {_safe(dsn)}: {error}") from error
            raise
        store = cls(pool, listener, dsn, channel)
        await listener.add_listener(channel, store._notified)
        return store

    # -- ingest: group commit --------------------------------------------------------------------

    async def add_events(self, events: Sequence[IncomingEvent], received_at: float) -> list[AddOutcome]:
        """Group commit: deliveries that arrive while a batch is being committed share the next one;
        each caller returns only after the commit that holds its events."""
        if not events:
            return []
        outcomes: asyncio.Future[list[AddOutcome]] = asyncio.get_running_loop().create_future()
        self._ingest.put_nowait((list(events), received_at, outcomes))
        return await outcomes

    async def _ingest_forever(self) -> None:
        while (first := await self._ingest.get()) is not None:
            batch = take_batch(first, self._ingest)
            try:
                results: list[list[AddOutcome]] | Exception = await self._insert(
                    [(events, received_at) for events, received_at, _ in batch]
                )
            except Exception as error:  # a failed commit fails every delivery in it
                results = error
            settle(batch, results)

    async def _insert(self, deliveries: list[tuple[list[IncomingEvent], float]]) -> list[list[AddOutcome]]:
        columns = list(zip(*insert_rows(deliveries), strict=True))
        for attempt in range(3):
            try:
                async with self._pool.acquire() as db, db.transaction():
                    returned = await db.fetch(INSERT_EVENTS, *columns)
                    await db.execute("SELECT pg_notify($1, '')", self._channel)
                return answers(deliveries, returned)
            except asyncpg.DeadlockDetectedError:  # rows are locked in id order, but to be safe
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- reading ---------------------------------------------------------------------------------

    async def _fetch(self, sql: str, *parameters: Any) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(sql, *parameters)
        except DB_ERRORS as error:
            raise StoreUnavailable(f"the inbox database cannot be read: {error}") from error

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A write; its commit wakes every replica's watchers."""
        try:
            async with self._pool.acquire() as db, db.transaction():
                yield db
                await db.execute("SELECT pg_notify($1, '')", self._channel)
        except DB_ERRORS as error:
            raise StoreUnavailable(f"the inbox database cannot be written: {error}") from error

    async def get_event(self, event_id: str) -> StoredEvent | None:
        rows = await self._fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = $1", event_id)
        return stored_event(rows[0]) if rows else None

    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        where, parameters = _where(query)
        if query.after is not None:
            parameters.append(query.after)
            where.append(f"seq {'<' if query.newest_first else '>'} ${len(parameters)}")
        parameters.append(query.limit)
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM events {_sql_where(where)} "
            f"ORDER BY seq {'DESC' if query.newest_first else 'ASC'} LIMIT ${len(parameters)}",
            *parameters,
        )
        return [stored_event(row) for row in rows]

    async def count_events(self, query: EventQuery) -> int:
        where, parameters = _where(query)
        # Totals come from the counts the triggers keep; a customer's or account's events through their index.
        source = "count(*) FROM events" if query.customer or query.account else "coalesce(sum(n), 0) FROM event_counts"
        rows = await self._fetch(f"SELECT {source} {_sql_where(where)}", *parameters)
        return int(rows[0][0])

    # -- acting ----------------------------------------------------------------------------------

    async def ack(
        self, event_id: str, outcome: Outcome, note: str | None, at: float, audit: Audit, holder: str | None = None
    ) -> tuple[StoredEvent, bool]:
        async with self._transaction() as db:
            event = await _get_in(db, event_id, lock=True)
            if event.status == "acked":
                return event, False
            event.check_claim(holder, at)
            row = await db.fetchrow(
                f"UPDATE events SET status = 'acked', outcome = $1, note = $2, acked_at = $3 WHERE id = $4 "
                f"RETURNING {EVENT_COLUMNS}",
                outcome,
                note,
                at,
                event_id,
            )
            await _audit(db, at, audit, event_id, {"status": "acked", "outcome": outcome})
            return stored_event(row), True

    async def claim_events(self, holder: str, limit: int, lease_seconds: float, now: float) -> list[StoredEvent]:
        async with self._transaction() as db:
            rows = await db.fetch(CLAIM_EVENTS, now, limit, holder, lease_seconds)
            claimed = sorted((stored_event(row) for row in rows), key=lambda event: event.seq)
            for event in claimed:
                await _audit(db, now, Audit(holder, "claim_events", {"lease_seconds": lease_seconds}), event.id, {})
        return claimed

    async def set_classification(self, event_id: str, classification: Classification, at: float, audit: Audit) -> None:
        async with self._transaction() as db:
            updated = await db.execute(
                "UPDATE events SET classification = $1 WHERE id = $2", classification.model_dump_json(), event_id
            )
            if updated != "UPDATE 1":
                raise NotFound.event(event_id)
            result = {"category": classification.category, "priority": classification.priority}
            await _audit(db, at, audit, event_id, result)

    async def add_ticket(
        self, event_id: str, title: str, body: str, priority: Priority, tracker: str | None, at: float, audit: Audit
    ) -> tuple[Ticket, bool]:
        async with self._transaction() as db:
            await _get_in(db, event_id)
            ticket_id = await db.fetchval(
                "INSERT INTO tickets (event_id, title, body, priority, created_at) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (event_id, title) DO NOTHING RETURNING id",
                event_id,
                title,
                body,
                priority,
                at,
            )
            if ticket_id is not None:
                if tracker is not None:
                    await _queue(db, "ticket", ticket_id, tracker, event_id, at)
                await _audit(db, at, audit, event_id, {"ticket_id": ticket_id, "tracker": tracker})
            (made,) = await _tickets(db, "t.event_id = $1 AND t.title = $2", event_id, title)
        return made, ticket_id is not None

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
            notification_id = await db.fetchval(
                "INSERT INTO notifications (event_id, channel, subject, message, recipient, idempotency_key, "
                "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING "
                "RETURNING id",
                event_id,
                channel,
                subject,
                message,
                recipient,
                idempotency_key,
                at,
            )
            if notification_id is not None:
                await _queue(db, "notification", notification_id, channel, event_id, at)
                await _audit(db, at, audit, event_id, {"notification_id": notification_id, "queued": True})
            (made,) = await _notifications(db, "n.idempotency_key = $1", idempotency_key)
        return made, notification_id is not None

    # -- the outbox ------------------------------------------------------------------------------

    async def claim_deliveries(
        self, now: float, lease_seconds: float, limit: int, of: tuple[DeliveryKind, int] | None = None
    ) -> list[Delivery]:
        chosen = DUE_DELIVERIES if of is None else QUEUED_DELIVERY
        kind, ref_id = of or (None, None)
        parameters = (now, lease_seconds, limit) if of is None else (now, lease_seconds, kind, ref_id)
        async with self._transaction() as db:
            claimed = await db.fetch(CLAIM_DELIVERIES.format(chosen=chosen), *parameters)
            deliveries = []
            for delivery_id, kind, ref_id, target, event_id, attempts in sorted(claimed, key=lambda row: row[0]):
                made = await _notifications(db, "n.id = $1", ref_id) if kind == "notification" else [None]
                opened = await _tickets(db, "t.id = $1", ref_id) if kind == "ticket" else [None]
                event = await _get_in(db, event_id) if event_id is not None else None
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
        final = status in ("sent", "failed")
        async with self._transaction() as db:
            await db.execute(
                "UPDATE deliveries SET status = $1, reason = $2, next_attempt_at = coalesce($3, next_attempt_at), "
                "lease_until = NULL, finished_at = $4 WHERE id = $5",
                status,
                reason,
                next_attempt_at,
                at if final else None,
                delivery.id,
            )
            if delivery.ticket is not None and (tracker_id or tracker_url):
                await db.execute(
                    "UPDATE tickets SET tracker_id = $1, tracker_url = $2 WHERE id = $3",
                    tracker_id,
                    tracker_url,
                    delivery.ticket.id,
                )
            if final:
                await _audit(db, at, *outcome_audit(delivery, status, reason, tracker_url))

    async def next_delivery_at(self) -> float | None:
        rows = await self._fetch(
            "SELECT min(CASE status WHEN 'queued' THEN next_attempt_at ELSE lease_until END) FROM deliveries "
            "WHERE status IN ('queued', 'sending')"
        )
        return rows[0][0]

    async def notification(self, notification_id: int) -> Notification:
        (made,) = await _notifications(self._pool, "n.id = $1", notification_id)
        return made

    async def ticket(self, ticket_id: int) -> Ticket:
        (opened,) = await _tickets(self._pool, "t.id = $1", ticket_id)
        return opened

    async def tickets(self, event_id: str) -> list[Ticket]:
        return await _tickets(self._pool, "t.event_id = $1", event_id)

    async def notifications(self, event_id: str) -> list[Notification]:
        return await _notifications(self._pool, "n.event_id = $1", event_id)

    async def audit_trail(self, event_id: str) -> list[AuditEntry]:
        rows = await self._fetch(f"{AUDIT_SELECT} WHERE event_id = $1 ORDER BY id", event_id)
        return [audit_entry(row) for row in rows]

    # -- upkeep ----------------------------------------------------------------------------------

    async def counts(self) -> list[tuple[str, str, int]]:
        rows = await self._fetch(
            "SELECT status, type, sum(n)::bigint FROM event_counts "
            "GROUP BY status, type HAVING sum(n) > 0 ORDER BY type"
        )
        return [(row[0], row[1], row[2]) for row in rows]

    async def oldest_pending(self) -> float | None:
        rows = await self._fetch("SELECT received_at FROM events WHERE status = 'pending' ORDER BY seq LIMIT 1")
        return rows[0][0] if rows else None

    async def delivery_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "sending", "sent", "failed"), 0)
        counts.update(
            {row[0]: row[1] for row in await self._fetch("SELECT status, count(*) FROM deliveries GROUP BY status")}
        )
        return counts

    async def prune(self, acked_before: float) -> int:
        async with self._transaction() as db:
            doomed = "SELECT id FROM events WHERE status = 'acked' AND acked_at < $1"
            for table in ("deliveries", "tickets", "notifications", "audit"):
                await db.execute(f"DELETE FROM {table} WHERE event_id IN ({doomed})", acked_before)
            deleted = await db.execute("DELETE FROM events WHERE status = 'acked' AND acked_at < $1", acked_before)
        return int(deleted.split()[-1])

    async def get_state(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM state WHERE key = $1", key)
        return rows[0][0] if rows else None

    async def set_state(self, key: str, value: str | None) -> None:
        async with self._transaction() as db:
            if value is None:
                await db.execute("DELETE FROM state WHERE key = $1", key)
            else:
                await db.execute(
                    "INSERT INTO state (key, value) VALUES ($1, $2) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    key,
                    value,
                )

    # -- wake-ups --------------------------------------------------------------------------------

    def _notified(self, *_: object) -> None:
        self._commit.set()
        self._commit = asyncio.Event()

    async def watch_commits(self) -> AsyncIterator[None]:
        while True:
            commit = self._commit
            with anyio.move_on_after(LISTEN_CHECK_SECONDS):
                await commit.wait()
            if commit.is_set():
                yield
            elif self._listener.is_closed():  # the server went away: listen again once it is back
                try:
                    self._listener = await _listen(self._dsn, self._channel, self._notified)
                except DB_ERRORS:
                    continue
                yield  # what was committed while no one listened

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def close(self) -> None:
        for _ in self._writers:
            self._ingest.put_nowait(None)
        await asyncio.gather(*self._writers)
        await self._listener.close()
        await self._pool.close()


async def _listen(dsn: str, channel: str, callback: Any) -> asyncpg.Connection:
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(channel, callback)
    return listener


def _safe(dsn: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def _where(query: EventQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    parameters: list[Any] = []
    for column in ("status", "type", "customer", "account"):
        value = getattr(query, column)
        if value is not None:
            parameters.append(value)
            where.append(f"{column} = ${len(parameters)}")
    return where, parameters


def _sql_where(where: list[str]) -> str:
    return f"WHERE {' AND '.join(where)}" if where else ""


async def _tickets(db: asyncpg.Connection | asyncpg.Pool, where: str, *parameters: Any) -> list[Ticket]:
    return [ticket(row) for row in await db.fetch(f"{TICKET_SELECT} WHERE {where} ORDER BY t.id", *parameters)]


async def _notifications(db: asyncpg.Connection | asyncpg.Pool, where: str, *parameters: Any) -> list[Notification]:
    rows = await db.fetch(f"{NOTIFICATION_SELECT} WHERE {where} ORDER BY n.id", *parameters)
    return [notification(row) for row in rows]


async def _queue(db: asyncpg.Connection, kind: str, ref_id: int, target: str, event_id: str | None, at: float) -> None:
    await db.execute(
        "INSERT INTO deliveries (kind, ref_id, target, event_id, next_attempt_at, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $5)",
        kind,
        ref_id,
        target,
        event_id,
        at,
    )


async def _get_in(db: asyncpg.Connection, event_id: str, lock: bool = False) -> StoredEvent:
    row = await db.fetchrow(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id = $1{' FOR UPDATE' if lock else ''}", event_id
    )
    if row is None:
        raise NotFound.event(event_id)
    return stored_event(row)


async def _audit(db: asyncpg.Connection, at: float, audit: Audit, event_id: str | None, result: dict[str, Any]) -> None:
    await db.execute(
        "INSERT INTO audit (at, actor, action, event_id, arguments, result) VALUES ($1, $2, $3, $4, $5, $6)",
        at,
        audit.actor,
        audit.action,
        event_id,
        json.dumps(audit.arguments),
        json.dumps(result),
    )
