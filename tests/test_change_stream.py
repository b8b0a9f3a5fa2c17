"""Per-event change notifications across processes: a client subscribed to an event's URI hears when that
event changes, whoever changed it (the CLI, the outbox, another PostgreSQL replica), and not when another
event does. Both protocol eras: `resources/subscribe` (2025) and `subscriptions/listen` (2026-07-28)."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning

from stripe_inbox import Inbox, load_settings, open_inbox, open_store
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp.server import PENDING_URI, create_mcp_server

from .conftest import SECRET, cli_env, encode, make_event, run_cli
from .postgres import postgres_schema
from .receivers import HTTPReceiver

pytestmark = pytest.mark.anyio
MODES = ["legacy", "auto"]
BOUND = 20  # seconds: a CLI process starts in one or two


def event_uri(event_id: str) -> str:
    return f"stripe://events/{event_id}"


async def add(inbox: Inbox) -> str:
    event = make_event()
    await inbox.store.add_events([IncomingEvent.parse(encode(event))], time.time())
    return str(event["id"])


@asynccontextmanager
async def subscribed(inbox: Inbox, mode: str, uris: list[str]) -> AsyncIterator[anyio.abc.ObjectReceiveStream[str]]:
    """An MCP client of `inbox`'s server subscribed to `uris`; the URIs it is told of arrive on the stream."""
    send, receive = anyio.create_memory_object_stream[str](100)
    server = create_mcp_server(inbox)

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            await send.send(str(message.params.uri))

    async with server.running(), send, receive:
        if mode == "legacy":
            async with Client(server, mode="legacy", message_handler=on_message) as client:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)  # the legacy era is what we test
                    for uri in uris:
                        await client.subscribe_resource(uri)
                yield receive
        else:
            async with (
                Client(server, mode="auto") as client,
                anyio.create_task_group() as group,
                client.listen(resource_subscriptions=uris) as subscription,
            ):

                async def forward() -> None:
                    async for change in subscription:
                        await send.send(str(change.uri))

                group.start_soon(forward)
                yield receive
                group.cancel_scope.cancel()


async def told_until(uris: anyio.abc.ObjectReceiveStream[str], last: str, pending_seen: int) -> list[str]:
    """What the client is told, up to `last` after the queue's `pending_seen`-th change."""
    told: list[str] = []
    with anyio.fail_after(BOUND):
        while True:
            told.append(await uris.receive())
            if told[-1] == last and told.count(PENDING_URI) >= pending_seen:
                return told


async def in_thread(work: Callable[[], Any]) -> Any:
    return await anyio.to_thread.run_sync(work)


async def precisely_told(
    inbox: Inbox, mode: str, change: Callable[[str], Awaitable[None]], first: str, second: str
) -> None:
    """Subscribed to the queue and both events, the client hears of `first` when it changes, then of
    `second`, and never of one when the other changed."""
    async with subscribed(inbox, mode, [PENDING_URI, event_uri(first), event_uri(second)]) as uris:
        await change(first)
        await change(second)
        assert await told_until(uris, event_uri(second), 2) == [
            PENDING_URI,
            event_uri(first),
            PENDING_URI,
            event_uri(second),
        ]


@pytest.mark.parametrize("mode", MODES)
async def test_an_ack_from_the_cli_reaches_the_events_subscribers(inbox: Inbox, db_path: Path, mode: str) -> None:
    first, second = await add(inbox), await add(inbox)
    env = cli_env(db_path)

    async def cli_ack(event_id: str) -> None:
        await in_thread(lambda: run_cli("events", "ack", event_id, env=env, cwd=db_path.parent))

    await precisely_told(inbox, mode, cli_ack, first, second)


@pytest.mark.parametrize("mode", MODES)
async def test_an_ack_by_another_postgres_replica_reaches_the_events_subscribers(mode: str, tmp_path: Path) -> None:
    async with postgres_schema() as url:
        settings = load_settings(db=url, webhook_secret=SECRET)
        async with open_inbox(settings) as inbox:
            first, second = await add(inbox), await add(inbox)
            replica = await open_store(url)
            try:
                from stripe_inbox.stores import Audit

                async def replica_ack(event_id: str) -> None:
                    await replica.ack(event_id, "handled", None, time.time(), Audit("replica", "ack_event", {}))

                await precisely_told(inbox, mode, replica_ack, first, second)
            finally:
                await replica.close()


async def test_a_finished_outbox_delivery_reaches_the_events_subscribers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = HTTPReceiver()  # down until started: the first attempt fails
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPS_HOOK_SECRET", "a-shared-secret")
    (tmp_path / "stripe-inbox.toml").write_text(
        f'[channels.ops]\ntype = "webhook"\nurl = "{receiver.url}/hook"\nsecret_env = "OPS_HOOK_SECRET"\n\n'
        "[outbox]\nretry_base_seconds = 600\n"
    )
    settings = load_settings(db=str(tmp_path / "outbox.db"), webhook_secret=SECRET)
    try:
        async with open_inbox(settings) as inbox:
            watched, other = await add(inbox), await add(inbox)
            async with subscribed(inbox, "legacy", [event_uri(watched), event_uri(other)]) as uris:
                queued = await inbox.notify("ops", "card declined", watched, None, "test")
                assert queued.status == "queued"
                await inbox.classify(other, "test")  # a fence: what the notify changed is told before it
                await told_until(uris, event_uri(other), 0)
                receiver.start()
                assert await inbox.outbox.deliver_due(now=time.time() + 3600) == 1  # the retry, due at once
                with anyio.fail_after(BOUND):
                    assert await uris.receive() == event_uri(watched)
                sent = await inbox.store.notification(queued.notification.id)
                assert (sent.delivery.status, len(receiver.requests)) == ("sent", 1)
    finally:
        receiver.stop()
