"""MCP Events' domain in-process, on both databases: the catalog and its selectors, cursors into the inbox's
durable order, polling from them (once each, in order, replayable), truncation by retention and max age, the
incident log, and one scan serving many selectors."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stripe_inbox import Inbox, Settings, load_settings, open_inbox
from stripe_inbox.errors import InvalidArgument
from stripe_inbox.event_feed import (
    FeedCursor,
    UnknownEventType,
    assess,
    definitions,
    read,
    scan,
    selector,
    start,
)
from stripe_inbox.events import IncomingEvent
from stripe_inbox.redact import MASK
from stripe_inbox.stores import Audit

from .conftest import SECRET, encode, make_event
from .postgres import postgres_schema

pytestmark = pytest.mark.anyio
ALL = selector("stripe.event", {})


@pytest.fixture(params=["sqlite", "postgres"])
async def inbox(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> AsyncIterator[Inbox]:
    if request.param == "sqlite":
        async with open_inbox(settings) as opened:
            yield opened
        return
    async with (
        postgres_schema() as url,
        open_inbox(load_settings(db=url, webhook_secret=SECRET, redact=["email"])) as opened,
    ):
        yield opened


async def stored(inbox: Inbox, *events: dict[str, Any], received_at: float | None = None) -> list[str]:
    """Store events one after the other through the ingest's own write, as deliveries would; their ids. (One
    write stores its events in id order.)"""
    parsed = [IncomingEvent.parse(encode(event)) for event in events]
    for event in parsed:
        if received_at is None:
            assert await inbox.accept([event]) == ["stored"]
        else:
            assert await inbox.store.add_events([event], received_at) == ["stored"]
    return [event.id for event in parsed]


def ids(batch: Any) -> list[str]:
    return [occurrence.event_id for occurrence in batch.events]


# -- the catalog ---------------------------------------------------------------------------------------------


def test_the_catalog_lists_both_types_with_tight_schemas_and_every_delivery() -> None:
    listed = {each["name"]: each for each in definitions()}
    assert set(listed) == {"stripe.event", "inbox.alert"}
    stripe_event = listed["stripe.event"]
    assert stripe_event["delivery"] == ["poll", "push", "webhook"]
    assert set(stripe_event["inputSchema"]["properties"]) == {
        "types",
        "customer",
        "object_id",
        "account",
        "livemode",
        "amount_gte",
        "currency",
        "min_priority",
        "include_payload",
    }
    assert stripe_event["inputSchema"]["properties"]["amount_gte"]["type"] == "number"
    assert stripe_event["inputSchema"]["additionalProperties"] is False
    assert set(stripe_event["payloadSchema"]["required"]) == {
        "id",
        "type",
        "created",
        "customer",
        "object_id",
        "amount",
        "currency",
        "priority",
        "category",
        "summary",
        "superseded_by",
        "stale",
    }
    assert len(json.dumps(definitions())) < 4000, "the definitions sit in an agent's context"
    assert definitions(("poll", "push"))[0]["delivery"] == ["poll", "push"]


def test_the_same_choice_gives_the_same_canonical_arguments() -> None:
    one = selector(
        "stripe.event",
        {"types": ["invoice.*", "charge.failed"], "amount_gte": 500, "currency": "USD", "include_payload": False},
    )
    other = selector("stripe.event", {"currency": "usd", "types": ["charge.failed", "invoice.*"], "amount_gte": 500.0})
    assert one.key == other.key
    assert one.arguments == {"types": ["charge.failed", "invoice.*"], "amount_gte": 500.0, "currency": "usd"}
    assert selector("stripe.event", {"types": ["*"], "min_priority": "low"}).key == ALL.key
    assert selector("stripe.event", None).key == ALL.key
    assert selector("inbox.alert", {"incidents": ["paused_forwards"]}).key != selector("inbox.alert", {}).key


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"type": "invoice.paid"}, "stripe.event takes no argument 'type'"),
        ({"types": "invoice.*"}, "types must be a list of event type patterns"),
        ({"types": []}, "types must name at least one pattern"),
        ({"types": ["Invoice paid"]}, "types: 'Invoice paid' is not an event type pattern"),
        ({"amount_gte": 500}, "amount_gte needs currency"),
        ({"amount_gte": -1, "currency": "usd"}, "amount_gte must be an amount of 0 or more"),
        ({"amount_gte": "500", "currency": "usd"}, "amount_gte must be a number, not '500'"),
        ({"currency": "dollars"}, "currency 'dollars' is not a three-letter ISO currency code"),
        ({"customer": 42}, "customer must be a string, not 42"),
        ({"livemode": "yes"}, "livemode must be a boolean, not 'yes'"),
        ({"min_priority": "critical"}, "min_priority must be one of low, normal, high, urgent, not 'critical'"),
        ({"include_payload": "true"}, "include_payload must be true or false"),
    ],
)
def test_bad_arguments_say_what_is_wrong(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        selector("stripe.event", arguments)


def test_an_unknown_type_or_non_object_arguments_are_refused() -> None:
    with pytest.raises(UnknownEventType, match=r"no event type 'stripe\.events': this server offers stripe\.event"):
        selector("stripe.events", {})
    with pytest.raises(InvalidArgument, match="arguments must be an object"):
        selector("stripe.event", ["invoice.*"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="incidents must be a non-empty list of oldest_pending"):
        selector("inbox.alert", {"incidents": ["disk_full"]})


# -- polling -------------------------------------------------------------------------------------------------


async def test_a_poll_from_null_starts_now_and_then_delivers_each_new_event_once_in_order(inbox: Inbox) -> None:
    await stored(inbox, make_event())  # before the subscriber came: not delivered
    first = await read(inbox, ALL, None)
    assert first.events == [] and not first.truncated and not first.has_more
    new = await stored(inbox, make_event("invoice.paid"), make_event("charge.dispute.created"))
    second = await read(inbox, ALL, first.cursor)
    assert ids(second) == new and not second.has_more and not second.truncated
    again = await read(inbox, ALL, second.cursor)
    assert again.events == [] and again.cursor  # nothing twice
    replayed = await read(inbox, ALL, first.cursor)
    assert ids(replayed) == new, "an earlier cursor replays what came after it"
    assert ids(await read(inbox, ALL, second.events[0].cursor)) == new[1:], "each event's own cursor resumes after it"


async def test_an_occurrence_carries_the_summary_and_triage_other_faces_show(inbox: Inbox) -> None:
    cursor = (await read(inbox, ALL, None)).cursor
    failed = make_event("invoice.payment_failed")
    (event_id,) = await stored(inbox, failed)
    (occurrence,) = (await read(inbox, ALL, cursor)).events
    wire = occurrence.wire()
    assert wire["eventId"] == event_id and wire["name"] == "stripe.event"
    assert wire["timestamp"].endswith("+00:00") and wire["cursor"] == occurrence.cursor
    (classification,) = await inbox.assess([await inbox.event(event_id)])
    obj = failed["data"]["object"]
    assert wire["data"] == {
        "id": event_id,
        "type": "invoice.payment_failed",
        "created": datetime.fromtimestamp(failed["created"], UTC).isoformat(),
        "customer": obj["customer"],
        "object_id": obj["id"],
        "amount": 49.0,
        "currency": "usd",
        "priority": classification.priority,
        "category": classification.category,
        "summary": classification.summary,
        "superseded_by": None,
        "stale": False,
    }
    assert classification.priority == "high" and "payload" not in wire["data"]


async def test_a_later_event_that_resolves_one_shows_on_the_next_read_of_it(inbox: Inbox) -> None:
    cursor = (await read(inbox, ALL, None)).cursor
    failed = make_event("invoice.payment_failed")
    paid = make_event("invoice.paid", data={"object": {**failed["data"]["object"]}})
    await stored(inbox, failed, paid)
    first, second = (await read(inbox, ALL, cursor)).events
    assert first.data["superseded_by"] == paid["id"], "read-your-writes: the index need not have caught up"
    assert second.data["superseded_by"] is None


async def test_selectors_filter_by_type_customer_object_amount_and_priority(inbox: Inbox) -> None:
    cursor = (await read(inbox, ALL, None)).cursor
    failed = make_event("invoice.payment_failed")
    dispute = make_event("charge.dispute.created")
    big = make_event("invoice.paid")
    big["data"]["object"].update(amount_due=250_000, charge="ch_referenced1")
    await stored(inbox, failed, dispute, big)
    cases = {
        json.dumps({"types": ["invoice.*"]}): [failed["id"], big["id"]],
        json.dumps({"types": ["charge.dispute.created"]}): [dispute["id"]],
        json.dumps({"customer": failed["data"]["object"]["customer"]}): [failed["id"]],
        json.dumps({"object_id": "ch_referenced1"}): [big["id"]],
        json.dumps({"object_id": dispute["data"]["object"]["id"]}): [dispute["id"]],
        json.dumps({"amount_gte": 2500, "currency": "usd"}): [big["id"]],
        json.dumps({"amount_gte": 49, "currency": "usd"}): [failed["id"], dispute["id"], big["id"]],
        json.dumps({"amount_gte": 1, "currency": "eur"}): [],
        json.dumps({"min_priority": "high"}): [failed["id"], dispute["id"]],
        json.dumps({"min_priority": "urgent"}): [dispute["id"]],
        json.dumps({"livemode": True}): [],
    }
    for arguments, expected in cases.items():
        assert ids(await read(inbox, selector("stripe.event", json.loads(arguments)), cursor)) == expected, arguments


async def test_a_selector_finds_what_list_events_finds_by_the_same_filters(inbox: Inbox) -> None:
    """Each stripe.event argument that is a list_events filter holds as that filter does: the selector's
    precomputed tests (amount bounds in minor units, lower-case currency, ids the event is about) against the
    store's own WHERE clauses and search index."""
    cursor = (await read(inbox, ALL, None)).cursor
    failed = make_event("invoice.payment_failed")
    cent_more = make_event("invoice.paid")
    cent_more["data"]["object"]["amount_due"] = 4901
    charge = make_event("charge.succeeded")
    charge["data"]["object"] = {"id": "ch_big1", "object": "charge", "amount": 250_000, "currency": "USD"}
    charge["data"]["object"]["invoice"] = "in_referenced2"
    yen = make_event("invoice.paid", livemode=True, account="acct_feed1")
    yen["data"]["object"].update(amount_due=4900, currency="jpy")
    no_amount = make_event("customer.created")
    no_amount["data"]["object"] = {"id": "cus_plain1", "object": "customer"}
    await stored(inbox, failed, cent_more, charge, yen, no_amount)
    customer = failed["data"]["object"]["customer"]
    cases = [
        ({"customer": customer}, [failed]),
        ({"account": "acct_feed1"}, [yen]),
        ({"livemode": True}, [yen]),
        ({"livemode": False}, [failed, cent_more, charge, no_amount]),
        ({"object_id": "in_referenced2"}, [charge]),
        ({"object_id": "cus_plain1"}, [no_amount]),
        ({"currency": "JPY"}, [yen]),
        ({"amount_gte": 49.005, "currency": "usd"}, [cent_more, charge]),  # 4900.5 cents rounds up
        ({"amount_gte": 49, "currency": "usd"}, [failed, cent_more, charge]),
        ({"amount_gte": 4900, "currency": "jpy"}, [yen]),  # no minor unit in yen
        ({"amount_gte": 4901, "currency": "jpy"}, []),
        ({"amount_gte": 0, "currency": "usd", "customer": customer}, [failed]),
        ({"livemode": False, "object_id": "ch_big1", "currency": "usd"}, [charge]),
    ]
    for arguments, expected in cases:
        found = ids(await read(inbox, selector("stripe.event", arguments), cursor))
        listed = [event.id for event in (await inbox.list_events("all", **arguments)).events]
        assert found == [event["id"] for event in expected], arguments
        assert sorted(found) == sorted(listed), arguments


