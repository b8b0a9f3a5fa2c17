"""What the MCP server tells a client about itself: tool titles and hints, its icon, the size of its tool list,
the schemas it publishes, and that reading a prompt changes nothing."""

from __future__ import annotations

import base64
import json
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from mcp import Client, MCPError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import INVALID_PARAMS, METHOD_NOT_FOUND, EmptyResult, Request
from pydantic import TypeAdapter

from stripe_inbox import Inbox
from stripe_inbox.mcp import InboxServer, create_mcp_server
from stripe_inbox.mcp.schemas import lean, outline
from stripe_inbox.mcp.server import PENDING_URI
from stripe_inbox.metrics import Metrics
from stripe_inbox.models import EventDetail, NotifyResult

from .test_mcp import MODES, add, ok

pytestmark = pytest.mark.anyio
TOOLS_LIST_BUDGET = 16_000  # bytes of compact JSON; every client puts the list in the model's context
# (readOnlyHint, destructiveHint, idempotentHint, openWorldHint), as each tool behaves
HINTS = {
    "list_events": (True, False, True, False),
    "get_event": (True, False, True, True),  # a thin event's full event comes from Stripe's API
    "get_stats": (True, False, True, False),
    "wait_for_events": (True, False, True, False),
    "classify": (False, False, True, False),  # stores the classification; the rules are deterministic
    "create_ticket": (False, False, True, True),  # one ticket per event and title; a tracker may be outside
    "notify": (False, False, True, True),  # sends once per call or idempotency_key
    "claim_events": (False, False, False, False),  # every call leases more events
    "ack_event": (False, False, True, False),
    "backfill_events": (False, False, True, True),  # Stripe's Events API; known events are not added again
    "get_timeline": (True, False, True, False),
    "replay_event": (False, False, False, True),  # each call one more delivery, to a handler outside
}


@pytest.fixture
async def server(inbox: Inbox) -> AsyncIterator[InboxServer]:
    mcp_server = create_mcp_server(inbox)
    async with mcp_server.running():
        yield mcp_server


@pytest.mark.parametrize("mode", MODES)
async def test_every_tool_has_a_title_and_hints_that_are_true(server: InboxServer, mode: str) -> None:
    async with Client(server, mode=mode) as client:
        tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == set(HINTS)
    for tool in tools:
        assert tool.title and tool.title != tool.name, tool.name
        assert tool.annotations is not None, tool.name
        hints = tool.annotations
        assert (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint, hints.open_world_hint) == HINTS[
            tool.name
        ], tool.name


@pytest.mark.parametrize("mode", MODES)
async def test_the_server_has_an_icon_of_its_own(server: InboxServer, mode: str) -> None:
    async with Client(server, mode=mode) as client:
        assert client.server_info is not None and client.server_info.icons
        (icon,) = client.server_info.icons
    assert icon.mime_type == "image/svg+xml"
    prefix = "data:image/svg+xml;base64,"
    assert icon.src.startswith(prefix)  # shipped in the package: no request leaves the machine
    svg = ElementTree.fromstring(base64.b64decode(icon.src.removeprefix(prefix)))
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"


async def test_the_tool_list_stays_small(server: InboxServer) -> None:
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    listed = json.dumps(
        [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools], separators=(",", ":")
    )
    assert len(listed.encode()) < TOOLS_LIST_BUDGET
    schemas = json.dumps([(tool.input_schema, tool.output_schema) for tool in tools], separators=(",", ":"))
    assert '"title":"' not in schemas  # titles made from field names tell a model nothing; a `title` field stays
    assert all(tool.output_schema for tool in tools)  # structured output everywhere


@pytest.mark.parametrize("mode", MODES)
async def test_a_prompt_changes_nothing(server: InboxServer, inbox: Inbox, mode: str) -> None:
    event = await add(inbox)
    async with Client(server, mode=mode) as client:
        email = (await client.get_prompt("draft_customer_email", {"event_id": event["id"]})).messages[0]
        await client.get_prompt("triage_inbox")
    assert "USD 49.00" in email.content.text  # the triage, computed on the spot
    assert await inbox.store.audit_trail(event["id"]) == []
    assert (await inbox.event(event["id"])).stored_classification() is None


