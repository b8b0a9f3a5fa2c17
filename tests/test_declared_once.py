"""A tool is named only where it is declared: the bundle manifest's tools and prompts are stamped from the live
server by `make mcpb`, the scope a tool needs follows its own annotations, and the tool names other code lists
(the rules' suggested tools) are the live server's. An event fact is declared once (event_facts.py): both event
shapes, the insert and the read are derived from it, and every fact round-trips through each database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mcp import Client
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, ListPromptsResult, ListToolsResult, ToolAnnotations

from stripe_inbox import Inbox
from stripe_inbox.auth.scopes import READ, WRITE, require_scopes
from stripe_inbox.event_facts import FACT_NAMES, FACTS
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp import InboxServer, create_mcp_server
from stripe_inbox.policy import TOOL_ARGUMENTS
from stripe_inbox.stores import Store, StoredEvent
from stripe_inbox.stores.ingest import INSERTED, insert_rows

from .conftest import encode, make_event
from .test_oauth_store import store
from .test_stripe_side import thin_event

pytestmark = pytest.mark.anyio
__all__ = ["store"]  # the fixture: a store on each database
ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "mcpb" / "manifest.json"
MCPB_CLI = ROOT / "node_modules" / ".bin" / "mcpb"
BUILD_BOUND = 180  # packing copies the whole source tree

# `make test` installs the MCPB CLI, so in CI a missing one is a failure to see, not a skip.
needs_mcpb = pytest.mark.skipif(
    not MCPB_CLI.exists() and not os.environ.get("CI"),
    reason="the MCPB CLI is not in node_modules: `npm ci` (make test runs it)",
)


@pytest.fixture
async def server(inbox: Inbox) -> AsyncIterator[InboxServer]:
    yield create_mcp_server(inbox)


async def listed(server: InboxServer) -> tuple[ListToolsResult, ListPromptsResult]:
    async with Client(server) as client:
        return await client.list_tools(), await client.list_prompts()


# -- the bundle manifest ---------------------------------------------------------------------------


async def test_the_committed_manifest_names_no_tool_and_no_prompt(server: InboxServer) -> None:
    tools, prompts = await listed(server)
    manifest = json.loads(MANIFEST.read_text())
    assert "tools" not in manifest and "prompts" not in manifest, "mcpb/build.py stamps them from the server"
    names = {tool.name for tool in tools.tools} | {prompt.name for prompt in prompts.prompts}
    assert len(names) > 10
    # Prose may say what the extension does ("classify them"); no value of the manifest is a tool's name.
    assert not names & set(strings_in(manifest))


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(text for part in value.values() for text in strings_in(part))]
    if isinstance(value, list):
        return [text for part in value for text in strings_in(part)]
    return [value] if isinstance(value, str) else []


def build_bundle(tmp_path: Path, **env: str) -> dict[str, Any]:
    staging, bundle = tmp_path / "staging", tmp_path / "stripe-inbox.mcpb"
    command = [sys.executable, str(ROOT / "mcpb" / "build.py"), "--staging", str(staging), "--out", str(bundle)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=BUILD_BOUND, check=False, env={**os.environ, **env}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert bundle.is_file()
    stamped: dict[str, Any] = json.loads((staging / "manifest.json").read_text())
    validated = subprocess.run(
        [str(MCPB_CLI), "validate", str(staging / "manifest.json")],
        capture_output=True,
        text=True,
        timeout=BUILD_BOUND,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    return stamped


@needs_mcpb
async def test_make_mcpb_stamps_exactly_the_live_servers_tools_and_prompts(server: InboxServer, tmp_path: Path) -> None:
    # A shell whose settings would not even load, and a config file in the working directory, change nothing:
    # the stamp describes every installation, not this one.
    (tmp_path / "stripe-inbox.toml").write_text("this is not toml")
    stamped = build_bundle(tmp_path, STRIPE_WEBHOOK_SECRET="sk_live_pasted_by_mistake", STRIPE_INBOX_DB="/nowhere/x")
    tools, prompts = await listed(server)
    assert [tool["name"] for tool in stamped["tools"]] == [tool.name for tool in tools.tools]
    for entry, tool in zip(stamped["tools"], tools.tools, strict=True):
        # The first sentence, without the asides that name one configuration's channels or destinations.
        description = entry["description"]
        assert description and "(" not in description
        assert set(words(description)) <= set(words(tool.description or ""))
    notify = next(entry for entry in stamped["tools"] if entry["name"] == "notify")
    assert notify["description"] == "Send a message through a configured channel, optionally about an event."
    assert [prompt["name"] for prompt in stamped["prompts"]] == [prompt.name for prompt in prompts.prompts]
    for entry, prompt in zip(stamped["prompts"], prompts.prompts, strict=True):
        arguments = [argument.name for argument in prompt.arguments or []]
        assert entry.get("arguments", []) == arguments
        assert all(f"${{arguments.{argument}}}" in entry["text"] for argument in arguments)


def words(text: str) -> list[str]:
    return re.findall(r"[\w\[\]-]+", text)


# -- scopes follow the tool's own annotations ------------------------------------------------------


async def read_only_tool() -> str:
    return "read"


async def call_as(middleware: Any, scopes: list[str], tool: str) -> Any:
    async def call_next(ctx: Any) -> str:
        return "called"

    user = AuthenticatedUser(AccessToken(token="t", client_id="agent", scopes=scopes))
    reset = auth_context_var.set(user)
    try:
        return await middleware(SimpleNamespace(method="tools/call", params={"name": tool}), call_next)
    finally:
        auth_context_var.reset(reset)


async def test_the_scope_a_tool_needs_follows_its_annotations_not_its_name() -> None:
    reading = Tool.from_function(read_only_tool, name="ack_event", annotations=ToolAnnotations(read_only_hint=True))
    unmarked = Tool.from_function(read_only_tool, name="list_events")
    middleware = require_scopes([reading, unmarked])
    assert await call_as(middleware, [READ], "ack_event") == "called"
    refused = await call_as(middleware, [READ], "list_events")
    assert isinstance(refused, CallToolResult) and refused.is_error
    assert refused.content[0].text.startswith(f"insufficient_scope: list_events needs the {WRITE} scope")
    # A tool the server does not have is taken to change something.
    assert (await call_as(middleware, [READ], "a_tool_added_later")).is_error
    assert await call_as(middleware, [READ, WRITE], "a_tool_added_later") == "called"


# -- other code that names tools names the live ones -------------------------------------------------


async def test_the_tools_rules_may_suggest_are_live_tools_with_those_arguments(server: InboxServer) -> None:
    tools, _ = await listed(server)
    accepted = {tool.name: set(tool.input_schema.get("properties", {})) for tool in tools.tools}
    for name, arguments in TOOL_ARGUMENTS.items():
        assert name in accepted, f"rules may suggest {name}, which the server does not have"
        assert arguments <= accepted[name], f"{name} takes no {sorted(arguments - accepted[name])}"


# -- event facts -------------------------------------------------------------------------------------


def test_both_event_shapes_and_the_insert_take_their_facts_from_the_declaration() -> None:
    assert tuple(field.name for field in fields(IncomingEvent)) == FACT_NAMES
    assert tuple(field.name for field in fields(StoredEvent))[: len(FACTS)] == FACT_NAMES
    delivered = ("received_at", "float8"), ("last_delivery_at", "float8"), ("deliveries", "integer")
    assert (*((fact.name, fact.column) for fact in FACTS), *delivered) == INSERTED
    event = IncomingEvent.parse(encode(make_event("invoice.paid")))
    (row,) = insert_rows([([event, event], 5.0)])
    assert row == (*(getattr(event, name) for name in FACT_NAMES), 5.0, 5.0, 2)


async def test_every_fact_of_a_snapshot_and_a_thin_event_comes_back_as_it_went_in(store: Store) -> None:
    snapshot = make_event("invoice.paid", livemode=True, account="acct_1")
    snapshot["data"]["object"].update(status="paid", amount_due=4200, currency="EUR")
    events = [IncomingEvent.parse(encode(snapshot)), IncomingEvent.parse(encode(thin_event(context="acct_2")))]
    assert await store.add_events(events, time.time()) == ["stored", "stored"]
    stored = {event.id: event for event in await store.get_events([event.id for event in events])}
    for event in events:
        assert {name: getattr(stored[event.id], name) for name in FACT_NAMES} == {
            name: getattr(event, name) for name in FACT_NAMES
        }
    facts = (events[0].livemode, events[0].account, events[0].amount, events[0].currency, events[0].object_status)
    assert facts == (True, "acct_1", 4200, "eur", "paid")
    related = thin_event()["related_object"]
    assert (events[1].kind, events[1].account, events[1].object_id) == ("thin", "acct_2", related["id"])
    assert stored[events[1].id].related() == related
