"""Search, timelines, and events that resolve each other: on SQLite and PostgreSQL alike, through the inbox,
MCP and the command line."""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from stripe_inbox import Inbox, load_settings, open_inbox, search_indexer
from stripe_inbox.errors import InvalidArgument
from stripe_inbox.events import IncomingEvent
from stripe_inbox.indexing import findable_payload
from stripe_inbox.mcp.server import create_mcp_server
from stripe_inbox.search_indexer import SearchIndexer
from stripe_inbox.stores import EventQuery, open_store, search

from .conftest import FIXTURES, SECRET, cli_env, encode, make_event, needs_fixtures, run_cli
from .postgres import postgres_schema
from .test_mcp import error_text, ok
from .test_store import db  # noqa: F401  # the database fixture: SQLite and PostgreSQL

pytestmark = pytest.mark.anyio
DAY = 86400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
async def inbox(db: str, tmp_path: Path) -> AsyncIterator[Inbox]:  # noqa: F811
    async with open_inbox(load_settings(db=db, webhook_secret=SECRET)) as opened:
        yield opened


def real(name: str, **fields: Any) -> dict[str, Any]:
    """A real Stripe payload from the shared fixtures, with a fresh event id and `fields` set on its object."""
    path = FIXTURES / "events" / f"{name}.stripe-ruby-mock.json"
    event = json.loads(path.read_text())
    event["id"] = "evt_" + secrets.token_hex(12)
    event["data"]["object"].update(fields)
    return event


def made(event_type: str, created: int = T0, **fields: Any) -> dict[str, Any]:
    """A small event (an invoice of USD 49.00 unless `fields` say otherwise)."""
    event = make_event(event_type, created=created)
    if "amount" in fields:
        del event["data"]["object"]["amount_due"]
    event["data"]["object"].update(fields)
    return event


async def add(inbox: Inbox, *events: dict[str, Any], received_at: float | None = None, index: bool = True) -> None:
    for event in events:  # one delivery each, so arrival order is the order given
        await inbox.store.add_events([IncomingEvent.parse(encode(event))], received_at or time.time())
    if index:  # what serve's indexer does within a second
        await inbox.indexer.catch_up()


def ids(page: Any) -> list[str]:
    return [event.id for event in page.events]


async def test_each_filter_alone(inbox: Inbox) -> None:
    jane = made("charge.succeeded", T0, id="ch_jane1", object="charge", amount=90000, receipt_email="Jane@Acme.com")
    cheap = made("charge.succeeded", T0 + DAY, id="ch_cheap", object="charge", amount=500)
    live = made("invoice.paid", T0 + 2 * DAY, livemode=True)
    live["livemode"] = True
    refers = made("charge.refunded", T0 + 3 * DAY, id="ch_other", object="charge", invoice="in_referred")
    await add(inbox, jane, cheap, live, refers)

    async def found(**filters: Any) -> list[str]:
        return ids(await inbox.list_events("all", **filters))

    assert await found(email="jane@acme.com") == [jane["id"]]  # e-mails compare without case
    assert await found(query="JANE@acme") == [jane["id"]]
    assert await found(object_id="ch_cheap") == [cheap["id"]]
    assert await found(object_id="in_referred") == [refers["id"]]  # through data.object.invoice
    assert await found(amount_gte=500) == [jane["id"]]  # one currency held: none needed
    assert await found(amount_lte=5, currency="USD") == [cheap["id"]]
    assert await found(amount_gte=5, amount_lte=49) == [refers["id"], live["id"], cheap["id"]]
    assert await found(created_after="2026-01-02", created_before="2026-01-03T00:00:00Z") == [cheap["id"]]
    assert await found(created_after="2026-01-03T01:00:00+02:00") == [refers["id"], live["id"]]
    assert await found(livemode=True) == [live["id"]]
    assert len(await found(livemode=False)) == 3


