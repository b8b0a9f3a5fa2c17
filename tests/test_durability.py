"""A 200 means stored: across kill -9 under load, and with another process acking on the same database."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from .conftest import cli_env, start_server, stop_server
from .load import CLIENTS, Load

BOUND = 120


def test_every_200_survives_kill_9_under_load(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    server = start_server(db, tmp_path, cli_env(db))
    load = Load(server.webhook_url, target=400)
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(CLIENTS):
            pool.submit(load.client)
        assert load.reached.wait(timeout=BOUND)
        os.kill(server.process.pid, signal.SIGKILL)  # with requests in flight
        load.stop.set()
    stop_server(server)
    assert len(load.ok()) >= 400
    with sqlite3.connect(db) as inbox:
        assert inbox.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in inbox.execute("SELECT id FROM events")}
    missing = load.ok() - stored
    assert not missing, f"{len(missing)} events got a 200 but are not stored"


@pytest.mark.anyio
async def test_serve_under_load_and_an_mcp_agent_acking_share_one_database(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    server = start_server(db, tmp_path, cli_env(db))
    load = Load(server.webhook_url, target=600)
    agent = StdioServerParameters(
        command=sys.executable, args=["-m", "stripe_inbox", "mcp", "--db", str(db)], env=cli_env(db), cwd=str(tmp_path)
    )
    acked: list[str] = []
    tool_errors: list[str] = []

    async def ack_pending(client: Client) -> int:
        page = await client.call_tool("list_events", {"limit": 50})
        if page.is_error:
            tool_errors.append(page.content[0].text)
            return 0
        for event in page.structured_content["events"]:
            result = await client.call_tool("ack_event", {"event_id": event["id"]})
            if result.is_error:
                tool_errors.append(result.content[0].text)
            else:
                acked.append(event["id"])
        return len(page.structured_content["events"])

    try:
        async with Client(agent) as client:
            with ThreadPoolExecutor(CLIENTS) as pool:
                for _ in range(CLIENTS):
                    pool.submit(load.client)
                with anyio.fail_after(BOUND):
                    while not load.reached.is_set() and not tool_errors:
                        await ack_pending(client)  # while serve is writing
                load.stop.set()
            with anyio.fail_after(BOUND):  # every request is answered now: ack the rest
                while await ack_pending(client):
                    pass
    finally:
        load.stop.set()
        stop_server(server)
    statuses = {status for _, status in load.answered}
    assert statuses == {200}, f"Stripe would have seen {statuses - {200}}"
    assert tool_errors == []
    with sqlite3.connect(db) as inbox:
        counts = dict(inbox.execute("SELECT status, count(*) FROM events GROUP BY status").fetchall())
    assert counts == {"acked": len(load.ok())} and len(acked) == len(load.ok())
