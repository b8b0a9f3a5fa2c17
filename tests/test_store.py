"""The Store contract, run against every store implementation: SQLite, and PostgreSQL where it answers."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from stripe_inbox.errors import Claimed, ConfigError, NotFound, StoreUnavailable
from stripe_inbox.events import IncomingEvent
from stripe_inbox.models import Classification
from stripe_inbox.stores import Audit, EventQuery, Store, open_store
from stripe_inbox.stores.changes import GAP_SECONDS, ChangeCursor
from stripe_inbox.stores.forwarding import ForwardDelivery, ForwardOutcome, PausePolicy
from stripe_inbox.stores.outbox import CREATOR_ATTEMPT_SECONDS
from stripe_inbox.stores.sqlite_schema import MIGRATIONS

from .conftest import encode, make_event
from .postgres import postgres_schema

pytestmark = pytest.mark.anyio
AUDIT = Audit("test", "test_action", {"why": "contract"})


@asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield str(tmp_path / "contract.db")
    else:
        async with postgres_schema() as url:
            yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with database(request.param, tmp_path) as location:
        yield location


@pytest.fixture
async def store(db: str) -> AsyncIterator[Store]:
    opened = await open_store(db)
    yield opened
    await opened.close()


def incoming(event_type: str = "invoice.paid", **fields: object) -> IncomingEvent:
    return IncomingEvent.parse(encode(make_event(event_type, **fields)))


async def test_add_is_insert_then_count(store: Store) -> None:
    event = incoming()
    assert await store.add_events([event], 100.0) == ["stored"]
    assert await store.add_events([event, event], 200.0) == ["duplicate", "duplicate"]
    stored = await store.get_event(event.id)
    assert stored is not None
    assert (stored.deliveries, stored.received_at, stored.last_delivery_at) == (3, 100.0, 200.0)
    assert stored.payload == event.payload


async def test_keyset_pages_in_both_orders(store: Store) -> None:
    events = [incoming() for _ in range(7)]
    for event in events:
        await store.add_events([event], time.time())
    oldest = await store.list_events(EventQuery(limit=3))
    rest = await store.list_events(EventQuery(limit=10, after=oldest[-1].seq))
    assert [e.id for e in oldest + rest] == [e.id for e in events]
    newest = await store.list_events(EventQuery(limit=3, newest_first=True))
    assert [e.id for e in newest] == [e.id for e in reversed(events[-3:])]
    assert await store.count_events(EventQuery()) == 7


async def test_filters_by_type_customer_and_status(store: Store) -> None:
    paid, failed = incoming("invoice.paid"), incoming("invoice.payment_failed")
    for event in (paid, failed):
        await store.add_events([event], time.time())
    await store.ack(paid.id, "handled", None, time.time(), AUDIT)
    assert [e.id for e in await store.list_events(EventQuery(type="invoice.paid", status=None))] == [paid.id]
    assert [e.id for e in await store.list_events(EventQuery(customer=failed.customer))] == [failed.id]
    assert [e.id for e in await store.list_events(EventQuery(status="acked"))] == [paid.id]
    assert await store.count_events(EventQuery(status="pending")) == 1


async def test_ack_once_with_audit_in_the_same_transaction(store: Store) -> None:
    event = incoming()
    await store.add_events([event], time.time())
    acked, changed = await store.ack(event.id, "escalated", "to billing", 10.0, AUDIT)
    assert changed and (acked.status, acked.outcome, acked.note, acked.acked_at) == (
        "acked",
        "escalated",
        "to billing",
        10.0,
    )
    again, changed = await store.ack(event.id, "ignored", None, 20.0, AUDIT)
    assert not changed and (again.outcome, again.acked_at) == ("escalated", 10.0)
    trail = await store.audit_trail(event.id)
    assert [(a.action, a.result) for a in trail] == [("test_action", {"status": "acked", "outcome": "escalated"})]
    with pytest.raises(NotFound):
        await store.ack("evt_missing", "handled", None, 1.0, AUDIT)
    assert await store.audit_trail("evt_missing") == []


async def test_tickets_are_idempotent_per_event_and_title(store: Store) -> None:
    event = incoming()
    await store.add_events([event], time.time())
    first, created = await store.add_ticket(event.id, "Card declined", "body", "high", None, 1.0, AUDIT)
    second, created_again = await store.add_ticket(event.id, "Card declined", "other", "low", None, 2.0, AUDIT)
    third, _ = await store.add_ticket(event.id, "Another", "", "normal", None, 3.0, AUDIT)
    assert created and not created_again and first == second and third.id != first.id
    assert [t.title for t in await store.tickets(event.id)] == ["Card declined", "Another"]
    with pytest.raises(NotFound):
        await store.add_ticket("evt_missing", "x", "", "low", None, 1.0, AUDIT)


async def test_classification_and_notifications_are_kept(store: Store) -> None:
    event = incoming()
    await store.add_events([event], time.time())
    classification = Classification(
        category="payment_succeeded", priority="low", summary="s", signals=[], suggested_actions=[]
    )
    await store.set_classification(event.id, classification, 1.0, AUDIT)
    assert (await store.get_event(event.id)).stored_classification() == classification  # type: ignore[union-attr]
    note, created = await store.add_notification("log", "hello", "subj", None, event.id, "key-1", 2.0, AUDIT)
    same, created_again = await store.add_notification("log", "hello", "subj", None, event.id, "key-1", 3.0, AUDIT)
    assert created and not created_again and same == note
    assert (await store.notifications(event.id)) == [note]
    assert (note.delivery.status, note.delivery.attempts) == ("queued", 0)
    assert len(await store.audit_trail(event.id)) == 2
    with pytest.raises(NotFound):
        await store.set_classification("evt_missing", classification, 1.0, AUDIT)


async def test_counts_oldest_pending_and_prune(store: Store) -> None:
    old, recent, pending = incoming("invoice.paid"), incoming("invoice.paid"), incoming("charge.refunded")
    for event in (old, recent, pending):
        await store.add_events([event], 50.0)
    await store.add_ticket(old.id, "t", "", "low", "github", 1.0, AUDIT)
    await store.add_notification("log", "m", None, None, old.id, "key-old", 1.0, AUDIT)
    await store.ack(old.id, "handled", None, 100.0, AUDIT)
    await store.ack(recent.id, "handled", None, 300.0, AUDIT)
    assert sorted(await store.counts()) == [("acked", "invoice.paid", 2), ("pending", "charge.refunded", 1)]
    assert await store.oldest_pending() == 50.0
    assert await store.prune(acked_before=200.0) == 1
    assert await store.get_event(old.id) is None
    assert await store.tickets(old.id) == [] and await store.audit_trail(old.id) == []
    assert await store.notifications(old.id) == [] and await store.next_delivery_at() is None
    assert await store.get_event(recent.id) is not None and await store.get_event(pending.id) is not None


@asynccontextmanager
async def watching(store: Store) -> AsyncIterator[anyio.abc.ObjectReceiveStream[set[str]]]:
    """A change watcher on `store`, running and positioned at the end of the log, whose sets arrive on the
    stream this yields."""
    send, receive = anyio.create_memory_object_stream[set[str]](100)

    async def watch() -> None:
        async for changed in store.watch_changes():
            await send.send(changed)

    async with anyio.create_task_group() as group, send, receive:
        group.start_soon(watch)
        with anyio.fail_after(10):
            while not store.changes._watchers:  # it has read where the log ends
                await anyio.sleep(0)
        yield receive
        group.cancel_scope.cancel()


async def next_change(changes: anyio.abc.ObjectReceiveStream[set[str]]) -> set[str]:
    with anyio.fail_after(10):
        return await changes.receive()


async def test_watchers_hear_which_events_each_commit_changed_in_any_process(store: Store, db: str) -> None:
    first, second = incoming(), incoming()
    await store.add_events([first, second], 1.0)
    other = await open_store(db)  # as another replica, or the CLI, would
    try:
        async with watching(store) as changes:
            await other.ack(first.id, "handled", None, 2.0, AUDIT)
            assert await next_change(changes) == {first.id}
            classification = Classification(
                category="other", priority="low", summary="s", signals=[], suggested_actions=[]
            )
            await store.set_classification(second.id, classification, 3.0, AUDIT)
            assert await next_change(changes) == {second.id}
            third = incoming()
            await other.add_events([third, first], 4.0)  # a new event, and a delivery of a known one
            assert await next_change(changes) == {third.id, first.id}
            await store.add_notification("log", "hi", None, None, second.id, "k", 5.0, AUDIT)
            assert await next_change(changes) == {second.id}
            (delivery,) = await other.claim_deliveries(6.0 + CREATOR_ATTEMPT_SECONDS, 30, 10)
            await other.finish_delivery(delivery, "sent", None, None, 7.0)
            assert await next_change(changes) == {second.id}
    finally:
        await other.close()


def test_a_change_that_commits_after_a_later_one_is_not_missed() -> None:
    cursor = ChangeCursor(10)
    assert cursor.take([(11, "evt_a"), (13, "evt_c")], now=100.0) == {"evt_a", "evt_c"}
    assert cursor.read_after == 11  # 12 is still being committed
    assert cursor.take([(12, "evt_b"), (13, "evt_c"), (14, "evt_d")], now=101.0) == {"evt_b", "evt_d"}
    assert cursor.read_after == 14
    assert cursor.take([(16, "evt_f")], now=102.0) == {"evt_f"}  # 15 rolled back: it never comes
    assert cursor.read_after == 14
    assert cursor.take([(16, "evt_f")], now=102.0 + GAP_SECONDS + 1) == set()
    assert cursor.read_after == 16


async def test_schema_version_is_recorded_and_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    for _ in range(2):
        store = await open_store(str(path))
        await store.add_events([incoming()], time.time())
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 2


async def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreUnavailable, match="newer than this stripe-inbox knows"):
        await open_store(str(path))


def test_incoming_event_facts() -> None:
    event = make_event("charge.refunded", account="acct_123")
    event["data"]["object"] = {
        "id": "ch_1",
        "object": "charge",
        "amount": 2000,
        "amount_refunded": 500,
        "currency": "jpy",
        "customer": {"id": "cus_9", "object": "customer"},
    }
    parsed = IncomingEvent.parse(json.dumps(event).encode())
    assert (parsed.customer, parsed.account, parsed.object_id) == ("cus_9", "acct_123", "ch_1")
    assert (parsed.amount, parsed.currency) == (2000, "jpy")  # the charge, not what was refunded


async def test_outbox_claims_leases_retries_and_finishes(store: Store) -> None:
    event = incoming()
    await store.add_events([event], time.time())
    note, _ = await store.add_notification("log", "hi", None, None, event.id, "k", 10.0, AUDIT)
    ticket, _ = await store.add_ticket(event.id, "T", "", "high", "github", 10.0, AUDIT)
    assert ticket.tracker == "github" and ticket.delivery is not None and ticket.delivery.status == "queued"
    assert await store.next_delivery_at() == 10.0 + CREATOR_ATTEMPT_SECONDS  # the creator attempts first
    assert await store.claim_deliveries(now=20.0, lease_seconds=30, limit=10) == []

    (mine,) = await store.claim_deliveries(now=20.0, lease_seconds=100, limit=10, of=("notification", note.id))
    assert (mine.kind, mine.target, mine.attempts) == ("notification", "log", 1)
    assert mine.notification is not None and mine.notification.message == "hi"
    assert mine.notification.delivery.status == "sending" and mine.event is not None and mine.event.id == event.id
    assert await store.claim_deliveries(now=20.0, lease_seconds=30, limit=10, of=("notification", note.id)) == []
    later = 10.0 + CREATOR_ATTEMPT_SECONDS  # the ticket's creator never attempted it: it is anyone's now
    (other,) = await store.claim_deliveries(now=later, lease_seconds=30, limit=10)  # only the ticket is free
    assert other.kind == "ticket" and other.ticket is not None and other.ticket.id == ticket.id
    assert await store.claim_deliveries(now=later + 20, lease_seconds=30, limit=10) == []  # leased until +30

    await store.finish_delivery(mine, "queued", "HTTP 503", later + 100, 21.0)
    retried = (await store.notifications(event.id))[0].delivery
    assert (retried.status, retried.attempts, retried.reason) == ("queued", 1, "HTTP 503")
    assert await store.next_delivery_at() == later + 30  # the ticket's lease lapses first
    (lapsed,) = await store.claim_deliveries(now=later + 40, lease_seconds=30, limit=10)  # its sender died
    assert (lapsed.kind, lapsed.attempts) == ("ticket", 2)
    await store.finish_delivery(lapsed, "sent", None, None, 61.0, tracker_id="#7", tracker_url="https://t/7")
    (again,) = await store.claim_deliveries(now=later + 100, lease_seconds=30, limit=10)
    await store.finish_delivery(again, "failed", "HTTP 404", None, 101.0)

    assert await store.next_delivery_at() is None
    assert await store.delivery_counts() == {"queued": 0, "sending": 0, "sent": 1, "failed": 1}
    forwarded = (await store.tickets(event.id))[0]
    assert (forwarded.tracker_id, forwarded.tracker_url, forwarded.delivery.status) == (  # type: ignore[union-attr]
        "#7",
        "https://t/7",
        "sent",
    )
    finals = [(a.action, a.result["status"], a.result["attempts"]) for a in (await store.audit_trail(event.id))[2:]]
    assert finals == [("deliver_ticket", "sent", 2), ("deliver_notification", "failed", 2)]


async def test_concurrent_deliveries_share_commits_and_each_gets_its_own_answer(store: Store) -> None:
    events = [incoming() for _ in range(60)]
    # Every event delivered three times at once, from 180 concurrent callers (retries racing originals).
    deliveries = [event for event in events for _ in range(3)]
    results: dict[int, list[str]] = {}

    async def deliver(number: int, event: IncomingEvent) -> None:
        results[number] = await store.add_events([event], time.time())

    async with anyio.create_task_group() as group:
        for number, event in enumerate(deliveries):
            group.start_soon(deliver, number, event)
    for event in events:
        outcomes = [results[n][0] for n, e in enumerate(deliveries) if e.id == event.id]
        assert sorted(outcomes) == ["duplicate", "duplicate", "stored"]
        stored = await store.get_event(event.id)
        assert stored is not None and stored.deliveries == 3
    assert await store.count_events(EventQuery(status=None)) == 60


async def test_upgrading_a_schema_from_before_the_counts_counts_the_events_it_has(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres = db.startswith("postgresql://")
    schema = importlib.import_module(f"stripe_inbox.stores.{'postgres' if postgres else 'sqlite'}_schema")
    current = schema.MIGRATIONS
    monkeypatch.setattr(schema, "MIGRATIONS", current[: 1 if postgres else 2])  # as an earlier release left it
    old = await open_store(db)
    async with old.db.transaction() as tx:  # type: ignore[attr-defined]  # rows as that release wrote them
        for event in (incoming("invoice.paid"), incoming("invoice.paid"), incoming("charge.refunded")):
            await tx.execute(
                "INSERT INTO events (id, type, created, livemode, payload, received_at, last_delivery_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                *(event.id, event.type, event.created, event.livemode, event.payload, 1.0, 1.0),
            )
    await old.close()
    monkeypatch.setattr(schema, "MIGRATIONS", current)
    upgraded = await open_store(db)
    try:
        assert sorted(await upgraded.counts()) == [("pending", "charge.refunded", 1), ("pending", "invoice.paid", 2)]
        assert await upgraded.count_events(EventQuery(type="invoice.paid")) == 2
        (refund,) = await upgraded.list_events(EventQuery(type="charge.refunded"))
        await upgraded.ack(refund.id, "handled", None, 2.0, AUDIT)
        assert await upgraded.count_events(EventQuery(status="acked")) == 1
    finally:
        await upgraded.close()
    if not postgres:
        with sqlite3.connect(db) as sqlite_db:
            assert sqlite_db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_claims_lease_each_event_to_one_agent_until_it_lapses(store: Store) -> None:
    events = [incoming() for _ in range(5)]
    for event in events:
        await store.add_events([event], 1.0)
    mine = await store.claim_events("agent-a", 2, 60, now=100.0)
    theirs = await store.claim_events("agent-b", 10, 60, now=100.0)
    assert [e.id for e in mine] == [e.id for e in events[:2]]  # oldest first
    assert [e.id for e in theirs] == [e.id for e in events[2:]]
    assert await store.claim_events("agent-a", 10, 60, now=120.0) == []
    assert (mine[0].claimed_by, mine[0].claim_expires_at) == ("agent-a", 160.0)

    with pytest.raises(Claimed, match="claimed by agent 'agent-a' until"):
        await store.ack(events[0].id, "handled", None, 130.0, AUDIT, holder="agent-b")
    acked, changed = await store.ack(events[0].id, "handled", None, 130.0, AUDIT, holder="agent-a")
    assert changed and acked.status == "acked"
    _, changed = await store.ack(events[2].id, "ignored", "operator", 130.0, AUDIT)  # no holder: an operator
    assert changed

    # agent-a's lease on events[1] lapses at 160: it returns to the pool, and agent-a may no longer ack it.
    (lapsed,) = await store.claim_events("agent-c", 1, 60, now=170.0)
    assert lapsed.id == events[1].id and lapsed.deliveries == 1
    with pytest.raises(Claimed):
        await store.ack(events[1].id, "handled", None, 171.0, AUDIT, holder="agent-a")
    assert [a.action for a in await store.audit_trail(events[1].id)] == ["claim_events", "claim_events"]


async def test_concurrent_claimers_never_get_the_same_event(store: Store) -> None:
    events = [incoming() for _ in range(60)]
    await store.add_events(events, 1.0)
    got: dict[str, list[str]] = {}

    async def agent(name: str) -> None:
        got[name] = []
        while claimed := await store.claim_events(name, 3, 60, now=time.time()):
            got[name] += [event.id for event in claimed]

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for number in range(6):
                group.start_soon(agent, f"agent-{number}")
    everything = [event_id for ids in got.values() for event_id in ids]
    assert sorted(everything) == sorted(event.id for event in events)  # each exactly once


async def test_replicas_starting_together_migrate_once() -> None:
    async with postgres_schema() as url:
        replicas = [None] * 4

        async def start(number: int) -> None:
            replicas[number] = await open_store(url)  # type: ignore[call-overload]

        async with anyio.create_task_group() as group:
            for number in range(4):
                group.start_soon(start, number)
        import asyncpg

        from stripe_inbox.stores.postgres_schema import MIGRATIONS as POSTGRES_MIGRATIONS

        db = await asyncpg.connect(url)
        try:
            versions = [row[0] for row in await db.fetch("SELECT version FROM stripe_inbox_schema ORDER BY version")]
            assert versions == list(range(1, len(POSTGRES_MIGRATIONS) + 1))
            await db.execute("INSERT INTO stripe_inbox_schema VALUES ($1)", len(POSTGRES_MIGRATIONS) + 1)
        finally:
            await db.close()
        for replica in replicas:
            await replica.close()  # type: ignore[attr-defined]
        with pytest.raises(StoreUnavailable, match="newer than this stripe-inbox knows"):
            await open_store(url)


async def test_postgres_errors_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreUnavailable, match=r"cannot open the PostgreSQL database postgresql://u:\*\*\*@127"):
        await open_store("postgresql://u:hunter2@127.0.0.1:9/inbox")
    async with postgres_schema() as url:
        with pytest.raises(StoreUnavailable, match="no schema of the search_path"):
            await open_store(url.replace("search_path=", "search_path=missing_"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "asyncpg" else real_find_spec(name))
    with pytest.raises(ConfigError, match=r"pip install 'stripe-inbox\[postgres\]'"):
        await open_store("postgresql://127.0.0.1/inbox")


async def test_postgres_commits_are_synchronous_whatever_the_url_says() -> None:
    async with postgres_schema() as url:
        store = await open_store(url + "&synchronous_commit=off")
        try:
            assert await store.db._pool.fetchval("SHOW synchronous_commit") == "on"  # type: ignore[attr-defined]
        finally:
            await store.close()


# -- forwards ------------------------------------------------------------------------------------

PAUSE = PausePolicy(after_failures=2, seconds=30.0)


def outcome(delivery: ForwardDelivery, ok: bool, at: float, retry_at: float | None = None) -> ForwardOutcome:
    if ok:
        return ForwardOutcome(delivery, "sent", 200, 1.5, None, None, at)
    return ForwardOutcome(delivery, "queued", 503, 2.5, "HTTP 503: down", retry_at or at + 1, at)


async def test_new_events_get_their_forwards_in_the_ingest_transaction(store: Store) -> None:
    store.forward_new_events([("all", ("*",)), ("billing", ("invoice.*",))])
    invoice, charge = incoming("invoice.paid"), incoming("charge.refunded")
    assert await store.add_events([invoice, charge, invoice], 100.0) == ["stored", "stored", "duplicate"]
    assert await store.add_events([invoice], 101.0) == ["duplicate"]  # a redelivery is not forwarded again
    assert sorted(f.destination for f in await store.forwards(invoice.id)) == ["all", "billing"]
    assert [f.destination for f in await store.forwards(charge.id)] == ["all"]
    (queued,) = await store.forwards(charge.id)
    assert (queued.status, queued.attempts, queued.replay, queued.status_code) == ("queued", 0, False, None)
    due, health = await store.forward_schedule()
    assert set(due) == {"all", "billing"} and health == {}
    assert await store.delivery_counts() == {"queued": 0, "sending": 0, "sent": 0, "failed": 0}  # not an action
    store.forward_new_events([])
    await store.add_events([incoming()], 102.0)
    assert sorted(await store.forward_counts()) == [("all", "queued", 2), ("billing", "queued", 1)]


async def test_forward_rounds_record_answers_and_claim_what_is_due(store: Store) -> None:
    store.forward_new_events([("hook", ("*",))])
    events = sorted((incoming() for _ in range(3)), key=lambda e: e.id)  # one commit stores them in id order
    await store.add_events(events, time.time())
    now = time.time() + 1
    first = await store.forward_round([], {"hook": 2}, now, 60, PAUSE)
    assert [d.event_id for d in first] == [e.id for e in events[:2]]
    assert first[0].payload == events[0].payload and first[0].attempts == 1
    assert await store.forward_round([], {"hook": 5}, now, 60, PAUSE) != first  # the third; the two are leased
    answered = [outcome(first[0], True, now), outcome(first[1], False, now, retry_at=now + 50)]
    assert await store.forward_round(answered, {}, now, 60, PAUSE) == []
    sent = (await store.forwards(events[0].id))[0]
    assert (sent.status, sent.status_code, sent.latency_ms, sent.error) == ("sent", 200, 1.5, None)
    assert sent.finished_at is not None
    retried = (await store.forwards(events[1].id))[0]
    assert (retried.status, retried.status_code, retried.error) == ("queued", 503, "HTTP 503: down")
    assert await store.forward_round([], {"hook": 5}, now + 10, 60, PAUSE) == []  # not due, third leased
    (again,) = await store.forward_round([], {"hook": 5}, now + 51, 60, PAUSE)
    assert (again.event_id, again.attempts) == (events[1].id, 2)
    (lapsed,) = await store.forward_round([], {"hook": 5}, now + 61, 60, PAUSE)  # its sender died
    assert lapsed.event_id == events[2].id and lapsed.attempts == 2
    await store.release_forwards([lapsed.id])  # a sender stopping hands it back, the attempt not counted
    (handed_back,) = await store.forwards(events[2].id)
    assert (handed_back.status, handed_back.attempts) == ("queued", 1)
    assert events[0].id in await _changed_ids(store)


async def _changed_ids(store: Store) -> set[str]:
    rows = await store.db.fetch("SELECT event_id FROM changes")
    return {row[0] for row in rows}


async def test_a_destination_failing_in_a_row_is_paused_then_probed_while_others_go_on(store: Store) -> None:
    store.forward_new_events([("down", ("*",)), ("up", ("*",))])
    events = [incoming() for _ in range(4)]
    await store.add_events(events, 1.0)
    now = time.time()
    claimed = await store.forward_round([], {"down": 2, "up": 1}, now, 60, PAUSE)
    down = [d for d in claimed if d.destination == "down"]
    up = [d for d in claimed if d.destination == "up"]
    assert len(down) == 2 and len(up) == 1
    answers = [outcome(d, False, now, retry_at=now) for d in down] + [outcome(up[0], True, now)]
    more = await store.forward_round(answers, {"down": 5, "up": 5}, now, 60, PAUSE)
    assert {d.destination for d in more} == {"up"} and len(more) == 3  # two in a row: down is paused
    _, health = await store.forward_schedule()
    assert health["down"].failures == 2 and health["down"].paused_until == now + PAUSE.seconds
    assert health["up"].failures == 0
    later = now + PAUSE.seconds
    (probe,) = await store.forward_round([], {"down": 5}, later, 60, PAUSE)  # the cool-down is over: one probe
    assert await store.forward_round([], {"down": 5}, later, 60, PAUSE) == []  # the others wait for it
    resumed = await store.forward_round([outcome(probe, True, later)], {"down": 5}, later, 60, PAUSE)
    assert len(resumed) == 3  # the probe went through: the rest go
    _, health = await store.forward_schedule()
    assert (health["down"].failures, health["down"].paused_until) == (0, None)
    failing = await store.forward_round([outcome(d, False, later) for d in resumed], {}, later, 60, PAUSE)
    assert failing == []
    _, health = await store.forward_schedule()
    assert health["down"].paused_until == later + PAUSE.seconds
    (probe,) = await store.forward_round([], {"down": 5}, later + PAUSE.seconds, 60, PAUSE)
    await store.forward_round([outcome(probe, False, later + 31)], {}, later + 31, 60, PAUSE)  # a failed probe
    _, health = await store.forward_schedule()
    assert health["down"].paused_until == later + 31 + PAUSE.seconds and health["down"].probe_until is None


async def test_replays_are_new_forwards_audited_and_unknown_events_refused(store: Store) -> None:
    old, new = incoming("invoice.paid", created=1_000), incoming("charge.refunded", created=2_000)
    await store.add_events([old, new], 5.0)
    (made,) = await store.replay_forwards([old.id], "hook", 10.0, Audit("cli", "replay_event", {"destination": "x"}))
    (replayed,) = await store.forwards(old.id)
    assert (replayed.id, replayed.replay, replayed.status, replayed.destination) == (made, True, "queued", "hook")
    (entry,) = await store.audit_trail(old.id)
    assert (entry.actor, entry.action, entry.result) == (
        "cli",
        "replay_event",
        {"forward_id": made, "destination": "hook"},
    )
    with pytest.raises(NotFound):
        await store.replay_forwards([new.id, "evt_missing"], "hook", 10.0, AUDIT)
    assert await store.forwards(new.id) == []  # all or nothing
    assert await store.count_created(1_500, None, None) == 1
    assert [i for _, i in await store.events_created(0, 2_000, None, 0, 10)] == [old.id]
    assert [i for _, i in await store.events_created(0, None, "charge.refunded", 0, 10)] == [new.id]
    due, _ = await store.forward_schedule()
    assert due == {"hook": 10.0}