async def test_filters_combine_with_the_others_and_pages_keep_them(inbox: Inbox) -> None:
    await add(inbox, made("customer.created", id="cus_1", object="customer", amount_due=None, currency=None))
    assert ids(await inbox.list_events("all", amount_gte=0)) == []  # no event holds an amount
    customer = "cus_" + secrets.token_hex(6)
    mine = [made("invoice.payment_failed", T0 + n, customer=customer, amount_due=100_00 + n) for n in range(7)]
    others = [made("invoice.payment_failed", T0 + n, amount_due=100_00) for n in range(3)]
    paid = made("invoice.paid", T0 + 10, customer=customer, amount_due=100_00)
    await add(inbox, *mine, *others, paid)
    await inbox.ack(mine[0]["id"], "handled", None, "test")
    filters = {"customer": customer, "type": "invoice.payment_failed", "amount_gte": 100, "created_after": "2026-01-01"}
    first = await inbox.list_events("pending", limit=4, **filters)
    assert ids(first) == [event["id"] for event in mine[1:5]] and first.total == 6 and first.total_exact
    second = await inbox.list_events("pending", limit=4, cursor=first.next_cursor, **filters)
    assert ids(second) == [event["id"] for event in mine[5:]] and second.next_cursor is None and second.total == 6
    newest = await inbox.list_events("all", limit=3, query=customer, amount_lte=100.03)
    assert ids(newest) == [paid["id"], mine[3]["id"], mine[2]["id"]] and newest.total == 5
    rest = await inbox.list_events("all", limit=3, query=customer, amount_lte=100.03, cursor=newest.next_cursor)
    assert ids(rest) == [mine[1]["id"], mine[0]["id"]] and rest.next_cursor is None


@needs_fixtures
async def test_full_text_finds_an_email_a_decline_message_and_an_id_fragment(inbox: Inbox) -> None:
    fragment = secrets.token_hex(6)
    checkout = real("checkout.session.completed", id=f"cs_test_a1{fragment}Zq", customer_email="ada@lovelace.dev")
    declined = real("payment_intent.payment_failed", id="pi_" + secrets.token_hex(12))
    failed_charge = real("charge.failed", id="ch_" + secrets.token_hex(12), metadata={"order": "ORD-7731"})
    await add(inbox, checkout, declined, failed_charge)

    async def found(query: str) -> list[str]:
        return ids(await inbox.list_events("all", query=query))

    assert await found("ada@lovelace.dev") == [checkout["id"]]
    assert await found("lovelace") == [checkout["id"]]  # an e-mail's domain
    assert await found("card was declined") == [failed_charge["id"], declined["id"]]
    assert await found("generic_decline") == [failed_charge["id"], declined["id"]]
    assert await found(f"a1{fragment}") == [checkout["id"]]  # the end of an id, from its start
    assert await found(f"cs_test_a1{fragment[:4]}") == [checkout["id"]]
    assert await found(checkout["data"]["object"]["id"].upper()) == [checkout["id"]]
    assert await found(checkout["id"]) == [checkout["id"]]  # the event's own id
    assert await found("ord-7731") == [failed_charge["id"]]  # a metadata value
    assert await found("declined nosuchword") == []


