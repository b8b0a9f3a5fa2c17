"""MCP Events' reading side through the official MCP client: in-process in both eras, Streamable HTTP against a
real `serve` in both eras, and stdio against a real `stripe-inbox mcp`. Events enter through the real ingress."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.shared.exceptions import MCPError
from mcp.types import Request
from pydantic import BaseModel, ConfigDict, TypeAdapter

from stripe_inbox import Inbox, Settings, load_settings, open_inbox
from stripe_inbox.mcp import InboxServer, create_mcp_server
from stripe_inbox.mcp.events import EventMethods
from stripe_inbox.mcp.untrusted import EVENT_LABEL
from stripe_inbox.stores import Audit
from stripe_inbox.web.app import create_app

from .conftest import SECRET, cli_env, deliver, encode, make_event, signed_headers, start_server, stop_server

pytestmark = pytest.mark.anyio
BOUND = 20
RAW = TypeAdapter(dict[str, Any])
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
Deliver = Callable[[dict[str, Any]], Awaitable[None]]


class Params(BaseModel):
    model_config = ConfigDict(extra="allow")


class EventsRequest(Request[Params | None, str]):
    method: str
    params: Params | None = None


class Hears(ClientExtension):
    """A client listening for an events/stream's notifications."""

    identifier = "com.example/hears-events"

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[tuple[str, dict[str, Any]]](100)

    def notifications(self) -> Sequence[NotificationBinding[Any]]:
        return [
            NotificationBinding(method=f"notifications/events/{kind}", params_type=Params, handler=self._taker(kind))
            for kind in ("event", "heartbeat")
        ]

    def _taker(self, kind: str) -> Callable[[Params], Awaitable[None]]:
        async def take(params: Params) -> None:
            await self.send.send((kind, params.model_dump(by_alias=True)))

        return take

    async def __aenter__(self) -> Hears:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.send.close()
        self.receive.close()

    async def next(self, kind: str) -> dict[str, Any]:
        """The next notification of `kind`, skipping heartbeats while waiting for an event."""
        with anyio.fail_after(BOUND):
            while True:
                heard, params = await self.receive.receive()
                if heard == kind:
                    return params


async def call(client: Client, method: str, **params: Any) -> dict[str, Any]:
    return await client.session.send_request(EventsRequest(method=method, params=Params(**params)), RAW)


async def refused(client: Client, method: str, **params: Any) -> MCPError:
    with pytest.raises(MCPError) as raised:
        await call(client, method, **params)
    return raised.value


# -- what every transport must show -------------------------------------------------------------------------


async def poll_scenario(client: Client, send: Deliver, modern: bool) -> None:
    listed = await call(client, "events/list")
    assert [each["name"] for each in listed["events"]] == ["stripe.event", "inbox.alert"]
    assert ("resultType" in listed) == modern and listed.get("resultType", "complete") == "complete"
    start = await call(client, "events/poll", name="stripe.event", arguments={}, cursor=None)
    assert start["events"] == [] and start["truncated"] is False and start["hasMore"] is False
    assert start["nextPollMs"] > 0
    first, second = make_event("invoice.payment_failed"), make_event("charge.dispute.created")
    await send(first)
    polled = await call(client, "events/poll", name="stripe.event", arguments={}, cursor=start["cursor"])
    assert [each["eventId"] for each in polled["events"]] == [first["id"]]
    (event,) = polled["events"]
    assert event["name"] == "stripe.event" and event["data"]["type"] == "invoice.payment_failed"
    assert event["data"]["priority"] == "high" and event["_meta"] == EVENT_LABEL, "labelled: data from outside"
    await send(second)
    again = await call(client, "events/poll", name="stripe.event", cursor=polled["cursor"], maxEvents=10)
    assert [each["eventId"] for each in again["events"]] == [second["id"]], "each event once"
    replay = await call(client, "events/poll", name="stripe.event", cursor=start["cursor"])
    assert [each["eventId"] for each in replay["events"]] == [first["id"], second["id"]], "in order, replayable"
    disputes = await call(
        client, "events/poll", name="stripe.event", arguments={"types": ["charge.dispute.*"]}, cursor=start["cursor"]
    )
    assert [each["eventId"] for each in disputes["events"]] == [second["id"]]
    aged = await call(client, "events/poll", name="stripe.event", cursor=start["cursor"], maxAgeMs=0)
    assert aged["events"] == [] and aged["truncated"] is True, "older than maxAgeMs: skipped, and said so"