async def test_include_payload_adds_the_event_masked_by_the_policy(inbox: Inbox) -> None:
    cursor = (await read(inbox, ALL, None)).cursor
    event = make_event("invoice.payment_failed")
    event["data"]["object"]["customer_email"] = "jane@example.com"
    await stored(inbox, event)
    (plain,) = (await read(inbox, ALL, cursor)).events
    (full,) = (await read(inbox, selector("stripe.event", {"include_payload": True}), cursor)).events
    assert "payload" not in plain.data
    assert full.data["payload"]["id"] == event["id"]
    shown = full.data["payload"]["data"]["object"]["customer_email"]
    assert shown == (MASK if inbox.settings.redact else "jane@example.com")


async def test_max_events_pages_with_has_more_and_the_pages_join_up(inbox: Inbox) -> None:
    cursor = (await read(inbox, ALL, None)).cursor
    new = await stored(inbox, *(make_event("invoice.paid") for _ in range(5)))
    page = await read(inbox, ALL, cursor, max_events=2)
    assert ids(page) == new[:2] and page.has_more
    page2 = await read(inbox, ALL, page.cursor, max_events=2)
    page3 = await read(inbox, ALL, page2.cursor, max_events=2)
    assert ids(page2) == new[2:4] and page2.has_more
    assert ids(page3) == new[4:] and not page3.has_more
    with pytest.raises(InvalidArgument, match="maxEvents must be a whole number from 1 to 100, not 0"):
        await read(inbox, ALL, cursor, max_events=0)
    with pytest.raises(InvalidArgument, match="maxAgeMs must be a whole number of milliseconds"):
        await read(inbox, ALL, cursor, max_age_ms=-5)


