"""Read-your-writes: what a search, a timeline, resolution or classify answers is consistent with every event
list_events already shows, at once (no sleep, no retry), in-process and through a real `serve`, `stripe-inbox mcp`
over stdio and the CLI; and under overload (a queue too long to index on a read) a read answers at once, says
how many events the index lacks, and resolution is still right."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stripe_inbox import Inbox, load_settings, open_inbox, search_indexer
from stripe_inbox.events import IncomingEvent

from .conftest import SECRET, encode, make_event
from .test_store import db  # noqa: F401  # the database fixture: SQLite and PostgreSQL

pytestmark = pytest.mark.anyio


@pytest.fixture
async def inbox(db: str) -> AsyncIterator[Inbox]:  # noqa: F811
    async with open_inbox(load_settings(db=db, webhook_secret=SECRET)) as opened:
        yield opened


def invoice_pair(email: str, words: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An invoice's payment_failed and then its invoice.paid, a minute later by Stripe's clock."""
    failed = make_event("invoice.payment_failed", created=int(time.time()) - 60)
    failed["data"]["object"]["customer_email"] = email
    paid = make_event("invoice.paid")
    paid["data"]["object"] = {**failed["data"]["object"], "description": words, "status": "paid"}
    return failed, paid


async def store(inbox: Inbox, *events: dict[str, Any]) -> None:
    """Stored as the ingress stores them: only queued for the search index."""
    await inbox.accept([IncomingEvent.parse(encode(event)) for event in events])


async def filler(inbox: Inbox, count: int) -> None:
    await inbox.accept([IncomingEvent.parse(encode(make_event("charge.succeeded"))) for _ in range(count)])


async def test_a_read_first_indexes_what_is_queued_when_it_is_little(inbox: Inbox) -> None:
    failed, paid = invoice_pair("ryw@example.com", "quarterly renewal")
    invoice = failed["data"]["object"]["id"]
    await store(inbox, failed)
    await store(inbox, paid)
    assert await inbox.store.unindexed() == 2  # nothing indexed them yet: the read does
    page = await inbox.list_events("all", query="quarterly")
    assert ([e.id for e in page.events], page.unindexed) == ([paid["id"]], 0)
    assert {e.id for e in (await inbox.list_events("all", object_id=invoice)).events} == {failed["id"], paid["id"]}
    assert len((await inbox.list_events("all", email="ryw@example.com")).events) == 2
    timeline = await inbox.timeline(invoice)
    assert ([e.id for e in timeline.events], timeline.unindexed) == ([failed["id"], paid["id"]], 0)
    assert timeline.events[0].superseded_by == paid["id"]
    classification = await inbox.classify(failed["id"], "test")
    assert classification.priority == "low" and paid["id"] in classification.summary
    assert [a.tool for a in classification.suggested_actions] == ["ack_event"]


async def test_under_overload_a_read_answers_at_once_and_resolution_is_still_right(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_indexer, "READ_CATCH_UP", 5)
    await filler(inbox, 6)  # more than a read indexes itself
    failed, paid = invoice_pair("burst@example.com", "burst plan")
    await store(inbox, failed)
    await store(inbox, paid)
    page = await inbox.list_events("all", query="burst")
    assert (page.events, page.unindexed) == ([], 8)  # not found, and the page says why
    timeline = await inbox.timeline(failed["data"]["object"]["id"])
    assert timeline.unindexed == 8
    pending = {e.id: e for e in (await inbox.list_events("pending", limit=100)).events}
    assert pending[failed["id"]].superseded_by == paid["id"] and not pending[paid["id"]].stale
    assert (await inbox.classify(failed["id"], "test")).priority == "low"
    assert await inbox.store.unindexed() == 8  # resolution read the queue; it indexed nothing


async def test_resolution_is_right_whether_the_events_are_indexed_or_not(inbox: Inbox) -> None:
    """The resolving event indexed and the failure queued, and the other way round; each time it arrived out
    of order (the paid one first), so the failure is stale as well as resolved."""
    for index_paid in (True, False):
        failed, paid = invoice_pair("mix@example.com", "mixed")
        await store(inbox, paid)
        if index_paid:
            await inbox.indexer.catch_up()
        await store(inbox, failed)
        if not index_paid:
            await inbox.indexer.catch_up()
        assert await inbox.store.unindexed() == (1 if index_paid else 0)
        first, second = await inbox.summaries([await inbox.event(failed["id"]), await inbox.event(paid["id"])])
        assert (first.superseded_by, first.stale) == (paid["id"], True)
        assert (second.superseded_by, second.stale) == (None, False)


async def test_readers_at_once_share_the_catch_up_and_index_each_event_once(inbox: Inbox) -> None:
    import anyio

    tag = secrets.token_hex(4)
    events = [make_event("invoice.paid") for _ in range(30)]
    for event in events:
        event["data"]["object"]["description"] = f"shared {tag}"
    await store(inbox, *events)
    found: list[int] = []

    async def search() -> None:
        found.append(len((await inbox.list_events("all", query=tag, limit=100)).events))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(search)
    assert found == [30] * 5 and await inbox.store.unindexed() == 0
    assert (await inbox.list_events("all", query=tag, limit=100)).total == 30  # each indexed once