@needs_fixtures
async def test_a_timeline_spans_an_invoice_and_what_refers_to_it(inbox: Inbox) -> None:
    invoice_id = "in_" + secrets.token_hex(12)
    steps = [
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_failed",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    events = [real(name, id=invoice_id) for name in steps]
    for offset, event in enumerate(events):
        event["created"] = T0 + offset * 60
    charge = real("charge.failed", id="ch_" + secrets.token_hex(12), invoice=invoice_id)
    charge["created"] = T0 + 90
    unrelated = real("invoice.paid", id="in_" + secrets.token_hex(12))
    # Stripe's order is not arrival order: invoice.paid came before the failure it resolves.
    await add(inbox, events[0], events[1], events[3], unrelated, events[2], charge, events[4])
    timeline = await inbox.timeline(invoice_id)
    in_stripe_order = [events[0], events[1], charge, events[2], events[3], events[4]]
    assert [e.id for e in timeline.events] == [event["id"] for event in in_stripe_order]
    assert timeline.object_id == invoice_id and not timeline.truncated
    assert ids(await inbox.list_events("all", object_id=invoice_id)) == [
        events[4]["id"],
        charge["id"],
        events[2]["id"],
        events[3]["id"],
        events[1]["id"],
        events[0]["id"],
    ]
    assert (await inbox.timeline("in_nothing")).events == []


@needs_fixtures
async def test_a_failed_invoice_is_superseded_once_paid_and_a_dispute_once_closed(inbox: Inbox) -> None:
    invoice_id, dispute_id = "in_" + secrets.token_hex(12), "du_" + secrets.token_hex(12)
    failed = real("invoice.payment_failed", id=invoice_id)
    failed["created"] = T0
    dispute = real("charge.dispute.created", id=dispute_id)
    dispute["created"] = T0
    await add(inbox, failed, dispute)
    before = {e.id: e for e in (await inbox.list_events()).events}
    assert before[failed["id"]].superseded_by is None and before[dispute["id"]].superseded_by is None
    assert (await inbox.classify(failed["id"], "test")).priority == "high"

    paid = real("invoice.paid", id=invoice_id)
    paid["created"] = T0 + 3600
    closed = real("charge.dispute.created", id=dispute_id, status="won")
    closed.update(type="charge.dispute.closed", created=T0 + 7 * DAY)
    await add(inbox, paid, closed)
    after = {e.id: e for e in (await inbox.list_events()).events}
    assert after[failed["id"]].superseded_by == paid["id"]
    assert after[dispute["id"]].superseded_by == closed["id"]
    assert after[paid["id"]].superseded_by is None and not after[paid["id"]].stale
    triage = await inbox.classify(failed["id"], "test")
    assert triage.priority == "low" and f"resolved by {paid['id']}" in triage.summary
    (action,) = triage.suggested_actions
    assert (action.tool, action.arguments) == (
        "ack_event",
        {"event_id": failed["id"], "outcome": "ignored", "note": f"resolved by {paid['id']}"},
    )


async def test_subscriptions_and_payment_intents_resolve_by_their_lifecycle(inbox: Inbox) -> None:
    sub, intent = "sub_" + secrets.token_hex(8), "pi_" + secrets.token_hex(8)
    past_due = made("customer.subscription.updated", T0, id=sub, object="subscription", status="past_due")
    trialing = made("customer.subscription.updated", T0 + 1, id=sub, object="subscription", status="trialing")
    active = made("customer.subscription.updated", T0 + 2, id=sub, object="subscription", status="active")
    action = made("payment_intent.requires_action", T0, id=intent, object="payment_intent")
    canceled = made("payment_intent.canceled", T0 + 5, id=intent, object="payment_intent")
    await add(inbox, past_due, trialing, active, action, canceled)
    resolved = {e.id: e.superseded_by for e in (await inbox.list_events()).events}
    assert resolved == {
        past_due["id"]: active["id"],
        trialing["id"]: None,  # not a state that needed resolving
        active["id"]: None,
        action["id"]: canceled["id"],
        canceled["id"]: None,
    }


async def test_an_event_delivered_after_a_newer_one_is_stale(inbox: Inbox) -> None:
    sub = "sub_" + secrets.token_hex(8)
    newer = made("customer.subscription.updated", T0 + 60, id=sub, object="subscription", status="active")
    older = made("customer.subscription.updated", T0, id=sub, object="subscription", status="past_due")
    other = made("customer.subscription.updated", T0, object="subscription", status="past_due")
    await add(inbox, newer, older, other)
    page = {e.id: e for e in (await inbox.list_events()).events}
    assert page[older["id"]].stale and page[older["id"]].superseded_by == newer["id"]
    assert not page[newer["id"]].stale and not page[other["id"]].stale
    claimed = {e.id: e.stale for e in (await inbox.claim("agent", 10, 60)).events}
    assert claimed == {newer["id"]: False, older["id"]: True, other["id"]: False}


async def test_bad_filter_values_name_their_argument(inbox: Inbox) -> None:
    await add(
        inbox,
        made("charge.succeeded", id="ch_1", object="charge", currency="usd"),
        made("charge.succeeded", id="ch_2", object="charge", currency="eur"),
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"created_after": "last tuesday"}, "created_after 'last tuesday' is not an ISO 8601"),
        ({"created_before": "2026-13-01"}, "created_before"),
        ({"created_after": "2026-02-01", "created_before": "2026-01-01"}, "created_after"),
        ({"amount_gte": -1, "currency": "usd"}, "amount_gte must be an amount of 0 or more"),
        ({"amount_lte": float("nan"), "currency": "usd"}, "amount_lte"),
        ({"amount_gte": 10, "amount_lte": 5, "currency": "usd"}, "amount_gte"),
        ({"amount_gte": 10}, "amount_gte needs currency: the events hold amounts in several currencies (eur, usd"),
        ({"currency": "dollars"}, "currency 'dollars' is not a three-letter"),
        ({"query": "!!!"}, "query '!!!' has no words"),
    ]
    for filters, message in cases:
        with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
            await inbox.list_events("all", **filters)
    (euros,) = (await inbox.list_events("all", amount_gte=10, currency="eur")).events
    assert euros.amount == "EUR 49.00" and ids(await inbox.list_events("all", amount_gte=50, currency="eur")) == []


