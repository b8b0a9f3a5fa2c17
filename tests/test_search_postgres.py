"""Search plans on PostgreSQL: a broad full-text page walks the events in seq order and a narrow one reads the
GIN index, with the same answers; amount and time ranges are counted and paged from their indexes alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.stores import search

from .conftest import SECRET
from .postgres import postgres_schema
from .test_search import T0, add, ids, made

pytestmark = pytest.mark.anyio


@pytest.fixture
async def inbox_url() -> AsyncIterator[tuple[Inbox, str]]:
    async with postgres_schema() as url, open_inbox(load_settings(db=url, webhook_secret=SECRET)) as inbox:
        yield inbox, url


def record_statements(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every read the store makes from now on."""
    statements: list[str] = []
    connector: Any = inbox.store.db  # type: ignore[attr-defined]
    read = connector.fetch

    async def recording(sql: str, *parameters: Any) -> Any:
        statements.append(sql)
        return await read(sql, *parameters)

    monkeypatch.setattr(connector, "fetch", recording)
    return statements


async def every_page(inbox: Inbox, **filters: Any) -> tuple[list[str], int]:
    """Every event found, page after page through the cursor, and the first page's total."""
    found: list[str] = []
    page = await inbox.list_events("all", limit=7, **filters)
    total = page.total
    while True:
        found += ids(page)
        if page.next_cursor is None:
            return found, total
        page = await inbox.list_events("all", limit=7, cursor=page.next_cursor, **filters)


async def test_a_broad_full_text_page_walks_the_events_and_a_narrow_one_reads_the_index_alike(
    inbox_url: tuple[Inbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, _ = inbox_url
    events = [made("invoice.paid", T0 + n, description="monthly plan") for n in range(30)]
    events += [made("invoice.created", T0 + n, description="monthly plan") for n in range(10)]
    events += [made("invoice.paid", T0 + n, description="yearly plan") for n in range(20)]
    events.append(made("invoice.paid", T0, description="special offer"))
    await add(inbox, *events)
    monthly = [event["id"] for event in reversed(events[:40])]  # newest first
    paid_monthly = [event["id"] for event in reversed(events[:30])]
    statements = record_statements(inbox, monkeypatch)

    # 40 matches of 61 events: a walk meets a page of 7 within a dozen rows.
    assert await every_page(inbox, query="monthly") == (monthly, 40)
    assert await every_page(inbox, query="month", type="invoice.paid") == (paid_monthly, 30)
    assert all("ts_match_vq" in sql for sql in statements if "ORDER BY seq DESC LIMIT" in sql)
    statements.clear()
    assert ids(await inbox.list_events("all", query="special")) == [events[-1]["id"]]
    assert not any("ts_match_vq" in sql for sql in statements)

    monkeypatch.setattr(search, "RANDOM_READ_COST", 0)  # the index for every search: the same answers
    statements.clear()
    assert await every_page(inbox, query="monthly") == (monthly, 40)
    assert await every_page(inbox, query="month", type="invoice.paid") == (paid_monthly, 30)
    assert not any("ts_match_vq" in sql for sql in statements)


async def test_a_walk_that_meets_no_match_where_the_count_expects_them_gives_way_to_the_index(
    inbox_url: tuple[Inbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matches all among the oldest events: a walk from the newest would read every event before the first."""
    inbox, _ = inbox_url
    old = [made("invoice.paid", T0 + n, description="legacy plan") for n in range(40)]
    current = [made("invoice.paid", T0 + n, description="current plan") for n in range(200)]
    await add(inbox, *old, *current)
    statements = record_statements(inbox, monkeypatch)
    newest = await inbox.list_events("all", query="legacy", limit=2)
    assert ids(newest) == [old[-1]["id"], old[-2]["id"]]
    pages = [sql for sql in statements if "ORDER BY seq DESC LIMIT" in sql or "ORDER BY seq + 0 DESC LIMIT" in sql]
    assert ["ts_match_vq" in sql for sql in pages] == [True, False]  # the walk, then the index
    statements.clear()
    oldest_pending = await inbox.list_events("pending", query="current", limit=2)  # oldest first: the same
    assert ids(oldest_pending) == [current[0]["id"], current[1]["id"]]
    assert ["ts_match_vq" in sql for sql in statements if " LIMIT ?) ORDER BY seq ASC" in sql] == [True, False]


async def test_a_cursor_past_every_match_ends_a_walk_with_an_empty_page(inbox_url: tuple[Inbox, str]) -> None:
    inbox, _ = inbox_url
    events = [made("invoice.paid", T0 + n, description="weekly plan") for n in range(12)]
    await add(inbox, *events)
    first = await inbox.list_events("all", query="weekly", limit=12)
    assert (len(first.events), first.next_cursor) == (12, None)
    oldest = await inbox.store.get_event(events[0]["id"])
    assert oldest is not None
    past = await inbox.list_events("all", query="weekly", cursor=str(oldest.seq))
    assert (past.events, past.next_cursor) == ([], None)


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ("currency = 'usd' AND amount >= 1000 AND amount <= 5000", "events_amount"),
        ("created >= 1767225600 AND created < 1767312000", "events_created"),
    ],
)
async def test_a_range_is_counted_and_its_seqs_read_from_its_index_alone(
    inbox_url: tuple[Inbox, str], filters: str, index: str
) -> None:
    import asyncpg

    inbox, url = inbox_url
    await add(inbox, *(made("invoice.paid", T0 + n * 60, amount_due=900 + n * 100) for n in range(50)))
    db = await asyncpg.connect(url)
    try:
        await db.execute("VACUUM ANALYZE events")  # sets the visibility map, as autovacuum does
        await db.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")  # the planner's choice at scale
        for sql in (  # the count, and the seqs a narrow range's page is sorted from
            f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {filters} LIMIT 10001) AS matched",
            f"SELECT seq FROM events WHERE {filters}",
        ):
            plan = "\n".join(row[0] for row in await db.fetch(f"EXPLAIN {sql}"))
            assert f"Index Only Scan using {index} on events" in plan, plan
    finally:
        await db.close()
    page = await inbox.list_events("all", amount_gte=10, amount_lte=50, currency="usd")
    assert page.total == 41  # 1000 to 5000 cents in steps of 100


async def test_the_inbox_runs_no_parallel_workers_for_its_bounded_reads(inbox_url: tuple[Inbox, str]) -> None:
    inbox, _ = inbox_url
    rows = await inbox.store.db.fetch("SHOW max_parallel_workers_per_gather")  # type: ignore[attr-defined]
    assert rows[0][0] == "0"
