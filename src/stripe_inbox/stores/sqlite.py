"""SQLite under the SQL store: WAL, one writer, BEGIN IMMEDIATE, synchronous FULL, versioned schema."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import anyio.to_thread

from ..errors import StoreUnavailable
from .connector import Dialect, Result, Row
from .group_commit import BatchWrite, Queued, settle, take_batch, written
from .sqlite_schema import migrate

CHECKPOINT_SECONDS = 1.0


class SQLiteTransaction:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, *parameters: Any) -> list[Row]:
        return list(await self._db.execute_fetchall(sql, parameters))  # one hop to aiosqlite's thread, not three

    async def execute(self, sql: str, *parameters: Any) -> None:
        await self._db.execute(sql, parameters)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)


class ImmediateTransaction:
    """The ingest thread's connection as a Transaction: each statement runs as it is awaited, so a coroutine that
    awaits nothing else completes without suspending, and the ingest thread can drive it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, *parameters: Any) -> list[Row]:
        return self._db.execute(sql, parameters).fetchall()

    async def execute(self, sql: str, *parameters: Any) -> None:
        self._db.execute(sql, parameters)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)


Work = tuple[Callable[[ImmediateTransaction], Coroutine[Any, Any, Any]], "asyncio.Future[Any]"]


class SQLiteConnector:
    dialect = Dialect(  # BEGIN IMMEDIATE: one writer at a time holds the file
        lock_row="",
        skip_locked="",
        text_match="event_search MATCH ?",
        text_scan=None,
        text_source="event_search JOIN events ON events.seq = event_search.rowid",
        text_seq="event_search.rowid",
        text_seq_sorted="event_search.rowid",
        text_index="event_search",  # counting its matches alone skips a read of each event's row
        text_query=lambda words: " AND ".join(f'"{word}"*' for word in words),
        text_prefixes=False,  # FTS5 keeps its terms in order: a prefix is one range of its b-tree
        text_insert="INSERT INTO event_search (rowid, terms) VALUES (?, ?)",
        # SQLite keeps no statistics of a range's width: it would sort every match of a broad one.
        in_seq_order=" NOT INDEXED",
        bulk_rows=lambda types, count: "VALUES " + ", ".join([f"({', '.join('?' * len(types))})"] * count),
        bulk_parameters=lambda rows: [value for row in rows for value in row],
        bulk_column=lambda values: values,
    )
    poll_seconds = 0.2

    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: str, lock_timeout_seconds: float
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = anyio.Lock()
        # Event inserts, the hot path, skip aiosqlite's hop per statement: a thread of their own batches them.
        self._ingest: queue.SimpleQueue[Queued | None] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[Work] = queue.SimpleQueue()  # writes that ride the next group commit
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
    async def open(cls, path: str, lock_timeout_seconds: float = 5.0) -> SQLiteConnector:
        _create_private(Path(path).expanduser())
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
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise StoreUnavailable(f"the inbox database cannot be written: {error}") from error
            try:
                yield SQLiteTransaction(self._writer)
                await self._writer.execute("COMMIT")
            except BaseException as error:
                if self._writer.in_transaction:
                    with anyio.CancelScope(shield=True):
                        await self._writer.execute("ROLLBACK")
                if isinstance(error, sqlite3.Error):
                    raise StoreUnavailable(f"the inbox database cannot be written: {error}") from error
                raise

    async def fetch(self, sql: str, *parameters: Any) -> list[Row]:
        try:
            # One hop to aiosqlite's thread, not three (execute, fetchall, close): each hop hands the GIL over twice.
            return list(await self._reader.execute_fetchall(sql, parameters))
        except sqlite3.Error as error:
            raise StoreUnavailable(f"the inbox database cannot be read: {error}") from error

    async def group_commit(self, write: BatchWrite, item: Any, size: int) -> Any:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ingest.put((write, item, size, answer))
        return await answer

    async def write_batched(self, work: Callable[[ImmediateTransaction], Coroutine[Any, Any, Result]]) -> Result:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()
        self._work.put((work, done))
        self._ingest.put((None, None, 0, loop.create_future()))  # no write of its own: wakes the ingest thread
        return await done

    def _ingest_forever(self, path: str, lock_timeout_seconds: float, loop: asyncio.AbstractEventLoop) -> None:
        """The ingest thread: its own connection, one transaction per batch of whatever is queued."""
        db = sqlite3.connect(path, isolation_level=None, timeout=lock_timeout_seconds, check_same_thread=False)
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it, off the commit path
        db.execute("PRAGMA temp_store = MEMORY")  # an upsert's statement journal: no temporary file per commit
        try:
            while (first := self._ingest.get()) is not None:
                batch = take_batch(first, self._ingest)
                works = _drain(self._work)
                done: list[tuple[bool, Any]] | Exception
                try:
                    results, done = _commit(db, batch, works)
                except Exception as error:  # a failed commit fails every delivery and write in it
                    results = done = error
                loop.call_soon_threadsafe(settle, batch, results)
                if works:
                    loop.call_soon_threadsafe(_settle_work, works, done)
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

    async def commit_marker(self) -> object:
        # SQLite tells no one of a commit: its data_version moves when another connection has committed.
        (row,) = await self.fetch("PRAGMA data_version")
        return row[0]

    def on_commit(self, callback: Callable[[], None]) -> None:
        pass  # nothing to hear: watchers poll commit_marker

    async def close(self) -> None:
        self._ingest.put(None)
        self._closing.set()
        await anyio.to_thread.run_sync(self._ingest_thread.join)
        await anyio.to_thread.run_sync(self._checkpoint_thread.join)
        await self._reader.close()
        await self._writer.close()


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only, as the secret file beside it; SQLite gives its -wal
    and -shm files the database file's mode. An existing file keeps the mode its owner chose."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


