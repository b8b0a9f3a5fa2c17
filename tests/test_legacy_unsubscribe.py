"""`resources/unsubscribe` in the 2025 handshake era: a client that unsubscribes is told no more, in-process, over
a real `serve`'s Streamable HTTP session and over a real `mcp` on stdio. Subscribed to the queue and the stats, then
unsubscribed from the queue, the client must next hear of the stats alone: the server tells the queue first."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning

from stripe_inbox import Inbox, open_store
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp.server import PENDING_URI, STATS_URI, create_mcp_server

from .conftest import Server, cli_env, encode, make_event, signed_headers

pytestmark = pytest.mark.anyio
BOUND = 20  # seconds: a process starts in one or two
UPDATED = "notifications/resources/updated"


@asynccontextmanager
async def unsubscribed_from_the_queue(
    connect: Any,
) -> AsyncIterator[tuple[Client, anyio.abc.ObjectReceiveStream[str]]]:
    """A legacy-era client of `connect`, subscribed to the queue and the stats, then unsubscribed from the queue;
    the URIs it is told of arrive on the stream."""
    send, receive = anyio.create_memory_object_stream[str](100)

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == UPDATED:
            await send.send(str(message.params.uri))

    async with send, receive, Client(connect, mode="legacy", message_handler=on_message) as client:
        assert client.protocol_version in ("2025-11-25", "2025-06-18")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # the legacy era is what we test
            await client.subscribe_resource(PENDING_URI)
            await client.subscribe_resource(STATS_URI)
            await client.unsubscribe_resource(PENDING_URI)
        yield client, receive


async def told_first(told: anyio.abc.ObjectReceiveStream[str], change: Callable[[], Awaitable[None]]) -> str:
    await change()
    with anyio.fail_after(BOUND):
        return await told.receive()


async def store_a_new_event(db: Path) -> None:
    """Written by another connection to the database, as `serve` would: `mcp` notices it like any change."""
    store = await open_store(str(db))
    try:
        await store.add_events([IncomingEvent.parse(encode(make_event()))], time.time())
    finally:
        await store.close()


async def test_an_unsubscribed_uri_is_not_told_in_process(inbox: Inbox) -> None:
    server = create_mcp_server(inbox)

    async def change() -> None:
        await inbox.store.add_events([IncomingEvent.parse(encode(make_event()))], time.time())

    async with server.running(), unsubscribed_from_the_queue(server) as (_, told):
        assert await told_first(told, change) == STATS_URI


async def test_one_clients_unsubscribe_leaves_anothers_subscription(inbox: Inbox) -> None:
    server = create_mcp_server(inbox)
    send, receive = anyio.create_memory_object_stream[str](100)

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == UPDATED:
            await send.send(str(message.params.uri))

    async def change() -> None:
        await inbox.store.add_events([IncomingEvent.parse(encode(make_event()))], time.time())

    async with (
        server.running(),
        send,
        receive,
        Client(server, mode="legacy", message_handler=on_message) as other,
        unsubscribed_from_the_queue(server) as (_, told),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await other.subscribe_resource(PENDING_URI)
        assert await told_first(told, change) == STATS_URI
        with anyio.fail_after(BOUND):
            assert await receive.receive() == PENDING_URI


async def test_an_unsubscribed_uri_is_not_told_over_http(server: Server) -> None:
    async def deliver() -> None:
        payload = encode(make_event())
        async with httpx.AsyncClient(timeout=BOUND) as http:
            response = await http.post(server.webhook_url, content=payload, headers=signed_headers(payload))
        assert response.status_code == 200

    async with unsubscribed_from_the_queue(server.mcp_url) as (_, told):
        assert await told_first(told, deliver) == STATS_URI


async def test_an_unsubscribed_uri_is_not_told_over_stdio(tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"
    await store_a_new_event(db)  # the database exists before `mcp` opens it
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "stripe_inbox", "mcp", "--db", str(db)], env=cli_env(db), cwd=str(tmp_path)
    )
    async with unsubscribed_from_the_queue(params) as (_, told):
        assert await told_first(told, lambda: store_a_new_event(db)) == STATS_URI