async def test_totals_of_a_broad_search_are_counted_up_to_a_cap(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "TEXT_COUNT_CAP", 3)  # full text counts less far than other searches
    monkeypatch.setattr(search, "SEARCH_COUNT_CAP", 4)
    monkeypatch.setattr(importlib.import_module("stripe_inbox.stores.events"), "SEARCH_COUNT_CAP", 4)
    monthly = [made("invoice.paid", description="monthly plan", amount_due=100 + n) for n in range(6)]
    await add(inbox, *monthly)
    broad = await inbox.list_events("all", query="monthly", limit=2)
    assert (broad.total, broad.total_exact, len(broad.events)) == (3, False, 2)
    found, cursor = ids(broad), broad.next_cursor
    while cursor is not None:  # every page of a capped search is still read: the cap is the count's only
        page = await inbox.list_events("all", query="monthly", limit=2, cursor=cursor)
        found, cursor = found + ids(page), page.next_cursor
    assert found == [event["id"] for event in reversed(monthly)]
    ranged = await inbox.list_events("all", amount_gte=1, currency="usd", limit=2)
    assert (ranged.total, ranged.total_exact) == (4, False)
    narrow = await inbox.list_events("all", query="monthly", amount_lte=1.01, currency="usd")
    assert (narrow.total, narrow.total_exact) == (2, True)
    assert (await inbox.list_events("all")).total == 6  # no search: the exact count the triggers keep


async def test_pruning_removes_an_event_from_search_and_timelines(inbox: Inbox) -> None:
    gone = made("invoice.paid", description="quarterly plan")
    await add(inbox, gone)
    object_id = gone["data"]["object"]["id"]
    await inbox.ack(gone["id"], "handled", None, "test")
    assert ids(await inbox.list_events("all", query="quarterly")) == [gone["id"]]
    assert await inbox.prune(0) == 1
    assert ids(await inbox.list_events("all", query="quarterly")) == []
    assert (await inbox.timeline(object_id)).events == []