async def test_a_cursor_older_than_retention_resumes_from_the_oldest_kept_truncated(inbox: Inbox) -> None:
    cursor = (await read(inbox, ALL, None)).cursor
    doomed, kept = await stored(inbox, make_event("invoice.paid"), make_event("invoice.payment_failed"))
    await inbox.store.ack(doomed, "handled", None, time.time() - 86400 * 40, Audit("test", "ack_event", {}), None)
    assert await inbox.prune(30) == 1
    batch = await read(inbox, ALL, cursor)
    assert ids(batch) == [kept] and batch.truncated
    later = await read(inbox, ALL, batch.cursor)
    assert later.events == [] and not later.truncated, "truncation is told once"
    assert not (await read(inbox, ALL, (await read(inbox, ALL, None)).cursor)).truncated


async def test_max_age_skips_older_events_and_says_so(inbox: Inbox) -> None:
    cursor = (await read(inbox, ALL, None)).cursor
    old = await stored(inbox, make_event("invoice.paid"), received_at=time.time() - 3600)
    new = await stored(inbox, make_event("invoice.paid"))
    recent = await read(inbox, ALL, cursor, max_age_ms=60_000)
    assert ids(recent) == new and recent.truncated
    everything = await read(inbox, ALL, cursor, max_age_ms=7_200_000)
    assert ids(everything) == old + new and not everything.truncated