async def _connect(path: str, lock_timeout_seconds: float) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a write never upgrades a read lock.
    db = await aiosqlite.connect(path, isolation_level=None, timeout=lock_timeout_seconds)
    await db.execute("PRAGMA synchronous = FULL")  # a 200 to Stripe promises the commit is on disk
    await db.execute("PRAGMA foreign_keys = ON")
    return db


def _commit(db: sqlite3.Connection, batch: list[Queued], works: list[Work]) -> tuple[list[Any], list[tuple[bool, Any]]]:
    """One transaction for every write queued in `batch` and the writes in `works`; each caller's answer (None for a
    wake-up) in batch order, and each work's (succeeded, result or error)."""
    write, items = written(batch)
    if not items and not works:
        return [None] * len(batch), []
    db.execute("BEGIN IMMEDIATE")
    try:
        answers = iter(_drive(write(ImmediateTransaction(db), [item[1] for item in items])) if write else [])
        done = [_run(db, work) for work, _ in works]
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return [None if queued[0] is None else next(answers) for queued in batch], done


def _drive(coroutine: Coroutine[Any, Any, Result]) -> Result:
    """A coroutine that awaits only an ImmediateTransaction, run to its end here, on the ingest thread."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a batched write may await only its transaction")


def _run(db: sqlite3.Connection, work: Callable[[ImmediateTransaction], Coroutine[Any, Any, Any]]) -> tuple[bool, Any]:
    """One write inside the ingest's transaction, under a savepoint: a write that fails leaves the rest whole."""
    db.execute("SAVEPOINT work")
    try:
        result = _drive(work(ImmediateTransaction(db)))
        db.execute("RELEASE work")
        return True, result
    except Exception as error:
        db.execute("ROLLBACK TO work")
        db.execute("RELEASE work")
        return False, error


def _drain(work: queue.SimpleQueue[Work]) -> list[Work]:
    taken = []
    while not work.empty():
        taken.append(work.get_nowait())
    return taken


def _settle_work(works: list[Work], done: list[tuple[bool, Any]] | Exception) -> None:
    for index, (_, future) in enumerate(works):
        if future.done():
            continue
        succeeded, value = (False, done) if isinstance(done, Exception) else done[index]
        if succeeded:
            future.set_result(value)
        elif isinstance(value, sqlite3.Error):
            future.set_exception(StoreUnavailable(f"the inbox database cannot be written: {value}"))
        else:
            future.set_exception(value)


async def open_connector(path: str, lock_timeout_seconds: float) -> SQLiteConnector:
    return await SQLiteConnector.open(path, lock_timeout_seconds)