async def test_a_search_says_how_many_events_it_cannot_find_yet(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index is written off the path to the 200: under overload (a queue longer than a read indexes itself),
    an event is searchable once the indexer has run."""
    monkeypatch.setattr(search_indexer, "READ_CATCH_UP", 0)
    fresh = made("invoice.paid", description="annual plan")
    await add(inbox, fresh, index=False)
    object_id = fresh["data"]["object"]["id"]
    page = await inbox.list_events("all", query="annual")
    assert (ids(page), page.unindexed) == ([], 1)
    timeline = await inbox.timeline(object_id)  # its own object's events are read from the queue as well
    assert ([e.id for e in timeline.events], timeline.unindexed) == ([fresh["id"]], 1)
    assert (await inbox.list_events("all")).total == 1  # the inbox itself holds it already
    assert await inbox.indexer.catch_up() == 1
    page = await inbox.list_events("all", query="annual")
    assert (ids(page), page.unindexed) == ([fresh["id"]], 0)
    assert [e.id for e in (await inbox.timeline(object_id)).events] == [fresh["id"]]


async def test_indexers_in_several_processes_index_each_event_once(db: str) -> None:  # noqa: F811
    stores = [await open_store(db), await open_store(db)]
    try:
        events = [IncomingEvent.parse(encode(made("invoice.paid", description="shared plan"))) for _ in range(60)]
        await stores[0].add_events(events, time.time())
        while sum(await asyncio.gather(*(SearchIndexer(store).index_batch(7) for store in stores))):
            pass  # a key or full-text row written twice would break a primary key, or show in the count below
        found = await stores[1].list_events(EventQuery(status=None, words=("shared",), limit=100))
        assert sorted(event.id for event in found) == sorted(event.id for event in events)
        assert await stores[0].unindexed() == 0
    finally:
        for store in stores:
            await store.close()


@pytest.mark.parametrize("release", ["before search", "search on the commit path"])
async def test_upgrading_indexes_the_events_already_stored_with_progress(
    db: str,  # noqa: F811
    release: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    postgres = db.startswith("postgresql://")
    schema = importlib.import_module(f"stripe_inbox.stores.{'postgres' if postgres else 'sqlite'}_schema")
    current = schema.MIGRATIONS
    released = (3 if postgres else 5) if release == "before search" else current.index(schema.SEARCH_INDEX)
    monkeypatch.setattr(schema, "MIGRATIONS", current[:released])
    old = await open_store(db)
    invoice_id = "in_" + secrets.token_hex(8)
    events = [made("invoice.payment_failed", T0, id=invoice_id, customer_email="old@example.com")]
    events.append(made("invoice.paid", T0 + 60, id=invoice_id))
    events += [made("charge.succeeded", T0 + n, object="charge") for n in range(5)]
    async with old.db.transaction() as tx:  # type: ignore[attr-defined]  # rows as that release wrote them
        for event in map(IncomingEvent.parse, map(encode, events)):
            await tx.execute(
                "INSERT INTO events (id, type, created, livemode, object_id, payload, received_at, last_delivery_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                *(event.id, event.type, event.created, event.livemode, event.object_id, event.payload, 1.0, 1.0),
            )
    await old.close()
    monkeypatch.setattr(schema, "MIGRATIONS", current)
    monkeypatch.setattr(search_indexer, "PROGRESS_FROM", 2)
    monkeypatch.setattr(search_indexer, "INDEX_BATCH", 3)
    upgraded = await open_store(db)
    try:
        assert await upgraded.unindexed() == 7  # the upgrade itself only queues them
        with caplog.at_level(logging.INFO, logger="stripe_inbox"):
            assert await SearchIndexer(upgraded).catch_up() == 7
        assert [record.getMessage() for record in caplog.records] == [
            "indexing 7 stored events for search",
            "indexed 3 of 7 events",
            "indexed 6 of 7 events",
            "indexed 7 of 7 events",
        ]
        (found,) = await upgraded.list_events(EventQuery(status=None, words=("old@example.com",)))
        assert found.id == events[0]["id"]
        assert [e.id for e in await upgraded.timeline(invoice_id, 10)] == [events[0]["id"], events[1]["id"]]
        assert (await upgraded.resolutions([found]))[found.id].superseded_by == events[1]["id"]
        await upgraded.add_events([IncomingEvent.parse(encode(made("invoice.paid", description="after")))], 2.0)
        assert await SearchIndexer(upgraded).catch_up() == 1
        assert len(await upgraded.list_events(EventQuery(status=None, words=("after",)))) == 1
    finally:
        await upgraded.close()


async def test_upgrading_postgresql_to_prefix_lexemes_indexes_every_event_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with postgres_schema() as url:
        await upgrade_to_prefix_lexemes(url, monkeypatch)


async def upgrade_to_prefix_lexemes(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = importlib.import_module("stripe_inbox.stores.postgres_schema")
    current = schema.MIGRATIONS
    monkeypatch.setattr(schema, "MIGRATIONS", current[: current.index(schema.SEARCH_PREFIXES)])
    old = await open_store(url)
    invoice_id = "in_" + secrets.token_hex(8)
    events = [made("invoice.paid", T0 + n, id=invoice_id, description="yearly plan") for n in range(3)]
    await old.add_events([IncomingEvent.parse(encode(event)) for event in events], 1.0)
    assert await SearchIndexer(old).catch_up() == 3  # its terms and keys, which the upgrade writes again
    assert len(await old.list_events(EventQuery(status=None, words=("yearly",)))) == 3
    await old.close()
    monkeypatch.setattr(schema, "MIGRATIONS", current)
    upgraded = await open_store(url)
    try:
        assert await upgraded.unindexed() == 3  # queued again; meanwhile a search says what it lacks
        assert await upgraded.list_events(EventQuery(status=None, words=("year",))) == []
        assert await SearchIndexer(upgraded).catch_up() == 3
        found = await upgraded.list_events(EventQuery(status=None, words=("year",), limit=10))
        assert sorted(event.id for event in found) == sorted(event["id"] for event in events)
        assert len(await upgraded.timeline(invoice_id, 10)) == 3
    finally:
        await upgraded.close()


# -- MCP and the command line --------------------------------------------------------------------


@needs_fixtures
async def test_mcp_searches_shows_timelines_and_sets_resolved_events_apart(inbox: Inbox) -> None:
    invoice_id = "in_" + secrets.token_hex(12)
    failed = real("invoice.payment_failed", id=invoice_id, customer_email="jo@shop.example")
    failed["created"] = T0
    paid = real("invoice.paid", id=invoice_id)
    paid["created"] = T0 + 600
    todo = real("charge.failed", id="ch_" + secrets.token_hex(12))
    await add(inbox, failed, paid, todo)
    server = create_mcp_server(inbox)
    async with server.running(), Client(server) as client:
        page = ok(await client.call_tool("list_events", {"email": "jo@shop.example", "status": "all"}))
        assert [e["id"] for e in page["events"]] == [failed["id"]] and page["total"] == 1
        assert page["events"][0]["superseded_by"] == paid["id"] and page["events"][0]["stale"] is False
        declined = ok(await client.call_tool("list_events", {"query": "declined", "amount_gte": 20}))
        assert [e["id"] for e in declined["events"]] == [todo["id"]]
        timeline = ok(await client.call_tool("get_timeline", {"object_id": invoice_id}))
        assert [e["id"] for e in timeline["events"]] == [failed["id"], paid["id"]]
        resource = await client.read_resource(f"stripe://objects/{invoice_id}/events")
        assert json.loads(resource.contents[0].text) == timeline
        bad = await client.call_tool("list_events", {"created_after": "yesterday"})
        assert "created_after 'yesterday' is not an ISO 8601" in error_text(bad)
        assert "amount_gte must be" in error_text(await client.call_tool("list_events", {"amount_gte": -5}))
        prompt = (await client.get_prompt("triage_inbox")).messages[0].content.text
    work, resolved = prompt.split("Already resolved by a later event")
    assert todo["id"] in work and failed["id"] not in work
    assert f'- "{failed["id"]}" "invoice.payment_failed": resolved by "{paid["id"]}"' in resolved


def test_the_command_line_filters_shows_timelines_and_refuses_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    env = cli_env(path)
    invoice_id = "in_" + secrets.token_hex(8)
    failed = made("invoice.payment_failed", T0, id=invoice_id, customer_email="cli@example.com")
    paid = made("invoice.paid", T0 + 60, id=invoice_id)

    async def seed() -> None:
        async with open_inbox(load_settings(db=str(path), webhook_secret=SECRET)) as inbox:
            await add(inbox, paid, failed, index=False)  # the command line indexes them itself

    import anyio

    anyio.run(seed)
    listed = run_cli(
        "events", "list", "--email", "CLI@example.com", "--amount-gte", "40", "--json", env=env, cwd=tmp_path
    )
    assert [e["id"] for e in json.loads(listed.stdout)["events"]] == [failed["id"]]
    found = run_cli("events", "list", "--status", "all", "--query", invoice_id[3:9], env=env, cwd=tmp_path)
    assert failed["id"] in found.stdout and paid["id"] in found.stdout and "2 of 2 events" in found.stdout
    timeline = run_cli("events", "timeline", invoice_id, env=env, cwd=tmp_path)
    lines = timeline.stdout.splitlines()
    assert failed["id"] in lines[1] and f"resolved by {paid['id']}" in lines[1] and "arrived late" in lines[1]
    assert paid["id"] in lines[2] and "2 events about" in lines[3]
    for flags, message in (
        (["--created-before", "soon"], "created_before 'soon' is not an ISO 8601"),
        (["--amount-lte", "-3"], "amount_lte must be an amount of 0 or more"),
        (["--currency", "usd1"], "currency 'usd1'"),
    ):
        refused = run_cli("events", "list", *flags, env=env, cwd=tmp_path, check=False)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr


def test_what_search_indexes_of_an_event() -> None:
    event = make_event("charge.failed")
    event["data"]["object"] = {
        "id": "ch_3MtwBwLkdIwHu7ix0snN0B15",
        "object": "charge",
        "amount": 2000,
        "currency": "usd",
        "invoice": {"id": "in_1Nx", "object": "invoice"},
        "payment_intent": "pi_3MtwBw",
        "billing_details": {"email": "Ann@Example.com", "name": "Ann Lee"},
        "failure_message": "Your card has insufficient funds.",
        "failure_code": "insufficient_funds",
        "metadata": {"order_id": "6735", "note": "VIP"},
        "payload": {"huge": "not indexed"},
    }
    found = findable_payload(encode(copy.deepcopy(event)))
    assert found.emails == ("ann@example.com",)
    assert found.related_ids == ("ch_3MtwBwLkdIwHu7ix0snN0B15", "in_1Nx", "pi_3MtwBw")
    assert found.keys == (*found.related_ids, "ann@example.com")
    terms = found.text.split()
    for term in ("ch_3mtwbwlkdiwhu7ix0snn0b15", "3mtwbwlkdiwhu7ix0snn0b15", "ann@example.com", "example.com"):
        assert term in terms
    for term in ("ann", "lee", "insufficient", "funds", "insufficient_funds", "6735", "vip", event["id"]):
        assert term in terms
    assert "indexed" not in terms and "huge" not in terms


async def test_the_indexer_gives_way_to_a_busy_ingress_for_a_bounded_time(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_indexer, "READ_CATCH_UP", 0)  # overloaded: a read does not index either
    indexer = SearchIndexer(inbox.store)
    event = made("invoice.paid", description="burst plan")
    await add(inbox, event, received_at=1000.0, index=False)
    assert await indexer.once(busy=True, now=1000.0 + search_indexer.MAX_LAG_SECONDS - 1) == 0
    assert (await inbox.list_events("all", query="burst")).unindexed == 1
    assert await indexer.once(busy=True, now=1000.0 + search_indexer.MAX_LAG_SECONDS) == 1  # waited long enough
    second = made("invoice.paid", description="burst plan")
    await add(inbox, second, received_at=2000.0, index=False)
    assert await indexer.once(busy=False, now=2000.0) == 1  # the ingress has room: at once
    assert sorted(ids(await inbox.list_events("all", query="burst"))) == sorted([event["id"], second["id"]])


async def test_the_indexer_calls_the_ingress_busy_when_deliveries_wait_for_their_commit_on_average(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_indexer, "INDEX_SECONDS", 0.1)
    for waiting, busy in ((search_indexer.BUSY_COMMITTING, True), (search_indexer.BUSY_COMMITTING - 1, False)):
        assert await SearchIndexer(inbox.store, lambda waiting=waiting: waiting)._busy_meanwhile() is busy
