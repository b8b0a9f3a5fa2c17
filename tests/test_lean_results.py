"""Lean tool results: a structured result is sent once as structure and once as compact JSON text (for clients
that read only the text, as Claude Desktop does), never as the SDK's indented copy; masked data stays masked in
both."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp import InboxServer, create_mcp_server
from stripe_inbox.stripe.samples import SAMPLES, sample_event

from .conftest import SECRET
from .test_mcp import MODES

pytestmark = pytest.mark.anyio
EMAIL = "jenny.rosen@example.com"  # the samples' customer


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
