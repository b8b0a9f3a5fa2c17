"""One runtime owns every background loop: an embedding program that serves `create_app(inbox)` alone runs the
outbox, the forwarder, the indexer and upkeep; the runtime started twice in one process runs each loop once; and
settings are config only (circle 1 gone)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from stripe_inbox import Inbox, Runtime
from stripe_inbox.mcp.server import InboxServer
from stripe_inbox.runtime import Loop
from stripe_inbox.stores import Audit, open_store

from .conftest import Server, cli_env, encode, make_event, signed_headers, start_server, stop_server
from .receivers import HTTPReceiver

BOUND = 30  # seconds any one wait for a real process may take
FORWARD_SECRET = "whsec_forward_runtime_" + "f" * 32
HOOK_SECRET = "hook-secret-" + "h" * 20
CORE_LOOPS = {"changes", "outbox", "forwarder", "indexer", "event_webhooks"}

# A program that embeds the inbox: its own uvicorn over create_app(inbox), no MCP server, no `serve`.
EMBEDDING_PROGRAM = """
import socket, sys
import anyio, uvicorn
from stripe_inbox import create_app, load_settings, open_inbox

async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    async with open_inbox(load_settings()) as inbox:
        server = uvicorn.Server(uvicorn.Config(create_app(inbox), log_level="warning", lifespan="on"))
        print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
        await server.serve(sockets=[sock])

if __name__ == "__main__":
    anyio.run(main)
"""


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    running = HTTPReceiver().start()
    yield running
    running.stop()


async def until(condition: Callable[[], object]) -> None:
    """Poll a real process's state, with a deadline."""
    with anyio.fail_after(BOUND):
        while not condition():
            await anyio.sleep(0.1)


async def plant(db: Path) -> tuple[int, int]:
    """Before the program starts: a notification queued by a process that ended before its first attempt, and one
    that has awaited approval for an hour (past the minute allowed)."""
    store = await open_store(str(db))
    try:
        audit = Audit("test", "notify", {})
        queued, _ = await store.add_notification("hook", "queued", None, None, None, "q", time.time() - 120, audit)
        waiting, _ = await store.add_notification(
            "hook", "waiting", None, None, None, "w", time.time() - 3600, audit, "awaiting_approval", "awaiting"
        )
        return queued.id, waiting.id
    finally:
        await store.close()


@pytest.mark.anyio
async def test_an_app_served_without_mcp_runs_the_outbox_forwarder_indexer_and_upkeep(
    tmp_path: Path, receiver: HTTPReceiver
) -> None:
    db = tmp_path / "inbox.db"
    (tmp_path / "stripe-inbox.toml").write_text(
        "approval_timeout_minutes = 1\n"
        f'[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}/notify"\nsecret_env = "HOOK_SECRET"\n'
        f'[[forward]]\nname = "app"\nurl = "{receiver.url}/app"\nsecret_env = "FORWARD_SECRET"\n'
    )
    queued, waiting = await plant(db)
    (tmp_path / "embedded.py").write_text(EMBEDDING_PROGRAM)
    env = cli_env(db, FORWARD_SECRET=FORWARD_SECRET, HOOK_SECRET=HOOK_SECRET)
    server: Server = start_server(db, tmp_path, env, command=[sys.executable, str(tmp_path / "embedded.py")])
    store = await open_store(str(db))
    try:
        event = make_event(description="reached-by-the-embedded-indexer")
        payload = encode(event)
        response = httpx.post(server.webhook_url, content=payload, headers=signed_headers(payload), timeout=BOUND)
        assert response.status_code == 200, response.text
        # The forwarder: the exact bytes reach the destination.
        await until(lambda: any(r.path == "/app" and r.body == payload for r in receiver.requests))
        # The outbox: the notification queued before the program started is sent.
        await until(lambda: any(r.path == "/notify" for r in receiver.requests))
        # The receiver records the request before it answers: the outbox marks it sent once the answer is in.
        with anyio.fail_after(BOUND):
            while (await store.notification(queued)).delivery.status != "sent":  # type: ignore[union-attr]
                await anyio.sleep(0.05)
        # The indexer: the new event is in the search index without any read asking for it.
        with anyio.fail_after(BOUND):
            while await store.unindexed():
                await anyio.sleep(0.1)
        # Upkeep: what waited for approval past its time lapsed, unsent.
        with anyio.fail_after(BOUND):
            while (delivery := (await store.notification(waiting)).delivery) and delivery.status != "rejected":
                await anyio.sleep(0.1)
        assert delivery is not None and delivery.reason is not None and delivery.reason.startswith("lapsed")
        assert httpx.get(f"{server.url}/healthz", timeout=BOUND).json() == {"status": "ok"}
        assert "Traceback" not in "".join(server.output)
    finally:
        await store.close()
        stop_server(server)


@pytest.mark.anyio
async def test_the_runtime_started_twice_runs_each_loop_once(inbox: Inbox) -> None:
    started: list[str] = []

    def counted(name: str) -> Loop:
        async def loop() -> None:
            started.append(name)
            await anyio.sleep_forever()

        return loop

    class Counted(Runtime):
        def loops(self) -> dict[str, Loop]:
            return {name: counted(name) for name in super().loops()}

    async with Counted(inbox).running(), Counted(inbox, upkeep=False).running():
        with anyio.fail_after(BOUND):
            while len(started) < len(CORE_LOOPS) + 1:
                await anyio.sleep(0)
        # What cli.py's `serve` still starts itself returns at once while the runtime runs it.
        never: list[str] = []

        async def upkeep() -> None:
            never.append("ran")

        with anyio.fail_after(BOUND):
            await inbox.loops.supervise("upkeep", upkeep)
        await anyio.sleep(0)
        assert sorted(started) == sorted([*CORE_LOOPS, "upkeep"]) and never == []
    # Stopped, a loop may be started again.
    async with Counted(inbox, upkeep=False).running():
        with anyio.fail_after(BOUND):
            while len(started) < 2 * len(CORE_LOOPS) + 1:
                await anyio.sleep(0)


@pytest.mark.anyio
async def test_the_runtime_runs_the_inbox_loops_upkeep_where_asked_and_a_faces_own(inbox: Inbox) -> None:
    assert set(Runtime(inbox).loops()) == {*CORE_LOOPS, "upkeep"}
    assert set(Runtime(inbox, upkeep=False).loops()) == CORE_LOOPS
    server = InboxServer(inbox, channel=True)
    assert set(server.face_loops()) == {"subscriptions", "channel"}
    assert set(Runtime(inbox, server.face_loops(), upkeep=False).loops()) == {*CORE_LOOPS, "subscriptions", "channel"}
    assert set(InboxServer(inbox).face_loops()) == {"subscriptions"}


def test_settings_are_config_only() -> None:
    """Loading settings loads no use case and no runtime: approvals, the inbox, the outbox and the forwarder stay
    unloaded (the package's face, which imports the inbox for its public API, is left out)."""
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE], capture_output=True, text=True, timeout=BOUND, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


SETTINGS_PROBE = """
import importlib.util, sys, types
spec = importlib.util.find_spec("stripe_inbox")
package = types.ModuleType("stripe_inbox")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["stripe_inbox"] = package
import stripe_inbox.settings
print([m for m in ("stripe_inbox.approvals", "stripe_inbox.inbox", "stripe_inbox.actions.forward",
                   "stripe_inbox.actions.outbox", "stripe_inbox.runtime") if m in sys.modules])
"""