@pytest.mark.parametrize("mode", MODES)
async def test_each_surface_reports_an_unknown_event_in_its_own_kind(server: InboxServer, mode: str) -> None:
    async with Client(server, mode=mode) as client:
        failed = await client.call_tool("get_event", {"event_id": "evt_nope"})
        assert failed.is_error and "no event 'evt_nope'" in failed.content[0].text  # for the model to read
        for read in (
            client.read_resource("stripe://events/evt_nope"),
            client.get_prompt("draft_customer_email", {"event_id": "evt_nope"}),
        ):
            with pytest.raises(MCPError) as caught:
                await read
            assert caught.value.error.code == INVALID_PARAMS


async def test_subscriptions_are_offered_in_both_eras_and_the_legacy_verbs_only_in_theirs(server: InboxServer) -> None:
    async with Client(server, mode="legacy") as client:
        assert client.server_capabilities.resources is not None
        assert client.server_capabilities.resources.subscribe
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # the legacy era is what we test
            await client.subscribe_resource(PENDING_URI)
            await client.unsubscribe_resource(PENDING_URI)
            with pytest.raises(MCPError) as caught:
                await client.session.send_request(Request(method="resources/subscribe", params=None), EmptyResult)
    assert caught.value.error.code == INVALID_PARAMS
    async with Client(server, mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        assert client.server_capabilities.resources is not None
        assert client.server_capabilities.resources.subscribe  # through subscriptions/listen
        with warnings.catch_warnings(), pytest.raises(MCPError) as caught:
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(PENDING_URI)
    assert caught.value.error.code == METHOD_NOT_FOUND


async def test_failed_tool_calls_are_counted_as_failed(inbox: Inbox) -> None:
    metrics = Metrics()
    server = create_mcp_server(inbox, metrics)
    event = await add(inbox)
    async with server.running(), Client(server) as client:
        ok(await client.call_tool("get_event", {"event_id": event["id"]}))
        assert (await client.call_tool("get_event", {"event_id": "evt_nope"})).is_error
    text = metrics.render(await inbox.store.counts(), await inbox.stats()).decode()
    assert 'stripe_inbox_tool_calls_total{outcome="ok",tool="get_event"} 1.0' in text
    assert 'stripe_inbox_tool_calls_total{outcome="error",tool="get_event"} 1.0' in text


def test_a_lean_schema_accepts_what_the_full_one_does() -> None:
    detail: dict[str, Any] = {
        "id": "evt_1",
        "type": "invoice.paid",
        "kind": "snapshot",
        "state": {"status": "acked", "received_at": "2026-01-01T00:00:00Z", "last_delivery_at": "2026-01-01T00:00:00Z"},
        "event": {"id": "evt_1", "title": "any"},
        "classification": None,
    }
    detail["state"] |= {"deliveries": 1, "outcome": None, "claimed_by": None}
    notified = {
        "status": "sent",
        "reason": None,
        "duplicate": False,
        "notification": {
            "id": 1,
            "channel": "log",
            "message": "hi",
            "created_at": "2026-01-01T00:00:00Z",
            "delivery": {"status": "sent", "attempts": 1, "reason": None},
        },
    }
    samples = {
        EventDetail: [
            detail,
            {**detail, "kind": "fat"},
            {**detail, "state": {**detail["state"], "outcome": "done"}},
            {**detail, "state": {**detail["state"], "deliveries": None}},
            {**detail, "account": None, "full_event": {"id": "evt_1"}},
            {**detail, "account": 3},
        ],
        NotifyResult: [
            notified,
            {**notified, "reason": 7},
            {**notified, "notification": {**notified["notification"], "subject": None}},
            {**notified, "notification": {**notified["notification"], "delivery": None}},
        ],
    }
    for model, documents in samples.items():
        full = TypeAdapter(model).json_schema()
        for document in documents:
            assert _valid(lean(full), document) == _valid(full, document), (model.__name__, document)


def test_an_outline_keeps_what_the_rest_of_the_schema_uses() -> None:
    full = lean(TypeAdapter(EventDetail).json_schema())
    outlined = outline(full, {"classification": "as classify returns it", "tickets": "as create_ticket returns"})
    assert outlined["properties"]["classification"] == {
        "type": ["object", "null"],
        "description": "as classify returns it",
    }
    assert outlined["properties"]["tickets"] == {"type": "array", "description": "as create_ticket returns"}
    assert set(outlined["$defs"]) == {"AuditEntry", "EventState", "Notification", "DeliveryState", "Forward"}
    jsonschema.Draft202012Validator.check_schema(outlined)


def _valid(schema: dict[str, Any], document: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(document)
