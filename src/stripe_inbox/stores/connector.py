"""What the stores need of a database: statements run in and out of transactions, group commit, wake-ups when
another process commits, and the few clauses whose SQL really differs. Nothing here knows of events: what a
write says is the stores'."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .group_commit import BatchWrite

Row = Sequence[Any]
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class Dialect:
    """The clauses that differ between the databases; everything else is written once, with `?` parameters."""

    lock_row: str  # appended to a SELECT of the row a write transaction is about to change
    skip_locked: str  # appended to a SELECT of rows to claim, so concurrent claimers take different ones
    text_match: str  # a condition on text_source: the event's terms hold every term of the `?` full-text query
    # text_match as a test of each row read, no index serving it: a broad search walks text_source in seq order
    # and stops at its page. None where the full-text index yields its matches in seq order already (FTS5).
    text_scan: str | None
    text_source: str  # what a full-text search reads FROM, events among it, so the index leads
    text_seq: str  # the seq of text_source's rows, in whose order its index yields them
    # text_seq as an expression no index yields in order, where the full-text index yields no seq order: a narrow
    # search then sorts the matches the index yields, whatever the planner would guess of a walk in seq order.
    text_seq_sorted: str
    text_index: str  # what to count the matches of a full-text search with no other filter in
    text_query: Callable[[Sequence[str]], str]  # that query, from the words searched for (each a prefix)
    text_prefixes: bool  # the full-text index holds each term's prefixes as lexemes (indexing.with_prefixes)
    text_insert: str  # an INSERT of one event into the full-text index: its seq and its space-separated terms
    in_seq_order: str  # after a table name: read it in seq order, whatever index a range would suggest
    # Many rows in one statement: what follows an INSERT's column list for `count` rows of these column types,
    # and the parameters it takes, from the rows.
    bulk_rows: Callable[[Sequence[str], int], str]
    bulk_parameters: Callable[[Sequence[Sequence[Any]]], list[Any]]
    bulk_column: Callable[[list[Any]], list[Any]]  # bulk_parameters of one-column rows, from the column's values


class Transaction(Protocol):
    async def fetch(self, sql: str, *parameters: Any) -> list[Row]: ...

    async def execute(self, sql: str, *parameters: Any) -> None: ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for each of `rows`, prepared once."""
        ...


class Connector(Protocol):
    dialect: Dialect

    async def fetch(self, sql: str, *parameters: Any) -> list[Row]:
        """A read outside any transaction; StoreUnavailable when the database does not answer."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A write: committed when the block ends, rolled back when it raises; StoreUnavailable when the
        database cannot be written."""
        ...

    async def write_batched(self, work: Callable[[Transaction], Coroutine[Any, Any, Result]]) -> Result:
        """Run `work` in a write transaction. Where the database has one writer (SQLite), it shares the ingest's
        next group commit, so a frequent small write costs no commit of its own and never waits for the ingest's
        lock; `work` then runs on the ingest thread, so it may only use `tx` (which does not suspend)."""
        ...

    async def group_commit(self, write: BatchWrite, item: Any, size: int) -> Any:
        """`write`'s answer for `item`, once the transaction that wrote it, with whatever else callers queued
        meanwhile (up to a batch's size), is durable. Where the database has one writer (SQLite) `write` runs on the
        ingest thread, so it may only use its `tx` (which does not suspend)."""
        ...

    poll_seconds: float  # how often watchers ask commit_marker when nothing woke them

    async def commit_marker(self) -> object:
        """Something that differs after any other connection or process has committed."""
        ...

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` soon after another process commits, where the database says so (PostgreSQL's
        NOTIFY); elsewhere watchers poll commit_marker."""
        ...

    async def close(self) -> None: ...