async def test_a_bad_cursor_is_refused_with_what_is_wrong(inbox: Inbox) -> None:
    alert_cursor = (await read(inbox, selector("inbox.alert", {}), None)).cursor
    with pytest.raises(InvalidArgument, match=r"belongs to 'inbox\.alert' events, not stripe\.event"):
        await read(inbox, ALL, alert_cursor)
    for bad in ("42", "not a cursor!", FeedCursor("stripe.event", 5).encode()[:-3] + "AAA"):
        with pytest.raises(InvalidArgument, match=r"cursor '.*' (is not one this server returned|is damaged)"):
            await read(inbox, ALL, bad)
    with pytest.raises(InvalidArgument, match="cursor must be a cursor this server returned"):
        await read(inbox, ALL, 17)  # type: ignore[arg-type]


# -- the incident log ------------------------------------------------------------------------------------------


async def test_inbox_alerts_are_the_incidents_opened_and_cleared(inbox: Inbox) -> None:
    every = selector("inbox.alert", {})
    only_paused = selector("inbox.alert", {"incidents": ["paused_forwards"]})
    cursor = (await read(inbox, every, None)).cursor
    audit = Audit("alerts", "alert_opened", {})
    assert await inbox.store.open_incident("oldest_pending", "an event waited 20 minutes", 1_700_000_000.0, audit)
    assert await inbox.store.close_incident("oldest_pending", 1_700_000_600.0, audit) == 1_700_000_000.0
    assert await inbox.store.open_incident("paused_forwards", "forwarding to billing is paused", time.time(), audit)
    batch = await read(inbox, every, cursor)
    assert [(each.data["name"], each.data["state"]) for each in batch.events] == [
        ("oldest_pending", "opened"),
        ("oldest_pending", "cleared"),
        ("paused_forwards", "opened"),
    ]
    assert batch.events[1].data["detail"] == "an event waited 20 minutes", "the clearing says what cleared"
    assert batch.events[1].timestamp.isoformat() == "2023-11-14T22:23:20+00:00"
    assert len({each.event_id for each in batch.events}) == 3
    assert [each.data["name"] for each in (await read(inbox, only_paused, cursor)).events] == ["paused_forwards"]