async def error_scenario(client: Client) -> None:
    unknown = await refused(client, "events/poll", name="stripe.events", cursor=None)
    assert unknown.error.code == -32011 and "no event type 'stripe.events'" in unknown.error.message
    assert (await refused(client, "events/stream", name="nope")).error.code == -32011
    bad = await refused(client, "events/poll", name="stripe.event", arguments={"min_priority": "huge"})
    assert bad.error.code == -32602 and "min_priority must be one of low, normal, high, urgent" in bad.error.message
    cursor = await refused(client, "events/poll", name="stripe.event", cursor="garbage")
    assert cursor.error.code == -32602 and "cursor 'garbage' is not one this server returned" in cursor.error.message
    many = await refused(client, "events/poll", name="stripe.event", cursor=None, maxEvents=1000)
    assert many.error.code == -32602 and "maxEvents must be a whole number from 1 to 100" in many.error.message
    stream = await refused(client, "events/stream", name="stripe.event", arguments={"currency": "dollars"})
    assert stream.error.code == -32602 and "currency 'dollars' is not a three-letter ISO" in stream.error.message
    page = await refused(client, "events/list", cursor="2")
    assert page.error.code == -32602 and "events/list has one page" in page.error.message


async def stream_scenario(client: Client, hears: Hears, send: Deliver) -> None:
    start = await call(client, "events/poll", name="stripe.event", cursor=None)
    before = make_event("invoice.paid")
    await send(before)
    async with anyio.create_task_group() as streams:
        streams.start_soon(lambda: call(client, "events/stream", name="stripe.event", cursor=start["cursor"]))
        missed = await hears.next("event")
        assert missed["eventId"] == before["id"], "a stream from a cursor first replays what came after it"
        subscription = missed["_meta"][SUBSCRIPTION_ID]
        beat = await hears.next("heartbeat")
        assert beat["cursor"] and beat["_meta"][SUBSCRIPTION_ID] == subscription
        after = make_event("charge.dispute.created")
        await send(after)
        woken = await hears.next("event")
        assert woken["eventId"] == after["id"] and woken["_meta"][SUBSCRIPTION_ID] == subscription
        assert woken["data"]["priority"] == "urgent" and woken["cursor"]
        assert {key: woken["_meta"][key] for key in EVENT_LABEL} == EVENT_LABEL
        idle = await hears.next("heartbeat")  # nothing more comes: the heartbeat tells where the stream is
        resumed = await call(client, "events/poll", name="stripe.event", cursor=idle["cursor"])
        assert resumed["events"] == [], "the heartbeat's cursor is past everything the stream sent"
        streams.cancel_scope.cancel()


# -- in-process ----------------------------------------------------------------------------------------------


@pytest.fixture
async def quick(settings: Settings) -> AsyncIterator[Inbox]:
    """An inbox whose idle streams beat every 0.3 s."""
    tuned = load_settings(db=settings.db, webhook_secret=SECRET, event_stream_heartbeat_seconds=0.3)
    async with open_inbox(tuned) as opened:
        yield opened


