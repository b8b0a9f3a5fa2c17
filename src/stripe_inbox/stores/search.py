"""Search in SQL: the filters beyond status, type, customer and account as WHERE clauses, and the migration
step that reads the search columns of events stored before search existed out of their payloads."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from ..errors import DeliveryRejected
from ..events import IncomingEvent
from .connector import Dialect
from .interface import EventQuery

log = logging.getLogger("stripe_inbox")
BACKFILL_BATCH = 5000
PROGRESS_FROM = 20_000  # an upgrade of a smaller inbox is quick enough to pass unannounced
SEARCH_COUNT_CAP = 10_000  # a search counts its matches up to here: the count of a broad one would cost a scan
UPDATE_FACTS = "UPDATE events SET email = ?, object_status = ?, search_text = ?, related_ids = ? WHERE seq = ?"


class SearchFacts(str):
    """A migration step written in Python: fill the search columns of the events already stored. A str with
    no SQL in it, so a schema still reads as the text of its migrations."""

    __slots__ = ()


class Migration(Protocol):
    async def fetch(self, sql: str, *parameters: object) -> list[tuple[object, ...]]: ...

    async def execute_many(self, sql: str, rows: list[tuple[object, ...]]) -> None: ...


def search_where(query: EventQuery, dialect: Dialect) -> tuple[list[str], list[Any]]:
    """The clauses and parameters of `query`'s search filters."""
    where: list[str] = []
    parameters: list[Any] = []
    if query.words:
        where.append(dialect.text_match)
        parameters.append(dialect.text_query(query.words))
    if query.object_id is not None:
        where.append("seq IN (SELECT seq FROM event_objects WHERE object_id = ?)")
        parameters.append(query.object_id)
    for clause, value in (
        ("email = ?", query.email),
        ("currency = ?", query.currency),
        ("amount >= ?", query.amount_gte),
        ("amount <= ?", query.amount_lte),
        ("created >= ?", query.created_after),
        ("created < ?", query.created_before),
        ("livemode = ?", query.livemode),
    ):
        if value is not None:
            where.append(clause)
            parameters.append(value)
    return where, parameters


def related_ids_json(event: IncomingEvent) -> str:
    return json.dumps(list(event.related_ids))


async def backfill_search_facts(db: Migration) -> None:
    """Read each stored event's search columns out of its payload, in batches, saying how far it got."""
    ((counted,),) = await db.fetch("SELECT count(*) FROM events")
    total = int(counted)  # type: ignore[call-overload]
    done, last = 0, 0
    if total >= PROGRESS_FROM:
        log.info("indexing %s stored events for search (once, on upgrade)", f"{total:,}")
    batch = "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
    while rows := await db.fetch(batch, last, BACKFILL_BATCH):
        updates = []
        for seq, payload in rows:
            try:
                event = IncomingEvent.parse(bytes(payload))  # type: ignore[arg-type]
            except DeliveryRejected:
                continue  # stored before a check that rejects it now: it stays, unsearchable
            updates.append((event.email, event.object_status, event.search_text, related_ids_json(event), seq))
        await db.execute_many(UPDATE_FACTS, updates)
        done += len(rows)
        last = int(rows[-1][0])  # type: ignore[call-overload]
        if total >= PROGRESS_FROM:
            log.info("indexed %s of %s events", f"{done:,}", f"{total:,}")