# -- many subscribers, one read --------------------------------------------------------------------------------


async def test_one_scan_serves_many_selectors(inbox: Inbox) -> None:
    place = await start(inbox, "stripe.event")
    failed, dispute = make_event("invoice.payment_failed"), make_event("charge.dispute.created")
    await stored(inbox, failed, dispute)
    read_once = await scan(inbox, place)
    assert [entry.event_id for entry in read_once.entries] == [failed["id"], dispute["id"]]
    await assess(inbox, read_once.entries)
    selectors = [selector("stripe.event", {"min_priority": level}) for level in ("low", "high", "urgent")] * 100
    delivered = [[o.event_id for e in read_once.entries if (o := s.occurrence(e))] for s in selectors[:3]]
    assert delivered == [[failed["id"], dispute["id"]], [failed["id"], dispute["id"]], [dispute["id"]]]
    assert sum(1 for s in selectors for e in read_once.entries if s.matches(e)) == 500
    assert (await scan(inbox, read_once.cursor)).entries == []


# -- PostgreSQL: a row that commits after one numbered higher --------------------------------------------------


async def test_an_event_committing_after_a_higher_numbered_one_is_not_skipped(settings: Settings) -> None:
    import asyncpg

    async with postgres_schema() as url, open_inbox(load_settings(db=url, webhook_secret=SECRET)) as inbox:
        cursor = (await read(inbox, ALL, None)).cursor
        late = make_event("invoice.payment_failed")
        writer = await asyncpg.connect(url)
        try:
            held = writer.transaction()
            await held.start()
            await writer.execute(
                "INSERT INTO events (id, type, created, livemode, payload, received_at, last_delivery_at) "
                "VALUES ($1, $2, $3, false, $4, $5, $5)",
                late["id"],
                late["type"],
                late["created"],
                encode(late),
                time.time(),
            )
            (early,) = await stored(inbox, make_event("invoice.paid"))  # numbered after `late`, committed first
            first = await read(inbox, ALL, cursor)
            assert ids(first) == [early]
            await held.commit()
        finally:
            await writer.close()
        second = await read(inbox, ALL, first.cursor)
        assert ids(second) == [late["id"]], "the gap below the position read is looked for again"
        assert (await read(inbox, ALL, second.cursor)).events == []


def test_a_gap_is_given_up_only_after_a_read_has_looked_for_it_late() -> None:
    cursor = FeedCursor("stripe.event", 10)
    assert cursor.take(13, now=100.0) and set(cursor.gaps) == {11, 12}
    assert cursor.read_after == 10
    decoded = FeedCursor.decode(cursor.encode(), "stripe.event")
    assert decoded == cursor
    cursor.expire(now=105.0, checked_through=20)
    assert set(cursor.gaps) == {11, 12}, "not yet given up"
    cursor.expire(now=200.0, checked_through=11)
    assert set(cursor.gaps) == {12}, "only what the read looked for"
    assert cursor.take(12, now=200.0) and not cursor.take(12, now=200.0) and not cursor.take(9, now=200.0)


def test_positions_retention_pruned_are_not_looked_for_again() -> None:
    cursor = FeedCursor("stripe.event", 0)
    assert cursor.take(50_000, now=1.0, settled=49_990)
    assert set(cursor.gaps) == set(range(49_991, 50_000)), "only numbers above what pruning deleted"
    assert len(cursor.encode()) < 120, "a run of gaps missed at once is written once"
