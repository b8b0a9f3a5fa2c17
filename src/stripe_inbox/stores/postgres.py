"""PostgreSQL under the SQL store, for several `serve` replicas and several agents on one inbox: group
commit by writer tasks, row locks with SKIP LOCKED for claims and the outbox, LISTEN/NOTIFY for wake-ups."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ..errors import StoreUnavailable
from ..indexing import prefix_lexeme
from .connector import Dialect, Result, Row
from .group_commit import BatchWrite, Queued, settle, take_batch, written
from .postgres_schema import migrate

DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
WRITERS = 2  # while one batch waits for its commit, the next one is being written


def _query_lexeme(word: str) -> str:
    """A query word as a tsquery: the one prefix lexeme that finds it (an exact entry of the GIN index), or, for a
    word longer than those, the word as a prefix (few lexemes start with a long word)."""
    lexeme = prefix_lexeme(word)
    return f"'{word}':*" if lexeme is None else f"'{lexeme}'"


class PostgresTransaction:
    def __init__(self, db: asyncpg.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, *parameters: Any) -> list[Row]:
        return await self._db.fetch(numbered(sql), *parameters)  # type: ignore[no-any-return]

    async def execute(self, sql: str, *parameters: Any) -> None:
        await self._db.execute(numbered(sql), *parameters)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(numbered(sql), rows)


class PostgresConnector:
    dialect = Dialect(
        lock_row=" FOR UPDATE",
        skip_locked=" FOR UPDATE SKIP LOCKED",
        text_match="event_search.terms @@ CAST(? AS tsquery)",
        # The function behind @@, which the planner does not match to the GIN index: it reads the primary key.
        text_scan="ts_match_vq(event_search.terms, CAST(? AS tsquery))",
        text_source="event_search JOIN events USING (seq)",
        text_seq="seq",
        # Its estimate of a prefix query's matches can be far off: ordered by seq it may walk every event.
        text_seq_sorted="seq + 0",
        text_index="event_search",
        text_query=lambda words: " & ".join(_query_lexeme(word) for word in words),
        text_prefixes=True,
        # The terms as they are, no parser or dictionary: findable cut them as the queries are cut.
        text_insert="INSERT INTO event_search (seq, terms) VALUES (?, array_to_tsvector(string_to_array(?, ' ')))",
        in_seq_order="",  # its planner knows from its statistics how broad a range is
        # One array per column: the statement's text, and so its prepared plan, is the same for any count of rows.
        bulk_rows=lambda types, count: f"SELECT * FROM unnest({', '.join(f'CAST(? AS {kind}[])' for kind in types)})",
        bulk_parameters=lambda rows: [list(column) for column in zip(*rows, strict=True)],
        bulk_column=lambda values: [values],
    )
    poll_seconds = 1.0  # NOTIFY wakes watchers; this is how often the listener's health is checked

    def __init__(self, pool: asyncpg.Pool, listener: asyncpg.Connection, dsn: str, channel: str) -> None:
        self._pool = pool
        self._listener = listener
        self._dsn = dsn
        self._channel = channel  # one per schema, so inboxes sharing a database do not wake each other
        self._notifications = 0
        self._on_commit: list[Callable[[], None]] = []
        self._ingest: asyncio.Queue[Queued | None] = asyncio.Queue()
        self._writers = [asyncio.create_task(self._ingest_forever()) for _ in range(WRITERS)]

    @classmethod
    async def open(cls, dsn: str, lock_timeout_seconds: float = 5.0) -> PostgresConnector:
        settings = {
            # A 200 promises the commit is on disk, whatever the server's default says.
            "synchronous_commit": "on",
            # A row lock held longer than this (another replica's stuck transaction) fails the write with a 503.
            "lock_timeout": f"{round(lock_timeout_seconds * 1000)}ms",
            # Every read is a bounded page or count; starting workers for one costs more than it saves (17 ms
            # against 0.2 ms for a search whose prefix the planner thinks matches thousands of events).
            "max_parallel_workers_per_gather": "0",
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
        connector = cls(pool, listener, dsn, channel)
        await listener.add_listener(channel, connector._notified)
        return connector

    # -- ingest: group commit --------------------------------------------------------------------

    async def group_commit(self, write: BatchWrite, item: Any, size: int) -> Any:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ingest.put_nowait((write, item, size, answer))
        return await answer

    async def _ingest_forever(self) -> None:
        while (first := await self._ingest.get()) is not None:
            batch = take_batch(first, self._ingest)
            try:
                results: list[Any] | Exception = await self._commit(batch)
            except Exception as error:  # a failed commit fails every write in it
                results = error
            settle(batch, results)

    async def _commit(self, batch: list[Queued]) -> list[Any]:
        write, items = written(batch)
        if write is None:
            return [None] * len(batch)
        for attempt in range(3):
            try:
                async with self._pool.acquire() as db, db.transaction():
                    answers = await write(PostgresTransaction(db), [item[1] for item in items])
                    await db.execute("SELECT pg_notify($1, '')", self._channel)
                return answers
            except asyncpg.DeadlockDetectedError:  # rows are locked in id order, but to be safe
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- reading ---------------------------------------------------------------------------------

    async def fetch(self, sql: str, *parameters: Any) -> list[Row]:
        try:
            return await self._pool.fetch(numbered(sql), *parameters)  # type: ignore[no-any-return]
        except DB_ERRORS as error:
            raise StoreUnavailable(f"the inbox database cannot be read: {error}") from error

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """A write; its commit wakes every replica's watchers."""
        try:
            async with self._pool.acquire() as db, db.transaction():
                yield PostgresTransaction(db)
                await db.execute("SELECT pg_notify($1, '')", self._channel)
        except DB_ERRORS as error:
            raise StoreUnavailable(f"the inbox database cannot be written: {error}") from error

    async def write_batched(self, work: Callable[[PostgresTransaction], Coroutine[Any, Any, Result]]) -> Result:
        async with self.transaction() as tx:
            return await work(tx)

    # -- wake-ups --------------------------------------------------------------------------------

    def _notified(self, *_: object) -> None:
        self._notifications += 1
        for callback in self._on_commit:
            callback()

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._on_commit.append(callback)

    async def commit_marker(self) -> object:
        if self._listener.is_closed():  # the server went away: listen again once it is back
            try:
                self._listener = await _listen(self._dsn, self._channel, self._notified)
            except DB_ERRORS:
                return self._notifications
            self._notifications += 1  # what was committed while no one listened
        return self._notifications

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


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """The store's `?` parameters as PostgreSQL's $1, $2, …"""
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def open_connector(dsn: str, lock_timeout_seconds: float) -> PostgresConnector:
    return await PostgresConnector.open(dsn, lock_timeout_seconds)
