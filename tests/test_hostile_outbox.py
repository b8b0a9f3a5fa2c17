"""Hostile notifications: a header injection is refused when asked for, a delivery that cannot be sent fails alone
(recorded, never taking the server down), a failing background loop is restarted alone and shown on /healthz,
a customer e-mail goes to exactly one parsed address, and event text reaches Slack inert."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.actions import outbox as outbox_module
from stripe_inbox.actions.channels import Message, address_problem, slack_payload
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp.server import InboxServer
from stripe_inbox.stores import Audit
from stripe_inbox.supervisor import Supervisor
from stripe_inbox.web.app import create_app

from .conftest import SECRET, Server, cli_env, encode, make_event, run_cli, signed_headers, start_server, stop_server
from .receivers import HTTPReceiver, SMTPReceiver

pytestmark = pytest.mark.anyio
BOUND = 30  # seconds any one wait for a real process may take
FORWARD_SECRET = "whsec_forward_hostile_" + "f" * 32
INJECTED_SUBJECT = "Your invoice\nBcc: attacker@evil.example"
HOSTILE_RECIPIENTS = {
    "list": "victim@example.com, attacker@evil.example",
    "display name": '"victim@example.com" <attacker@evil.example>',
    "group": "friends: victim@example.com, attacker@evil.example;",
    "line break": "victim@example.com\r\nBcc: attacker@evil.example",
}


@pytest.fixture
def smtp() -> Iterator[SMTPReceiver]:
    with SMTPReceiver() as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    running = HTTPReceiver().start()
    yield running
    running.stop()


def email_channel(name: str, port: int, to: str) -> str:
    return (
        f'[channels.{name}]\ntype = "email"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f'from = "support@example.com"\nto = "{to}"\n'
    )


def charge_event(**obj: Any) -> dict[str, Any]:
    event = make_event("charge.failed")
    event["data"]["object"] = {"id": "ch_1", "object": "charge", "amount": 4900, "currency": "usd", **obj}
    return event


def post(server: Server, event: dict[str, Any]) -> str:
    payload = encode(event)
    response = httpx.post(server.webhook_url, content=payload, headers=signed_headers(payload), timeout=BOUND)
    assert response.status_code == 200, response.text
    return str(event["id"])


def tool_error(result: Any) -> str:
    assert result.is_error, result.structured_content
    return str(result.content[0].text)


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content  # type: ignore[no-any-return]


@asynccontextmanager
async def serving(tmp_path: Path, config: str, **env: str) -> AsyncIterator[tuple[Server, Client]]:
    (tmp_path / "stripe-inbox.toml").write_text(config)
    db = tmp_path / "inbox.db"
    server = start_server(db, tmp_path, cli_env(db, **env))
    try:
        async with Client(server.mcp_url) as client:
            yield server, client
        assert server.process.poll() is None, "".join(server.output)
    finally:
        stop_server(server)


# -- item 1: a notification that cannot be sent fails alone ----------------------------------------------------


async def test_a_subject_with_a_line_break_is_refused_over_mcp_and_nothing_is_sent(
    tmp_path: Path, smtp: SMTPReceiver
) -> None:
    async with serving(tmp_path, email_channel("billing", smtp.port, "billing@example.com")) as (server, client):
        event_id = post(server, charge_event())
        arguments = {"channel": "billing", "message": "Card declined", "event_id": event_id}
        refused = tool_error(await client.call_tool("notify", {**arguments, "subject": INJECTED_SUBJECT}))
        assert "subject must be one line" in refused
        assert smtp.messages == []
        assert ok(await client.call_tool("notify", {**arguments, "subject": "Card declined"}))["status"] == "sent"
        (_, recipients, mail), *rest = smtp.messages
        assert rest == [] and recipients == ["billing@example.com"] and mail["Bcc"] is None
        detail = ok(await client.call_tool("get_event", {"event_id": event_id}))
        assert len(detail["notifications"]) == 1  # the refused one was never stored
        assert httpx.get(f"{server.url}/healthz", timeout=BOUND).status_code == 200


async def plant_old_rows(tmp_path: Path, customer: str, fixed: str) -> tuple[str, list[int]]:
    """What an older version stored before subjects and recipients were checked, left `sending` with a lease that
    has expired: that version crashed while sending them."""
    settings = load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET)
    event = charge_event(customer_email=HOSTILE_RECIPIENTS["list"])
    async with open_inbox(settings) as inbox:
        await inbox.accept([IncomingEvent.parse(encode(event))])
        crashed_at = time.time() - 600
        planted = []
        for channel, subject, recipient in (
            (fixed, INJECTED_SUBJECT, "billing@example.com"),
            (customer, "Your card", HOSTILE_RECIPIENTS["list"]),
        ):
            made, _ = await inbox.store.add_notification(
                channel, "hello", subject, recipient, event["id"], channel, crashed_at, Audit("old", "notify", {})
            )
            planted.append(made.id)
        assert len(await inbox.store.claim_deliveries(crashed_at + 60, 60, 10)) == 2
    return event["id"], planted


async def wait_until_failed(client: Client, event_id: str, count: int) -> list[dict[str, Any]]:
    """Poll the real server's state, with a deadline, until `count` of the event's notifications failed."""
    with anyio.fail_after(BOUND):
        while True:
            notifications = ok(await client.call_tool("get_event", {"event_id": event_id}))["notifications"]
            failed = [n for n in notifications if n["delivery"]["status"] == "failed"]
            if len(failed) == count:
                return failed
            await anyio.sleep(0.2)


async def test_old_deliveries_that_cannot_be_sent_fail_alone_and_serve_keeps_serving(
    tmp_path: Path, smtp: SMTPReceiver, receiver: HTTPReceiver
) -> None:
    event_id, planted = await plant_old_rows(tmp_path, "customer", "billing")
    config = (
        email_channel("billing", smtp.port, "billing@example.com")
        + email_channel("customer", smtp.port, "customer")
        + f'[[forward]]\nname = "app"\nurl = "{receiver.url}/app"\nsecret_env = "FORWARD_SECRET"\n'
    )
    async with serving(tmp_path, config, FORWARD_SECRET=FORWARD_SECRET) as (server, client):
        failed = await wait_until_failed(client, event_id, 2)
        reasons = {n["id"]: n["delivery"]["reason"] for n in failed}
        assert set(reasons) == set(planted)
        assert "subject must be one line" in reasons[planted[0]]
        assert "not one plain address" in reasons[planted[1]]
        assert smtp.messages == []
        # Everything else the server does goes on: /mcp, the forwarder, the indexer and health.
        receiver.arrived.clear()
        fresh = post(server, charge_event(description="fresh-after-the-failures"))
        assert await anyio.to_thread.run_sync(receiver.arrived.wait, BOUND)
        assert json.loads(receiver.requests[-1].body)["id"] == fresh
        with anyio.fail_after(BOUND):
            while not ok(await client.call_tool("list_events", {"query": "fresh-after-the-failures"}))["events"]:
                await anyio.sleep(0.2)
        assert httpx.get(f"{server.url}/healthz", timeout=BOUND).json() == {"status": "ok"}
        assert "Traceback" not in "".join(server.output)


async def test_an_unexpected_error_in_a_send_is_recorded_and_the_outbox_goes_on(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_send = outbox_module.send

    async def send(config: Any, message: Message) -> None:
        if message.text == "poison":
            raise KeyError("a bug in a library, say")
        await real_send(config, message)

    monkeypatch.setattr(outbox_module, "send", send)
    made = []
    for text in ("poison", "fine"):
        notification, _ = await inbox.store.add_notification(
            "log", text, None, None, None, text, time.time(), Audit("t", "notify", {})
        )
        made.append(notification.id)
    assert await inbox.outbox.deliver_due(time.time() + 3600) == 2
    poisoned, fine = [(await inbox.store.notification(n)).delivery for n in made]
    assert (poisoned.status, fine.status) == ("failed", "sent")
    assert poisoned.reason == "unexpected error while sending (KeyError); not retried"
    assert await inbox.store.next_delivery_at() is None  # nothing left to crash on again


# -- item 1: supervised background loops and /healthz ----------------------------------------------------------


async def test_a_failing_loop_is_restarted_alone_and_healthz_names_it_meanwhile(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox.loops = Supervisor(first_backoff=0.05, max_backoff=0.05, stable_seconds=BOUND)
    calls: list[anyio.Event] = [anyio.Event(), anyio.Event()]

    async def failing_then_fine() -> None:
        calls[0 if not calls[0].is_set() else 1].set()
        if calls[1].is_set():
            await anyio.sleep_forever()
        raise RuntimeError("the index went away")

    monkeypatch.setattr(inbox.indexer, "run", failing_then_fine)
    server = InboxServer(inbox)
    transport = httpx.ASGITransport(app=create_app(inbox, server))
    async with server.running(), httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        with anyio.fail_after(BOUND):
            await calls[0].wait()
        health = await http.get("/healthz")
        assert health.status_code == 503
        assert "indexer (RuntimeError, failures in a row: 1)" in health.json()["message"]
        (down,) = health.json()["loops"].items()
        assert down[0] == "indexer" and (down[1]["failures"], down[1]["error"]) == (1, "RuntimeError")
        # The other loops were not taken down: a new event still reaches a waiting agent.
        await inbox.accept([IncomingEvent.parse(encode(make_event()))])
        assert not (await inbox.wait_for_events(BOUND)).timed_out
        with anyio.fail_after(BOUND):
            await calls[1].wait()
        # Restarted, but not yet trusted: a loop that fails again soon is crash-looping.
        health = await http.get("/healthz")
        assert health.status_code == 503 and health.json()["loops"]["indexer"]["restarting"] is False
        inbox.loops.stable_seconds = 0
        assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_backoff_doubles_to_its_bound_and_failures_are_logged_without_their_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "stripe_inbox.supervisor")
    supervisor = Supervisor(first_backoff=0.001, max_backoff=0.004, stable_seconds=BOUND)
    runs = 0
    fifth = anyio.Event()

    async def always_failing() -> None:
        nonlocal runs
        runs += 1
        if runs == 5:
            fifth.set()
            await anyio.sleep_forever()
        raise ValueError(f"token-{runs}")

    async with anyio.create_task_group() as group:
        group.start_soon(supervisor.supervise, "flaky", always_failing)
        with anyio.fail_after(BOUND):
            await fifth.wait()
        group.cancel_scope.cancel()
    said = [record.getMessage() for record in caplog.records]
    waits = [line.split("restarting in ")[1].split(" s")[0] for line in said if "restarting in" in line]
    assert waits == ["0.001", "0.002", "0.004", "0.004"]
    # Each failure is logged with where it was raised, never its message (it may carry data or a secret).
    assert sum("flaky failed: ValueError, raised at" in line for line in said) == 4
    assert not any("token-1" in line for line in said)
    (health,) = supervisor.unhealthy()
    assert (health.name, health.crashes, health.error) == ("flaky", 4, "ValueError")


# -- item 6: exactly one recipient; event text inert in each channel's markup ----------------------------------


@pytest.mark.parametrize("value", list(HOSTILE_RECIPIENTS.values()), ids=list(HOSTILE_RECIPIENTS))
def test_only_one_plain_address_passes(value: str) -> None:
    assert address_problem(value) is not None
    assert address_problem("jenny.o'neil+billing@mail.example.co.uk") is None


async def test_customer_email_goes_to_exactly_one_parsed_address_or_is_refused(
    tmp_path: Path, smtp: SMTPReceiver
) -> None:
    async with serving(tmp_path, email_channel("customer", smtp.port, "customer")) as (server, client):
        for kind, value in HOSTILE_RECIPIENTS.items():
            event_id = post(server, charge_event(customer_email=value))
            arguments = {"channel": "customer", "message": "Your card failed", "event_id": event_id}
            refused = tool_error(await client.call_tool("notify", arguments))
            assert "is not one plain address" in refused and "nothing was sent" in refused, kind
        plain = post(server, charge_event(customer_email=" jenny@example.com "))
        waiting = ok(await client.call_tool("notify", {"channel": "customer", "message": "Hi", "event_id": plain}))
        assert waiting["status"] == "awaiting_approval"
        assert waiting["notification"]["recipient"] == "jenny@example.com"
        env = cli_env(tmp_path / "inbox.db")
        listed = run_cli("approvals", "list", env=env, cwd=tmp_path).stdout
        assert "jenny@example.com" in listed and "attacker" not in listed
        (approval,) = json.loads(run_cli("approvals", "list", "--json", env=env, cwd=tmp_path).stdout)
        assert approval["notification"]["recipient"] == "jenny@example.com"
        run_cli("approvals", "approve", str(approval["id"]), env=env, cwd=tmp_path)
    ((_, recipients, mail),) = smtp.messages
    assert recipients == ["jenny@example.com"] and mail["To"] == "jenny@example.com"


async def test_the_approval_request_names_the_parsed_recipient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp: SMTPReceiver
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stripe-inbox.toml").write_text(email_channel("customer", smtp.port, "customer"))
    asked: list[str] = []

    async def elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"send": True})

    settings = load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET)
    async with open_inbox(settings) as inbox:
        plain, hostile = (
            charge_event(receipt_email="jenny@example.com"),
            charge_event(receipt_email=HOSTILE_RECIPIENTS["display name"]),
        )
        await inbox.accept([IncomingEvent.parse(encode(plain)), IncomingEvent.parse(encode(hostile))])
        async with Client(InboxServer(inbox), mode="legacy", elicitation_callback=elicit) as client:
            to_hostile = {"channel": "customer", "message": "x", "event_id": hostile["id"]}
            assert "display name" in tool_error(await client.call_tool("notify", to_hostile)) and asked == []
            to_plain = {"channel": "customer", "message": "x", "event_id": plain["id"]}
            assert ok(await client.call_tool("notify", to_plain))["status"] == "sent"
    (question,) = asked
    assert "to jenny@example.com," in question
    ((_, recipients, _),) = smtp.messages
    assert recipients == ["jenny@example.com"]


async def test_slack_markup_in_event_text_arrives_inert(tmp_path: Path, receiver: HTTPReceiver) -> None:
    config = '[channels.ops]\ntype = "slack"\nwebhook_url_env = "SLACK_URL"\n'
    async with serving(tmp_path, config, SLACK_URL=f"{receiver.url}/slack") as (server, client):
        event_id = post(server, charge_event(customer="<!channel>"))
        message = "The customer wrote: <https://evil.example|your invoice> & <!here>"
        arguments = {"channel": "ops", "message": message, "event_id": event_id, "subject": "<!channel> refund"}
        assert ok(await client.call_tool("notify", arguments))["status"] == "sent"
    (request,) = receiver.requests
    payload = request.json()
    section, context = payload["blocks"]
    texts = [payload["text"], section["text"]["text"], context["elements"][0]["text"]]
    assert all("<" not in text and ">" not in text for text in texts)
    assert section["text"]["text"] == (
        "*&lt;!channel&gt; refund*\nThe customer wrote: &lt;https://evil.example|your invoice&gt; &amp; &lt;!here&gt;"
    )
    assert "*Customer:* &lt;!channel&gt;" in context["elements"][0]["text"]


def test_slack_escaping_keeps_the_agents_own_emphasis() -> None:
    payload = slack_payload(Message(channel="ops", text="*urgent*: A & B"))
    assert payload["blocks"][0]["text"]["text"] == "*urgent*: A &amp; B"


async def test_a_log_channel_message_cannot_forge_log_lines(inbox: Inbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "stripe_inbox.notify")
    forged = "paid\n2026-12-03 INFO stripe_inbox.outbox: all good"
    assert (await inbox.notify("log", forged, None, None, "t")).status == "sent"
    (record,) = [r for r in caplog.records if r.name == "stripe_inbox.notify"]
    assert "\n" not in record.getMessage() and "paid\\n2026-12-03" in record.getMessage()