@asynccontextmanager
async def in_process(inbox: Inbox, mode: str) -> AsyncIterator[tuple[InboxServer, Client, Hears, Deliver]]:
    server = create_mcp_server(inbox)
    transport = httpx.ASGITransport(app=create_app(inbox))
    hears = Hears()
    async with (
        hears,
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http,
        server.running(),
        Client(server, mode=mode, extensions=[hears]) as client,
    ):

        async def send(event: dict[str, Any]) -> None:
            assert (await deliver(http, event)).status_code == 200

        yield server, client, hears, send


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_in_process_poll_stream_and_errors(quick: Inbox, mode: str) -> None:
    async with in_process(quick, mode) as (server, client, hears, send):
        await poll_scenario(client, send, modern=mode != "legacy")
        await error_scenario(client)
        await stream_scenario(client, hears, send)
        with anyio.fail_after(BOUND):
            while server.events.open_streams:  # the cancelled stream's handler ends: nothing left running
                await anyio.sleep(0.01)


async def test_the_capability_is_in_server_discover_and_tools_stay_as_they_were(inbox: Inbox) -> None:
    async with Client(create_mcp_server(inbox)) as client:
        discovered = await client.session.send_discover("2026-07-28")
        assert discovered["capabilities"]["events"] == {}
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert not any(name.startswith("events") for name in names), "events are methods, not tools"


async def test_a_cursor_older_than_retention_polls_truncated(inbox: Inbox) -> None:
    async with in_process(inbox, "legacy") as (_, client, _, send):
        start = await call(client, "events/poll", name="stripe.event", cursor=None)
        gone, kept = make_event("invoice.paid"), make_event("invoice.payment_failed")
        await send(gone)
        await send(kept)
        await inbox.store.ack(gone["id"], "handled", None, 1.0, Audit("test", "ack_event", {}))
        assert await inbox.prune(1) == 1
        polled = await call(client, "events/poll", name="stripe.event", cursor=start["cursor"])
        assert polled["truncated"] is True and [each["eventId"] for each in polled["events"]] == [kept["id"]]


async def test_inbox_alerts_reach_a_stream(quick: Inbox) -> None:
    async with in_process(quick, "legacy") as (_, client, hears, _), anyio.create_task_group() as streams:
        streams.start_soon(lambda: call(client, "events/stream", name="inbox.alert"))
        await hears.next("heartbeat")  # the stream started: from now on
        audit = Audit("alerts", "alert_opened", {})
        assert await quick.store.open_incident("paused_forwards", "forwarding to billing is paused", 1.0, audit)
        alert = await hears.next("event")
        assert alert["name"] == "inbox.alert"
        assert alert["data"] | {"at": None} == {
            "name": "paused_forwards",
            "state": "opened",
            "detail": "forwarding to billing is paused",
            "at": None,
        }
        streams.cancel_scope.cancel()


async def test_a_token_without_the_read_scope_may_not_read_events(inbox: Inbox) -> None:
    middleware = EventMethods(inbox)

    async def call_next(ctx: Any) -> Any:
        raise AssertionError("not reached")

    reset = auth_context_var.set(AuthenticatedUser(AccessToken(token="t", client_id="agent", scopes=[])))
    try:
        ctx = SimpleNamespace(method="events/poll", params={"name": "stripe.event"}, protocol_version="2025-11-25")
        with pytest.raises(MCPError) as raised:
            await middleware(ctx, call_next)  # type: ignore[arg-type]
    finally:
        auth_context_var.reset(reset)
    assert raised.value.error.code == -32012 and "needs the inbox:read scope" in raised.value.error.message


# -- real processes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_streamable_http_against_a_real_serve(tmp_path: Path, mode: str) -> None:
    (tmp_path / "stripe-inbox.toml").write_text("event_stream_heartbeat_seconds = 0.5\n")
    served = start_server(tmp_path / "inbox.db", tmp_path)
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def send(event: dict[str, Any]) -> None:
                assert (await deliver_to(http, served.webhook_url, event)).status_code == 200

            initialize = await raw_initialize(http, served.mcp_url)
            assert initialize["result"]["capabilities"]["events"] == {}
            hears = Hears()
            async with hears, Client(served.mcp_url, mode=mode, extensions=[hears]) as client:
                await poll_scenario(client, send, modern=mode != "legacy")
                await error_scenario(client)
                await stream_scenario(client, hears, send)
    finally:
        stop_server(served)


