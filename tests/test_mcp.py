"""The MCP server in-process through the official client, in both protocol eras."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.shared.exceptions import MCPDeprecationWarning

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp.server import PENDING_URI, InboxServer, create_mcp_server

from .conftest import SECRET, encode, make_event

pytestmark = pytest.mark.anyio
MODES = ["legacy", "auto"]
BOUND = 10  # seconds any single wait may take


@pytest.fixture
async def server(inbox: Inbox) -> AsyncIterator[InboxServer]:
    mcp_server = create_mcp_server(inbox)
    async with mcp_server.running():
        yield mcp_server


async def add(inbox: Inbox, event_type: str = "invoice.payment_failed", **fields: Any) -> dict[str, Any]:
    event = make_event(event_type, **fields)
    await inbox.store.add_events([IncomingEvent.parse(encode(event))], time.time())
    return event


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content


def error_text(result: Any) -> str:
    assert result.is_error
    return result.content[0].text


@pytest.mark.parametrize("mode", MODES)
async def test_surface_is_listed(server: InboxServer, mode: str) -> None:
    async with Client(server, mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) >= {
            "list_events",
            "get_event",
            "wait_for_events",
            "classify",
            "create_ticket",
            "notify",
            "ack_event",
            "get_stats",
            "claim_events",
        }
        assert tools["list_events"].output_schema is not None  # structured output
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert resources == {"stripe://events/pending", "stripe://stats"}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {
            "stripe://events/{event_id}",
            "stripe://customers/{customer_id}/events",
            "stripe://objects/{object_id}/events",
        }
        assert {p.name for p in (await client.list_prompts()).prompts} == {
            "triage_inbox",
            "draft_customer_email",
        }


@pytest.mark.parametrize("mode", MODES)
async def test_round_trip_with_audit_trail(server: InboxServer, inbox: Inbox, mode: str) -> None:
    event = await add(inbox)
    event_id = event["id"]
    async with Client(server, mode=mode) as client:
        pending = json.loads((await client.read_resource(PENDING_URI)).contents[0].text)
        assert [e["id"] for e in pending["events"]] == [event_id] and pending["total"] == 1

        classification = ok(await client.call_tool("classify", {"event_id": event_id}))
        assert (classification["category"], classification["priority"]) == ("payment_failed", "high")
        assert event["data"]["object"]["customer"] in classification["summary"]
        assert "USD 49.00" in classification["summary"]

        ticket = ok(
            await client.call_tool(
                "create_ticket", {"event_id": event_id, "title": "Card declined", "priority": "high"}
            )
        )
        again = ok(await client.call_tool("create_ticket", {"event_id": event_id, "title": "Card declined"}))
        assert ticket["created"] and not again["created"] and again["ticket"]["id"] == ticket["ticket"]["id"]

        note = ok(
            await client.call_tool(
                "notify",
                {"channel": "log", "message": "failed payment", "event_id": event_id, "subject": "billing"},
            )
        )
        assert (note["status"], note["duplicate"]) == ("sent", False)
        same = ok(
            await client.call_tool(
                "notify",
                {"channel": "log", "message": "failed payment", "event_id": event_id, "subject": "billing"},
            )
        )
        assert same["duplicate"] and same["notification"]["id"] == note["notification"]["id"]

        acked = ok(
            await client.call_tool("ack_event", {"event_id": event_id, "outcome": "escalated", "note": "ticket opened"})
        )
        assert (acked["status"], acked["already_acked"]) == ("acked", False)
        repeat = ok(await client.call_tool("ack_event", {"event_id": event_id, "outcome": "ignored"}))
        assert (repeat["already_acked"], repeat["outcome"]) == (True, "escalated")

        pending = json.loads((await client.read_resource(PENDING_URI)).contents[0].text)
        assert pending == {"events": [], "total": 0}

        detail = json.loads((await client.read_resource(f"stripe://events/{event_id}")).contents[0].text)
        assert detail["event"] == event
        assert detail["state"]["status"] == "acked" and detail["state"]["outcome"] == "escalated"
        assert detail["classification"]["category"] == "payment_failed"
        assert [t["title"] for t in detail["tickets"]] == ["Card declined"]
        assert [n["message"] for n in detail["notifications"]] == ["failed payment"]
        assert [(a["actor"], a["action"]) for a in detail["audit"]] == [
            ("mcp", "classify"),
            ("mcp", "create_ticket"),
            ("mcp", "notify"),
            ("outbox", "deliver_notification"),
            ("mcp", "ack_event"),
        ]
        assert detail["audit"][3]["result"]["status"] == "sent"
        assert detail["notifications"][0]["delivery"]["attempts"] == 1
        assert detail["audit"][4]["arguments"] == {
            "event_id": event_id,
            "outcome": "escalated",
            "note": "ticket opened",
        }
        assert ok(await client.call_tool("get_event", {"event_id": event_id})) == detail


@pytest.mark.parametrize("mode", MODES)
async def test_bad_arguments_and_unknown_ids_are_named(server: InboxServer, inbox: Inbox, mode: str) -> None:
    event = await add(inbox)
    cases = [
        ("list_events", {"limit": 0}, "limit"),
        ("list_events", {"limit": 101}, "limit"),
        ("list_events", {"status": "done"}, "status"),
        ("list_events", {"cursor": "abc"}, "cursor 'abc' is not one that list_events returned"),
        ("get_event", {"event_id": "evt_nope"}, "no event 'evt_nope' in the inbox"),
        ("get_event", {}, "event_id"),
        ("classify", {"event_id": "evt_nope"}, "no event 'evt_nope'"),
        ("ack_event", {"event_id": "evt_nope"}, "no event 'evt_nope'"),
        ("ack_event", {"event_id": event["id"], "outcome": "done"}, "outcome"),
        ("create_ticket", {"event_id": event["id"], "title": "  "}, "title must not be empty"),
        ("create_ticket", {"event_id": event["id"], "title": "x", "priority": "asap"}, "priority"),
        ("create_ticket", {"event_id": "evt_nope", "title": "x"}, "no event 'evt_nope'"),
        (
            "notify",
            {"channel": "pager", "message": "hi"},
            "channel 'pager' is not valid; configured channels: log",
        ),
        ("notify", {"channel": "log", "message": " "}, "message must not be empty"),
        ("notify", {"channel": "log", "message": "hi", "event_id": "evt_nope"}, "no event 'evt_nope'"),
        ("wait_for_events", {"timeout_seconds": -1}, "timeout_seconds"),
    ]
    async with Client(server, mode=mode) as client:
        for tool, arguments, expected in cases:
            assert expected in error_text(await client.call_tool(tool, arguments)), (tool, arguments)
        with pytest.raises(MCPError, match="no event 'evt_nope'"):
            await client.read_resource("stripe://events/evt_nope")
        with pytest.raises(MCPError, match="no event 'evt_nope'"):
            await client.get_prompt("draft_customer_email", {"event_id": "evt_nope"})
    assert (await inbox.event(event["id"])).status == "pending"
    assert await inbox.store.audit_trail(event["id"]) == []  # nothing failed half-way


async def test_list_events_pages_and_filters(server: InboxServer, inbox: Inbox) -> None:
    events = [await add(inbox, "invoice.paid") for _ in range(5)]
    other = await add(inbox, "charge.refunded")
    async with Client(server) as client:
        first = ok(await client.call_tool("list_events", {"type": "invoice.paid", "limit": 3}))
        second = ok(
            await client.call_tool("list_events", {"type": "invoice.paid", "limit": 3, "cursor": first["next_cursor"]})
        )
        assert [e["id"] for e in first["events"] + second["events"]] == [e["id"] for e in events]
        assert first["total"] == 5 and second["next_cursor"] is None
        customer = other["data"]["object"]["customer"]
        mine = ok(await client.call_tool("list_events", {"customer": customer, "status": "all"}))
        assert [e["id"] for e in mine["events"]] == [other["id"]]


async def test_customer_history_is_newest_first(server: InboxServer, inbox: Inbox) -> None:
    first = await add(inbox, "invoice.paid")
    customer = first["data"]["object"]["customer"]
    second = make_event("invoice.payment_failed")
    second["data"]["object"]["customer"] = customer
    await inbox.store.add_events([IncomingEvent.parse(encode(second))], time.time())
    await inbox.ack(first["id"], "handled", None, "test")
    async with Client(server) as client:
        history = json.loads((await client.read_resource(f"stripe://customers/{customer}/events")).contents[0].text)
    assert history["customer"] == customer
    assert [e["id"] for e in history["events"]] == [second["id"], first["id"]]
    assert [e["status"] for e in history["events"]] == ["pending", "acked"]


async def test_stats_resource_and_tool_agree(server: InboxServer, inbox: Inbox) -> None:
    await add(inbox, "invoice.paid")
    acked = await add(inbox, "invoice.paid")
    await add(inbox, "charge.dispute.created")
    await inbox.ack(acked["id"], "handled", None, "test")
    async with Client(server) as client:
        resource = json.loads((await client.read_resource("stripe://stats")).contents[0].text)
        tool = ok(await client.call_tool("get_stats", {}))
    assert resource.pop("oldest_pending_age_seconds") >= 0 and tool.pop("oldest_pending_age_seconds") >= 0
    assert resource == tool
    assert resource["by_status"] == {"pending": 2, "acked": 1}
    assert resource["by_type"] == {"charge.dispute.created": 1, "invoice.paid": 2}


async def test_wait_for_events_returns_at_once_times_out_and_filters(server: InboxServer, inbox: Inbox) -> None:
    async with Client(server) as client:
        empty = ok(await client.call_tool("wait_for_events", {"timeout_seconds": 0.2}))
        assert empty == {"events": [], "timed_out": True}
        event = await add(inbox, "invoice.paid")
        ready = ok(await client.call_tool("wait_for_events", {"timeout_seconds": BOUND}))
        assert [e["id"] for e in ready["events"]] == [event["id"]] and not ready["timed_out"]
        other = ok(await client.call_tool("wait_for_events", {"timeout_seconds": 0.2, "type": "charge.refunded"}))
        assert other["timed_out"]


@pytest.mark.parametrize("mode", MODES)
async def test_wait_for_events_wakes_on_a_write_by_another_process(
    server: InboxServer, settings: Any, mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        results: list[dict[str, Any]] = []

        async def waiter() -> None:
            results.append(
                ok(await client.call_tool("wait_for_events", {"timeout_seconds": BOUND, "type": "charge.refunded"}))
            )

        async with open_inbox(settings) as other_process:  # its own connections, as `serve` would have
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as group:
                    group.start_soon(waiter)
                    await add(other_process, "invoice.paid")  # not the type waited for
                    wanted = await add(other_process, "charge.refunded")
    assert [e["id"] for e in results[0]["events"]] == [wanted["id"]]
    assert not results[0]["timed_out"]


async def test_legacy_resource_subscription_is_notified(server: InboxServer, inbox: Inbox) -> None:
    send, receive = anyio.create_memory_object_stream[str](10)

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            await send.send(message.params.uri)

    async with Client(server, mode="legacy", message_handler=on_message) as client:
        with receive, send:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)  # the legacy era is what we test
                await client.subscribe_resource(PENDING_URI)
            event = await add(inbox)
            with anyio.fail_after(BOUND):
                assert await receive.receive() == PENDING_URI
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.subscribe_resource(f"stripe://events/{event['id']}")
            await client.call_tool("ack_event", {"event_id": event["id"]})
            with anyio.fail_after(BOUND):
                while (uri := await receive.receive()) == PENDING_URI:
                    pass
            assert uri == f"stripe://events/{event['id']}"


async def test_modern_listen_stream_is_notified(server: InboxServer, inbox: Inbox) -> None:
    async with Client(server, mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(resource_subscriptions=[PENDING_URI]) as subscription:
            await add(inbox)
            with anyio.fail_after(BOUND):
                async for change in subscription:
                    assert change.uri == PENDING_URI
                    break


async def test_instructions_and_prompts_carry_the_policy(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stripe-inbox.toml").write_text('[policy]\ninstructions = "Escalate every dispute to Dana."\n')
    settings = load_settings(db=str(tmp_path / "p.db"), webhook_secret=SECRET)
    async with open_inbox(settings) as inbox:
        event = await add(inbox, "charge.dispute.created")
        server = create_mcp_server(inbox)
        async with server.running(), Client(server, mode="legacy") as client:
            assert client.instructions == "Escalate every dispute to Dana."
            triage = (await client.get_prompt("triage_inbox")).messages[0].content.text
            assert "Escalate every dispute to Dana." in triage and "1 pending events" in triage
            email = (await client.get_prompt("draft_customer_email", {"event_id": event["id"]})).messages[0]
            assert event["id"] in email.content.text and "USD 49.00" in email.content.text


@pytest.mark.parametrize("mode", MODES)
async def test_claimed_events_are_acked_by_their_agent_only(server: InboxServer, inbox: Inbox, mode: str) -> None:
    first, second, third = [await add(inbox) for _ in range(3)]
    async with Client(server, mode=mode) as client:
        mine = ok(await client.call_tool("claim_events", {"agent": "billing-1", "limit": 2, "lease_seconds": 60}))
        assert [e["id"] for e in mine["events"]] == [first["id"], second["id"]] and mine["pending"] == 3
        theirs = ok(await client.call_tool("claim_events", {"agent": "billing-2"}))
        assert [e["id"] for e in theirs["events"]] == [third["id"]]

        refused = error_text(await client.call_tool("ack_event", {"event_id": first["id"]}))
        assert "claimed by agent 'billing-1'" in refused and "agent='billing-1'" in refused
        acked = ok(await client.call_tool("ack_event", {"event_id": first["id"], "agent": "billing-1"}))
        assert acked["status"] == "acked"
        state = ok(await client.call_tool("get_event", {"event_id": third["id"]}))["state"]
        assert state["claimed_by"] == "billing-2" and state["claimed_until"] is not None
        bad = error_text(await client.call_tool("claim_events", {"agent": "x", "lease_seconds": 0}))
        assert "lease_seconds" in bad
        assert ok(await client.call_tool("list_events", {}))["total"] == 2  # claimed events are still pending


@pytest.mark.parametrize("mode", MODES)
async def test_notify_about_no_event_answers_too(server: InboxServer, mode: str) -> None:
    async with Client(server, mode=mode) as client:
        sent = ok(await client.call_tool("notify", {"channel": "log", "message": "nightly summary"}))
    assert (sent["status"], sent["notification"]["event_id"]) == ("sent", None)
