"""Lean tool results: a structured result is sent once as structure and once as compact JSON text (for clients
that read only the text, as Claude Desktop does), never as the SDK's indented copy; masked data stays masked in
both. Lean output schemas: what the result says itself is left out, a part used once is written in place, and
they still refuse what the full schema refuses."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client
from mcp_types import SERVER_INFO_META_KEY
from pydantic import TypeAdapter

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp import InboxServer, create_mcp_server
from stripe_inbox.mcp.schemas import for_output, lean, outline
from stripe_inbox.mcp.tools import TOOL_INFO
from stripe_inbox.models import EventDetail, EventPage, TicketResult
from stripe_inbox.stripe.samples import SAMPLES, sample_event

from .conftest import SECRET
from .test_mcp import MODES

pytestmark = pytest.mark.anyio
EMAIL = "jenny.rosen@example.com"  # the samples' customer
OUTLINED = TOOL_INFO["get_event"].outlined


@asynccontextmanager
async def served(inbox: Inbox) -> AsyncIterator[InboxServer]:
    server = create_mcp_server(inbox)
    async with server.running():
        yield server


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def fill(inbox: Inbox) -> str:
    """Every bundled sample twice; returns the id of an invoice.payment_failed."""
    payloads = [sample_event(event_type) for _ in range(2) for event_type in SAMPLES]
    await inbox.store.add_events([IncomingEvent.parse(payload) for payload in payloads], time.time())
    return next(json.loads(p)["id"] for p in payloads if json.loads(p)["type"] == "invoice.payment_failed")


def text_of(result: Any) -> str:
    assert not result.is_error, result.content
    (block,) = result.content
    assert block.type == "text"
    return str(block.text)


@pytest.mark.parametrize("mode", MODES)
async def test_the_text_is_the_structure_as_compact_json(inbox: Inbox, mode: str) -> None:
    event_id = await fill(inbox)
    calls = [
        ("list_events", {"limit": 10}),
        ("get_event", {"event_id": event_id}),
        ("classify", {"event_id": event_id}),
        ("get_stats", {}),
        ("get_timeline", {"object_id": "in_nothing"}),
        ("ack_event", {"event_id": event_id}),
        ("create_ticket", {"event_id": event_id, "title": "Card declined"}),
    ]
    async with served(inbox) as server, Client(server, mode=mode) as client:
        for name, arguments in calls:
            result = await client.call_tool(name, arguments)
            text = text_of(result)
            assert json.loads(text) == result.structured_content, name  # a text-only client gets it all
            assert text == compact(result.structured_content), name  # no indentation, no spaces


async def test_masked_data_stays_masked_in_the_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET, redact=["email"])
    async with open_inbox(settings) as inbox:
        event_id = await fill(inbox)
        async with served(inbox) as server, Client(server) as client:
            result = await client.call_tool("get_event", {"event_id": event_id})
    text = text_of(result)
    assert EMAIL not in text and EMAIL not in compact(result.structured_content)
    assert json.loads(text) == result.structured_content


async def test_a_failed_call_is_still_a_plain_error(inbox: Inbox) -> None:
    async with served(inbox) as server, Client(server) as client:
        failed = await client.call_tool("get_event", {"event_id": "evt_nope"})
    assert failed.is_error and failed.structured_content is None
    assert "no event 'evt_nope'" in failed.content[0].text


def test_an_output_schema_writes_a_part_used_once_where_it_is_used() -> None:
    published = for_output(outline(lean(TypeAdapter(EventDetail).json_schema()), OUTLINED))
    assert "$defs" not in published and "$ref" not in json.dumps(published)
    state = published["properties"]["state"]
    assert state["type"] == "object" and state["properties"]["deliveries"] == {"type": "integer"}
    for said_by_the_result in ('"format":', '"default":', '"required":'):
        assert said_by_the_result not in json.dumps(published, separators=(",", ":"))
    jsonschema.Draft202012Validator.check_schema(published)


def test_a_part_used_twice_stays_a_definition() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Twice"}, "b": {"anyOf": [{"$ref": "#/$defs/Twice"}, {"type": "null"}]}},
        "$defs": {"Twice": {"type": "object", "properties": {"n": {"type": "integer", "format": "int64"}}}},
    }
    published = for_output(schema)
    assert published["$defs"] == {"Twice": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    assert published["properties"]["a"] == {"$ref": "#/$defs/Twice"}


async def test_an_output_schema_still_refuses_what_the_full_one_refuses(inbox: Inbox) -> None:
    """Complete results, as the tools send them, and the same with one nested part wrong."""
    event_id = await fill(inbox)
    async with served(inbox) as server, Client(server) as client:
        await client.call_tool("classify", {"event_id": event_id})
        await client.call_tool("create_ticket", {"event_id": event_id, "title": "Card declined"})
        await client.call_tool("notify", {"channel": "log", "message": "hi", "event_id": event_id})
        detail = (await client.call_tool("get_event", {"event_id": event_id})).structured_content
        page = (await client.call_tool("list_events", {"limit": 3})).structured_content
    documents = {
        EventDetail: [
            detail,
            {**detail, "state": {**detail["state"], "deliveries": "one"}},
            {**detail, "state": {**detail["state"], "outcome": "done"}},
            {**detail, "audit": [{**detail["audit"][0], "arguments": []}]},
        ],
        EventPage: [page, {**page, "events": [{**page["events"][0], "status": "lost"}]}],
    }
    for model, samples in documents.items():
        full = TypeAdapter(model).json_schema()
        published = for_output(outline(lean(full), OUTLINED if model is EventDetail else {}))
        verdicts = [(_valid(published, sample), _valid(full, sample)) for sample in samples]
        assert verdicts == [(True, True)] + [(False, False)] * (len(samples) - 1), model.__name__


def test_an_outline_follows_a_dotted_path_through_definitions() -> None:
    published = for_output(outline(lean(TypeAdapter(TicketResult).json_schema()), {"ticket.delivery": "as notify"}))
    assert published["properties"]["ticket"]["properties"]["delivery"] == {
        "type": ["object", "null"],
        "description": "as notify",
    }
    assert "$defs" not in published  # DeliveryState is used nowhere else
    with pytest.raises(KeyError):
        outline(lean(TypeAdapter(TicketResult).json_schema()), {"ticket.no_such_field": "a typo fails at start-up"})


def _valid(schema: dict[str, Any], document: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(document)


async def test_a_result_names_the_server_without_the_icon_that_discover_carries(inbox: Inbox) -> None:
    async with served(inbox) as server, Client(server, mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        result = await client.call_tool("get_stats", {})
        listed = await client.list_tools()
        assert client.server_info is not None and client.server_info.icons  # from server/discover, whole
        identity = client.server_info.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"icons"})
    assert identity["name"] == "stripe-inbox"
    for answer in (result, listed):
        assert answer.meta is not None and answer.meta[SERVER_INFO_META_KEY] == identity