async def test_stdio_offers_poll_and_push_only(tmp_path: Path) -> None:
    (tmp_path / "stripe-inbox.toml").write_text("event_stream_heartbeat_seconds = 0.5\n")
    db = tmp_path / "inbox.db"
    served = start_server(db, tmp_path)  # takes the deliveries; the stdio server reads the same database
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "stripe_inbox", "mcp"], env=cli_env(db), cwd=str(tmp_path)
    )
    hears = Hears()
    try:
        async with (
            hears,
            httpx.AsyncClient(timeout=10) as http,
            Client(params, mode="legacy", extensions=[hears]) as client,
        ):

            async def send(event: dict[str, Any]) -> None:
                assert (await deliver_to(http, served.webhook_url, event)).status_code == 200

            listed = await call(client, "events/list")
            assert {tuple(each["delivery"]) for each in listed["events"]} == {("poll", "push")}
            await poll_scenario(client, send, modern=False)
            await stream_scenario(client, hears, send)
    finally:
        stop_server(served)


async def deliver_to(http: httpx.AsyncClient, url: str, event: dict[str, Any]) -> httpx.Response:
    payload = encode(event)
    return await http.post(url, content=payload, headers=signed_headers(payload))


async def raw_initialize(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A handshake as JSON-RPC on the wire: the SDK's client keeps only the capabilities it knows."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    response = await http.post(url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        data = next(line for line in response.text.splitlines() if line.startswith("data:"))
        return dict(RAW.validate_json(data[5:]))
    return dict(response.json())


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
async def test_a_stream_whose_client_went_away_ends(quick: Inbox, era: str) -> None:
    """Over a real loopback HTTP server: the client drops the SSE response without cancelling; the stream's
    handler ends (a 2025-era session would otherwise keep it running, sending into nothing)."""
    server = create_mcp_server(quick)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"
        web = uvicorn.Server(uvicorn.Config(create_app(quick, server), log_level="warning"))
        async with anyio.create_task_group() as group, httpx.AsyncClient(timeout=BOUND) as http:
            group.start_soon(lambda: web.serve(sockets=[listener]))
            await drop_a_stream(http, url, era, server)
            with anyio.fail_after(BOUND):
                while server.events.open_streams:
                    await anyio.sleep(0.05)
            web.should_exit = True


async def drop_a_stream(http: httpx.AsyncClient, url: str, era: str, server: InboxServer) -> None:
    """Open an events/stream as raw JSON-RPC, hear two heartbeats, and hang up."""
    headers = await raw_session(http, url, era)
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 2, "method": "events/stream", "params": {"name": "stripe.event"}}
    if era != "2025-11-25":
        body["params"]["_meta"] = MODERN_ENVELOPE
    async with http.stream("POST", url, headers=headers, json=body) as response:
        assert response.status_code == 200
        beats = 0
        async for line in response.aiter_lines():
            beats += '"notifications/events/heartbeat"' in line
            if beats == 2:
                break
        assert server.events.open_streams == 1


MODERN_ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}


async def raw_session(http: httpx.AsyncClient, url: str, era: str) -> dict[str, str]:
    """The headers of a raw JSON-RPC events/stream in `era`, after the 2025 handshake where it has one."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "mcp-protocol-version": era,
    }
    if era != "2025-11-25":
        await wait_listening(http, url)
        return {**headers, "mcp-method": "events/stream"}
    await wait_listening(http, url)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": era, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    opened = await http.post(url, json=body, headers=headers)
    headers["mcp-session-id"] = opened.headers["mcp-session-id"]
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    return headers


async def wait_listening(http: httpx.AsyncClient, url: str) -> None:
    with anyio.fail_after(BOUND):
        while True:
            try:
                await http.get(url.replace("/mcp", "/healthz"))
                return
            except httpx.ConnectError:
                await anyio.sleep(0.05)
