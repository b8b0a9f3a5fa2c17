"""Scale-out on PostgreSQL with real processes: two `serve` replicas on one database, agents on either
replica woken by the other, two agents claiming from one inbox at once, and a replica killed under load."""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning

from stripe_inbox.mcp.server import PENDING_URI
from stripe_inbox.stores import EventQuery, open_store

from .conftest import Server, cli_env, encode, make_event, signed_headers, start_server, stop_server
from .load import CLIENTS, Load
from .postgres import postgres_schema

pytestmark = pytest.mark.anyio
BOUND = 30


@pytest.fixture
async def inbox_url() -> AsyncIterator[str]:
    async with postgres_schema() as url:
        yield url


@pytest.fixture
def replicas(inbox_url: str, tmp_path: Path) -> Any:
    started: list[Server] = []
    try:
        for _ in range(2):
            started.append(start_server(tmp_path, tmp_path, cli_env(inbox_url)))  # type: ignore[arg-type]
        yield started
    finally:
        for server in started:
            stop_server(server)


async def post(http: httpx.AsyncClient, server: Server, payload: bytes) -> dict[str, Any]:
    response = await http.post(server.webhook_url, content=payload, headers=signed_headers(payload))
    assert response.status_code == 200, response.text
    return response.json()


async def test_two_replicas_store_each_event_once_and_sum_its_deliveries(
    replicas: list[Server], inbox_url: str
) -> None:
    payloads = [encode(make_event()) for _ in range(40)]
    answers: dict[bytes, list[dict[str, Any]]] = {payload: [] for payload in payloads}

    async def deliver(server: Server, payload: bytes) -> None:
        answers[payload].append(await post(http, server, payload))

    async with httpx.AsyncClient(timeout=BOUND) as http:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as group:
                for payload in payloads:  # the same event to both replicas at once, as Stripe's retries might
                    for server in replicas:
                        group.start_soon(deliver, server, payload)
    for payload in payloads:
        assert sorted(answer.get("duplicate", False) for answer in answers[payload]) == [False, True]
    store = await open_store(inbox_url)
    try:
        assert await store.count_events(EventQuery(status=None)) == len(payloads)
        for payload in payloads:
            stored = await store.get_event(json.loads(payload)["id"])
            assert stored is not None and stored.deliveries == 2 and stored.payload == payload
    finally:
        await store.close()


async def test_an_event_stored_by_one_replica_wakes_agents_on_the_other(replicas: list[Server]) -> None:
    here, there = replicas
    payload = encode(make_event("charge.dispute.created"))
    send, receive = anyio.create_memory_object_stream[str](10)

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            await send.send(str(message.params.uri))

    with send, receive:
        async with Client(here.mcp_url, mode="legacy", message_handler=on_message) as client:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.subscribe_resource(PENDING_URI)
            results: list[Any] = []

            async def wait() -> None:
                results.append(await client.call_tool("wait_for_events", {"timeout_seconds": BOUND}))

            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as group:
                    group.start_soon(wait)
                    async with httpx.AsyncClient(timeout=BOUND) as http:
                        await post(http, there, payload)
                assert await receive.receive() == PENDING_URI
    assert [event["id"] for event in results[0].structured_content["events"]] == [json.loads(payload)["id"]]


def agent(url: str, cwd: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "stripe_inbox", "mcp"],
        env=cli_env(url),
        cwd=str(cwd),  # type: ignore[arg-type]
    )


async def test_two_agents_claiming_at_once_never_get_the_same_event(
    replicas: list[Server], inbox_url: str, tmp_path: Path
) -> None:
    payloads = [encode(make_event()) for _ in range(30)]
    async with httpx.AsyncClient(timeout=BOUND) as http:
        for number, payload in enumerate(payloads):
            await post(http, replicas[number % 2], payload)
    done: dict[str, list[str]] = {}
    both_connected, ready = anyio.Event(), []

    async def work(name: str) -> None:
        done[name] = []
        async with Client(agent(inbox_url, tmp_path)) as client:
            ready.append(name)
            if len(ready) == 2:
                both_connected.set()
            await both_connected.wait()  # neither starts before the other is there to compete
            while True:
                claimed = await client.call_tool("claim_events", {"agent": name, "limit": 4, "lease_seconds": 60})
                events = claimed.structured_content["events"]
                if not events:
                    return
                for event in events:
                    acked = await client.call_tool("ack_event", {"event_id": event["id"], "agent": name})
                    assert acked.structured_content["already_acked"] is False
                    done[name].append(event["id"])

    with anyio.fail_after(BOUND * 2):
        async with anyio.create_task_group() as group:
            group.start_soon(work, "agent-1")
            group.start_soon(work, "agent-2")
    handled = done["agent-1"] + done["agent-2"]
    assert sorted(handled) == sorted(json.loads(payload)["id"] for payload in payloads)  # each exactly once
    assert done["agent-1"] and done["agent-2"]  # both took a share


async def test_serve_on_postgres_wants_the_shared_secret(inbox_url: str, tmp_path: Path) -> None:
    from .conftest import run_cli

    env = cli_env(inbox_url)  # type: ignore[arg-type]
    del env["STRIPE_WEBHOOK_SECRET"]
    result = run_cli("serve", "--port", "0", env=env, cwd=tmp_path, check=False)
    assert result.returncode != 0 and "set STRIPE_WEBHOOK_SECRET" in result.stderr
    assert not list(tmp_path.glob("*.whsec"))


async def test_every_200_survives_kill_9_of_a_replica_and_the_other_carries_on(
    replicas: list[Server], inbox_url: str
) -> None:
    doomed, survivor = replicas
    load = Load(doomed.webhook_url, target=300)
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(CLIENTS):
            pool.submit(load.client)
        assert await anyio.to_thread.run_sync(load.reached.wait, BOUND)
        os.kill(doomed.process.pid, signal.SIGKILL)  # with requests in flight
        load.stop.set()
    assert len(load.ok()) >= 300
    async with httpx.AsyncClient(timeout=BOUND) as http:
        after = encode(make_event())
        assert (await post(http, survivor, after)) == {"received": True}
    store = await open_store(inbox_url)
    try:
        stored = {event.id for event in await store.list_events(EventQuery(status=None, limit=100_000))}
    finally:
        await store.close()
    missing = load.ok() - stored
    assert not missing, f"{len(missing)} events got a 200 but are not stored"
    assert json.loads(after)["id"] in stored
