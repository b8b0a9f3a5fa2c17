"""The inbox watching itself: `serve` alerts the `[alerts]` channel once when an incident opens and once when
it clears (a loopback receiver stands in for the pager), and prunes acked events past `retention_days`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from stripe_inbox import load_settings, open_inbox
from stripe_inbox.alerts import Alerts
from stripe_inbox.events import IncomingEvent
from stripe_inbox.upkeep import Upkeep

from .conftest import Server, cli_env, encode, make_event, run_cli, signed_headers, start_server, stop_server
from .receivers import HTTPReceiver

pytestmark = pytest.mark.anyio
BOUND = 30
HOOK_SECRET = "hook-secret-for-tests"


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    running = HTTPReceiver(responses={"/broken": (400, {"error": "no such hook"})}).start()
    yield running
    running.stop()


def serve_with(tmp_path: Path, receiver: HTTPReceiver, alerts: str) -> tuple[Server, Path]:
    config = tmp_path / "inbox.toml"
    config.write_text(
        f'[channels.pager]\ntype = "webhook"\nurl = "{receiver.url}/pager"\nsecret_env = "HOOK_SECRET"\n'
        f'[channels.ops]\ntype = "webhook"\nurl = "{receiver.url}/broken"\nsecret_env = "HOOK_SECRET"\n'
        f'[alerts]\nchannel = "pager"\ncheck_seconds = 0.1\n{alerts}'
    )
    env = cli_env(tmp_path / "inbox.db", HOOK_SECRET=HOOK_SECRET)
    return start_server(tmp_path / "inbox.db", tmp_path, env, "--config", str(config)), config


async def pages(receiver: HTTPReceiver, count: int) -> list[str]:
    """The first `count` alerts the pager received, waiting for them as long as BOUND."""
    with anyio.fail_after(BOUND):
        while True:
            receiver.arrived.clear()  # before looking: a request arriving after the look sets it again
            received = [r.json()["text"] for r in receiver.requests if r.path == "/pager"]
            if len(received) >= count:
                return received
            await anyio.to_thread.run_sync(receiver.arrived.wait, 0.5)


async def test_an_unworked_inbox_alerts_once_and_once_more_when_it_clears(
    tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    server, config = serve_with(tmp_path, receiver, "oldest_pending_minutes = 0.002\nfailed_actions = false\n")
    try:
        event = make_event()
        payload = encode(event)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(server.webhook_url, content=payload, headers=signed_headers(payload))
        assert response.status_code == 200
        (opened,) = await pages(receiver, 1)
        assert opened.startswith("stripe-inbox alert: the oldest pending event has waited")

        env = cli_env(tmp_path / "inbox.db", HOOK_SECRET=HOOK_SECRET)
        run_cli("events", "ack", event["id"], "--config", str(config), env=env, cwd=tmp_path)
        opened_again, cleared = await pages(receiver, 2)
        assert opened_again == opened
        assert cleared.startswith("stripe-inbox alert cleared after")
    finally:
        stop_server(server)
    assert len([r for r in receiver.requests if r.path == "/pager"]) == 2  # many checks, one incident
    async with open_inbox(load_settings(str(config), db=str(tmp_path / "inbox.db"))) as inbox:
        rows = await inbox.store.db.fetch("SELECT action, result FROM audit WHERE actor = 'alerts' ORDER BY id")
    assert [row[0] for row in rows] == ["alert_opened", "notify", "alert_cleared", "notify"]


async def test_a_failed_notification_alerts_and_clears_when_no_more_fail(
    tmp_path: Path, receiver: HTTPReceiver
) -> None:
    server, _ = serve_with(tmp_path, receiver, "failed_actions_window_minutes = 0.02\n")
    try:
        event = make_event()
        payload = encode(event)
        async with httpx.AsyncClient(timeout=10) as http:
            await http.post(server.webhook_url, content=payload, headers=signed_headers(payload))
        async with Client(server.mcp_url) as client:
            result = await client.call_tool("notify", {"channel": "ops", "message": "hi", "event_id": event["id"]})
            assert result.structured_content["status"] == "failed"  # type: ignore[index]
        opened, cleared = await pages(receiver, 2)
    finally:
        stop_server(server)
    assert opened.startswith("stripe-inbox alert: outgoing actions ended failed") and "'ops'" in opened
    assert "HTTP 400" in opened
    assert cleared.startswith("stripe-inbox alert cleared after")


async def test_two_replicas_checking_at_once_alert_once(
    tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    config = tmp_path / "inbox.toml"
    config.write_text(
        f'[channels.pager]\ntype = "webhook"\nurl = "{receiver.url}/pager"\nsecret_env = "HOOK_SECRET"\n'
        '[alerts]\nchannel = "pager"\noldest_pending_minutes = 1\n'
    )
    settings = load_settings(str(config), db=str(tmp_path / "inbox.db"))
    async with open_inbox(settings) as one, open_inbox(settings) as other:
        await one.accept([IncomingEvent.parse(encode(make_event()))])
        later = time.time() + 120
        async with anyio.create_task_group() as group:
            group.start_soon(Alerts(one, settings.alerts).check, later)  # type: ignore[arg-type]
            group.start_soon(Alerts(other, settings.alerts).check, later)  # type: ignore[arg-type]
    assert len(await pages(receiver, 1)) == 1
    assert len(receiver.requests) == 1


async def test_retention_prunes_acked_events_once_a_day_and_audits_the_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "inbox.toml"
    config.write_text("retention_days = 1\n")
    async with open_inbox(load_settings(str(config), db=str(tmp_path / "inbox.db"))) as inbox:
        old, older = make_event(), make_event()
        await inbox.accept([IncomingEvent.parse(encode(old)), IncomingEvent.parse(encode(older))])
        await inbox.ack(old["id"], "handled", None, "test")
        await inbox.ack(older["id"], "handled", None, "test")
        two_days_on = time.time() + 2 * 86400
        upkeep = Upkeep(inbox)
        assert await upkeep.retain(two_days_on) == 2
        assert await upkeep.retain(two_days_on + 60) is None  # once a day, whichever replica asks
        rows = await inbox.store.db.fetch("SELECT actor, action, result FROM audit WHERE event_id IS NULL")
    assert [tuple(row) for row in rows] == [("retention", "prune", '{"deleted": 2}')]


async def test_a_paused_forward_destination_alerts(
    tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    forward = (
        "failed_actions = false\n[outbox]\nretry_base_seconds = 0.05\npause_after_failures = 1\npause_seconds = 600\n"
        f'[[forward]]\nname = "legacy"\nurl = "{receiver.url}/broken"\nsecret_env = "FORWARD_SECRET"\n'
    )
    monkeypatch.setenv("FORWARD_SECRET", "whsec_" + "f" * 32)
    server, _ = serve_with(tmp_path, receiver, forward)
    try:
        payload = encode(make_event())
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(server.webhook_url, content=payload, headers=signed_headers(payload))
        assert response.status_code == 200
        (opened,) = await pages(receiver, 1)
        assert opened.startswith("stripe-inbox alert: forwarding is paused after repeated failures to: legacy")
    finally:
        stop_server(server)
