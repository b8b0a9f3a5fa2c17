"""The real commands: `serve` on a free port, `mcp` over stdio, `trigger`, `events`, `claude-config`."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning

from stripe_inbox.mcp.server import PENDING_URI

from .conftest import (
    SECRET,
    Server,
    cli_env,
    encode,
    make_event,
    run_cli,
    signed_headers,
    start_server,
    stop_server,
    wait_for_line,
)
from .receivers import HTTPReceiver

pytestmark = pytest.mark.anyio
MODES = ["legacy", "auto"]
BOUND = 20


def stdio(db: Path, cwd: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "stripe_inbox", "mcp", "--db", str(db)],
        env=cli_env(db),
        cwd=str(cwd),
    )


async def pending_ids(client: Client) -> list[str]:
    page = json.loads((await client.read_resource(PENDING_URI)).contents[0].text)
    return [event["id"] for event in page["events"]]


@pytest.mark.parametrize("mode", MODES)
async def test_trigger_then_pending_over_http_mcp(server: Server, tmp_path: Path, mode: str) -> None:
    result = run_cli(
        "trigger",
        "invoice.payment_failed",
        "--url",
        server.webhook_url,
        env=cli_env(tmp_path / "inbox.db"),
        cwd=tmp_path,
    )
    event_id, event_type, arrow, status = result.stdout.split()[:4]
    assert (event_type, arrow, status) == ("invoice.payment_failed", "->", "200")
    async with Client(server.mcp_url, mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        assert await pending_ids(client) == [event_id]
        classification = (await client.call_tool("classify", {"event_id": event_id})).structured_content
        assert classification["category"] == "payment_failed"
        ticket = await client.call_tool("create_ticket", {"event_id": event_id, "title": classification["summary"]})
        assert ticket.structured_content["created"]
        note = await client.call_tool(
            "notify", {"channel": "log", "message": "billing: card declined", "event_id": event_id}
        )
        assert note.structured_content["status"] == "sent"
        acked = await client.call_tool("ack_event", {"event_id": event_id, "outcome": "escalated"})
        assert acked.structured_content["status"] == "acked"
        assert await pending_ids(client) == []
        detail = json.loads((await client.read_resource(f"stripe://events/{event_id}")).contents[0].text)
        assert [a["action"] for a in detail["audit"]] == [
            "classify",
            "create_ticket",
            "notify",
            "deliver_notification",
            "ack_event",
        ]
    wait_for_line(server, "billing: card declined")  # the log channel writes to stderr
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'stripe_inbox_tool_calls_total{outcome="ok",tool="ack_event"} 1.0' in metrics


def test_http_mcp_refuses_foreign_hosts_and_origins_without_a_token(server: Server) -> None:
    request = {"content": b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "timeout": 10}
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    rebinding = httpx.post(server.mcp_url, headers={**headers, "Host": "evil.example"}, **request)
    assert rebinding.status_code == 421
    cross_site = httpx.post(server.mcp_url, headers={**headers, "Origin": "http://evil.example"}, **request)
    assert cross_site.status_code == 403
    assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_mcp_sees_events_written_by_serve(server: Server, tmp_path: Path, mode: str) -> None:
    payload = encode(make_event("charge.refunded"))
    event_id = json.loads(payload)["id"]
    async with Client(stdio(tmp_path / "inbox.db", tmp_path), mode=mode) as client:
        results: list[Any] = []

        async def waiter() -> None:
            results.append(await client.call_tool("wait_for_events", {"timeout_seconds": BOUND}))

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as group:
                group.start_soon(waiter)
                async with httpx.AsyncClient(timeout=10) as http:
                    response = await http.post(server.webhook_url, content=payload, headers=signed_headers(payload))
                assert response.status_code == 200
        assert [e["id"] for e in results[0].structured_content["events"]] == [event_id]
        assert await pending_ids(client) == [event_id]


async def test_stdio_legacy_subscriber_hears_about_deliveries_to_serve(server: Server, tmp_path: Path) -> None:
    send, receive = anyio.create_memory_object_stream[str](10)

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            await send.send(message.params.uri)

    async with Client(stdio(tmp_path / "inbox.db", tmp_path), mode="legacy", message_handler=on_message) as client:
        with send, receive:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.subscribe_resource(PENDING_URI)
            run_cli(
                "trigger",
                "charge.dispute.created",
                "--url",
                server.webhook_url,
                env=cli_env(tmp_path / "inbox.db"),
                cwd=tmp_path,
            )
            with anyio.fail_after(BOUND):
                assert await receive.receive() == PENDING_URI


async def test_serve_generates_a_secret_once_and_trigger_uses_it(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    env = cli_env(db)
    del env["STRIPE_WEBHOOK_SECRET"]
    first = start_server(db, tmp_path, env)
    try:
        secret_file = tmp_path / "fresh.db.whsec"
        secret = secret_file.read_text().strip()
        assert secret.startswith("whsec_") and secret_file.stat().st_mode & 0o777 == 0o600
        assert secret in "".join(first.output)  # printed once, for the user to copy
        result = run_cli("trigger", "customer.subscription.deleted", "--url", first.webhook_url, env=env, cwd=tmp_path)
        assert " -> 200 " in result.stdout
    finally:
        stop_server(first)
    second = start_server(db, tmp_path, env)
    try:
        assert secret_file.read_text().strip() == secret  # reused, not regenerated
        assert secret not in "".join(second.output)
        assert (
            " -> 200 " in run_cli("trigger", "invoice.paid", "--url", second.webhook_url, env=env, cwd=tmp_path).stdout
        )
    finally:
        stop_server(second)


def test_serve_refuses_a_public_host_without_an_mcp_token(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--host", "0.0.0.0", "--port", "0", env=cli_env(tmp_path / "x.db"), cwd=tmp_path, check=False
    )
    assert result.returncode != 0
    assert "STRIPE_INBOX_MCP_TOKEN" in result.stderr


def test_bad_secret_is_a_clear_startup_error_that_hides_it(tmp_path: Path) -> None:
    api_key = "sk_test_51HxYzSecretValue123"
    result = run_cli(
        "serve",
        "--port",
        "0",
        env=cli_env(tmp_path / "x.db", STRIPE_WEBHOOK_SECRET=api_key),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr and "looks like a Stripe API key" in result.stderr
    assert "51HxYz" not in result.stderr


def test_trigger_without_a_secret_or_with_an_unknown_type(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "x.db")
    del env["STRIPE_WEBHOOK_SECRET"]
    no_secret = run_cli("trigger", "invoice.paid", env=env, cwd=tmp_path, check=False)
    assert no_secret.returncode != 0 and "no webhook secret" in no_secret.stderr
    unknown = run_cli("trigger", "invoice.bogus", env=cli_env(tmp_path / "x.db"), cwd=tmp_path, check=False)
    assert unknown.returncode != 0 and "invoice.payment_failed" in unknown.stderr
    refused = run_cli(
        "trigger",
        "invoice.paid",
        "--url",
        "http://127.0.0.1:9/webhooks/stripe",
        env=cli_env(tmp_path / "x.db"),
        cwd=tmp_path,
        check=False,
    )
    assert refused.returncode != 0 and "is `stripe-inbox serve` running?" in refused.stderr


def test_events_commands(server: Server, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "inbox.db")
    run_cli("trigger", "invoice.paid", "--url", server.webhook_url, "--count", "3", env=env, cwd=tmp_path)
    listed = json.loads(run_cli("events", "list", "--json", env=env, cwd=tmp_path).stdout)
    assert listed["total"] == 3 and {e["type"] for e in listed["events"]} == {"invoice.paid"}
    first = listed["events"][0]["id"]

    table = run_cli("events", "list", "--type", "invoice.paid", env=env, cwd=tmp_path).stdout
    assert first in table and "USD 49.00" in table and "3 of 3" in table

    assert (
        "is now acked (ignored)"
        in run_cli("events", "ack", first, "--outcome", "ignored", "--note", "test", env=env, cwd=tmp_path).stdout
    )
    assert "was already acked" in run_cli("events", "ack", first, env=env, cwd=tmp_path).stdout
    shown = json.loads(run_cli("events", "show", first, "--json", env=env, cwd=tmp_path).stdout)
    assert shown["state"]["outcome"] == "ignored" and shown["state"]["note"] == "test"
    assert [(a["actor"], a["action"]) for a in shown["audit"]] == [("cli", "ack_event")]
    assert "status: acked (ignored: test)" in run_cli("events", "show", first, env=env, cwd=tmp_path).stdout

    missing = run_cli("events", "show", "evt_nope", env=env, cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "no event 'evt_nope'" in missing.stderr

    assert "deleted 0" in run_cli("events", "prune", "--acked-older-than", "1", env=env, cwd=tmp_path).stdout
    assert "deleted 1" in run_cli("events", "prune", "--acked-older-than", "0", env=env, cwd=tmp_path).stdout
    remaining = json.loads(run_cli("events", "list", "--status", "all", "--json", env=env, cwd=tmp_path).stdout)
    assert remaining["total"] == 2 and first not in {e["id"] for e in remaining["events"]}


async def test_claude_config_entry_starts_a_working_stdio_server(tmp_path: Path) -> None:
    db = tmp_path / "claude.db"
    entry = json.loads(run_cli("claude-config", "--db", str(db), env=cli_env(db), cwd=tmp_path).stdout)
    server = entry["mcpServers"]["stripe-inbox"]
    assert Path(server["command"]).is_absolute() and Path(server["command"]).exists()
    assert server["args"][-3:] == ["mcp", "--db", str(db.resolve())]
    params = StdioServerParameters(command=server["command"], args=server["args"], env={"PATH": "/usr/bin:/bin"})
    async with Client(params, mode="legacy") as client:  # as Claude Desktop would start it
        stats = (await client.call_tool("get_stats", {})).structured_content
        assert stats["total"] == 0


def test_secret_never_reaches_output_or_the_database(server: Server, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "inbox.db")
    sent = run_cli("trigger", "payment_intent.payment_failed", "--url", server.webhook_url, env=env, cwd=tmp_path)
    run_cli("events", "list", env=env, cwd=tmp_path)
    wait_for_line(server, sent.stdout.split()[0])  # the delivery's log line is out
    assert SECRET not in "".join(server.output)
    assert SECRET.encode() not in b"".join(path.read_bytes() for path in tmp_path.glob("inbox.db*"))


async def test_mcp_token_is_required_when_set_and_the_ingress_needs_none(tmp_path: Path) -> None:
    token = "s3cret-token-for-mcp"
    db = tmp_path / "token.db"
    running = start_server(db, tmp_path, cli_env(db, STRIPE_INBOX_MCP_TOKEN=token), "--host", "0.0.0.0")
    try:
        url = running.mcp_url.replace("0.0.0.0", "127.0.0.1")
        body = {"content": b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "timeout": 10}
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        assert httpx.post(url, headers=headers, **body).status_code == 401
        wrong = httpx.post(url, headers={**headers, "Authorization": "Bearer not-it"}, **body)
        assert wrong.status_code == 401
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            assert (await client.call_tool("get_stats", {})).structured_content["total"] == 0
        webhook = running.webhook_url.replace("0.0.0.0", "127.0.0.1")
        sent = run_cli("trigger", "invoice.paid", "--url", webhook, env=cli_env(db), cwd=tmp_path).stdout
        assert " -> 200 " in sent
        wait_for_line(running, sent.split()[0])  # the delivery's log line is out
        assert token not in "".join(running.output)
    finally:
        stop_server(running)


async def test_queued_notification_survives_a_restart_and_is_sent_once(tmp_path: Path) -> None:
    receiver = HTTPReceiver()
    db = tmp_path / "outbox.db"
    (tmp_path / "stripe-inbox.toml").write_text(
        '[outbox]\nretry_base_seconds = 0.5\n[channels.ops]\ntype = "slack"\nwebhook_url_env = "SLACK_URL"\n'
    )
    env = cli_env(db, SLACK_URL=f"{receiver.url}/slack")
    first = start_server(db, tmp_path, env)
    try:
        run_cli("trigger", "charge.dispute.created", "--url", first.webhook_url, env=env, cwd=tmp_path)
        async with Client(first.mcp_url) as client:
            (event,) = (await client.call_tool("list_events", {})).structured_content["events"]
            queued = await client.call_tool(
                "notify", {"channel": "ops", "message": "dispute!", "event_id": event["id"]}
            )
            assert queued.structured_content["status"] == "queued"
    finally:
        stop_server(first)
    receiver.start()
    second = start_server(db, tmp_path, env)
    try:
        assert receiver.arrived.wait(timeout=BOUND)
        updates, stats_changed = anyio.create_memory_object_stream[None](10)

        async def on_message(message: Any) -> None:
            if getattr(message, "method", None) == "notifications/resources/updated":
                await updates.send(None)

        async with Client(second.mcp_url, mode="legacy", message_handler=on_message) as client:
            with updates, stats_changed, anyio.fail_after(BOUND):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await client.subscribe_resource("stripe://stats")
                while (await client.call_tool("get_stats", {})).structured_content["actions"]["sent"] != 1:
                    await stats_changed.receive()
            detail = (await client.call_tool("get_event", {"event_id": event["id"]})).structured_content
    finally:
        stop_server(second)
        receiver.stop()
    assert len(receiver.requests) == 1 and "dispute!" in receiver.requests[0].json()["text"]
    delivery = detail["notifications"][0]["delivery"]
    assert (delivery["status"], delivery["attempts"]) == ("sent", 2)


async def test_serve_indexes_a_delivery_for_search_within_moments(server: Server, tmp_path: Path) -> None:
    event = make_event("invoice.payment_failed")
    event["data"]["object"]["customer_email"] = "moment@example.com"
    payload = encode(event)
    async with httpx.AsyncClient(timeout=10) as http:
        assert (
            await http.post(server.webhook_url, content=payload, headers=signed_headers(payload))
        ).status_code == 200
    async with Client(server.mcp_url) as client:
        with anyio.fail_after(BOUND):  # the indexer runs every half second; no sleep here, one call after another
            while True:
                page = (await client.call_tool("list_events", {"email": "moment@example.com"})).structured_content
                if page["events"]:
                    break
                assert page["unindexed"] == 1  # not found yet, and the page says why
    assert [e["id"] for e in page["events"]] == [event["id"]] and page["unindexed"] == 0
