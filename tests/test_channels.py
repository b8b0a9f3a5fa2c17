"""Notifications and tickets reaching real servers on loopback, through the outbox."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.actions.channels import SIGNATURE_HEADER
from stripe_inbox.errors import InvalidArgument
from stripe_inbox.events import IncomingEvent

from .conftest import SECRET, encode, make_event
from .receivers import HTTPReceiver, SMTPReceiver

pytestmark = pytest.mark.anyio
SLACK_URL_SECRET = "T000/B000/supersecretslackpath"
HOOK_SECRET = "hook-signing-secret-123"
GITHUB_TOKEN = "ghp_testtoken123456"


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    running = HTTPReceiver()
    yield running
    running.stop()


@asynccontextmanager
async def inbox_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, **env: str) -> AsyncIterator[Inbox]:
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "stripe-inbox.toml").write_text(config)
    settings = load_settings(db=str(tmp_path / "channels.db"), webhook_secret=SECRET)
    async with open_inbox(settings) as inbox:
        yield inbox


async def add(inbox: Inbox, event: dict[str, Any]) -> str:
    await inbox.store.add_events([IncomingEvent.parse(encode(event))], time.time())
    return event["id"]


def charge_event(**obj: Any) -> dict[str, Any]:
    event = make_event("charge.failed")
    event["data"]["object"] = {
        "id": "ch_1",
        "object": "charge",
        "amount": 4900,
        "currency": "usd",
        "customer": "cus_42",
        **obj,
    }
    return event


async def test_slack_gets_a_readable_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    receiver.start()
    config = '[channels.ops]\ntype = "slack"\nwebhook_url_env = "SLACK_URL"\n'
    async with inbox_with(tmp_path, monkeypatch, config, SLACK_URL=f"{receiver.url}/{SLACK_URL_SECRET}") as inbox:
        event_id = await add(inbox, charge_event())
        result = await inbox.notify("ops", "Card declined twice", event_id, "Failed payment", "test")
        assert (result.status, result.reason) == ("sent", None)
    (request,) = receiver.requests
    assert request.path == f"/{SLACK_URL_SECRET}"
    payload = request.json()
    assert "Card declined twice" in payload["text"] and "cus_42" in payload["text"] and "USD 49.00" in payload["text"]
    section, context = payload["blocks"]
    assert section["text"]["text"] == "*Failed payment*\nCard declined twice"
    assert event_id in context["elements"][0]["text"] and "charge.failed" in context["elements"][0]["text"]
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("channels.db*"))
    assert SLACK_URL_SECRET.encode() not in stored


async def test_signed_webhook_can_be_verified_by_the_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    receiver.start()
    config = f'[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}/hook"\nsecret_env = "HOOK_SECRET"\n'
    async with inbox_with(tmp_path, monkeypatch, config, HOOK_SECRET=HOOK_SECRET) as inbox:
        event_id = await add(inbox, charge_event())
        assert (await inbox.notify("hook", "hello", event_id, None, "test")).status == "sent"
    (request,) = receiver.requests
    signature = request.headers[SIGNATURE_HEADER]
    timestamp, v1 = (part.split("=", 1)[1] for part in signature.split(","))
    expected = hmac.new(HOOK_SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected) and abs(int(timestamp) - time.time()) < 60
    body = request.json()
    assert (body["channel"], body["text"], body["event_id"], body["customer"]) == ("hook", "hello", event_id, "cus_42")


async def test_email_to_a_fixed_address_and_to_the_customer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SMTPReceiver() as smtp:
        config = (
            f'[channels.billing]\ntype = "email"\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n'
            'from = "inbox@example.com"\nto = "billing@example.com"\n'
            f'[channels.customer]\ntype = "email"\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n'
            'from = "support@example.com"\nto = "customer"\n'
        )
        async with inbox_with(tmp_path, monkeypatch, config) as inbox:
            with_email = await add(inbox, charge_event(billing_details={"email": "jenny@example.com"}))
            without = await add(inbox, charge_event())
            assert (await inbox.notify("billing", "Dispute opened", with_email, "Action needed", "t")).status == "sent"
            # A channel to the customer asks a person first: here one agreed during the call.
            to_customer = await inbox.notify("customer", "Your card failed", with_email, None, "t", consent="granted")
            assert to_customer.status == "sent"
            with pytest.raises(InvalidArgument, match=f"event '{without}' has no customer email address"):
                await inbox.notify("customer", "Your card failed", without, None, "t")
            with pytest.raises(InvalidArgument, match="pass the event_id"):
                await inbox.notify("customer", "Hello", None, None, "t")
        (sender, recipients, mail), (_, customer_recipients, customer_mail) = smtp.messages
    assert (sender, recipients, mail["Subject"]) == ("inbox@example.com", ["billing@example.com"], "Action needed")
    assert mail.get_payload().strip() == "Dispute opened"
    assert customer_recipients == ["jenny@example.com"] and customer_mail["Subject"] == "Stripe charge.failed"


async def test_github_issue_is_created_and_recorded_on_the_ticket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    receiver.responses["/repos/acme/billing/issues"] = (
        201,
        {"number": 42, "html_url": "https://github.com/acme/billing/issues/42"},
    )
    receiver.start()
    config = (
        f'[tickets]\ntype = "github"\nrepository = "acme/billing"\ntoken_env = "GITHUB_TOKEN"\n'
        f'api_base = "{receiver.url}"\n'
    )
    async with inbox_with(tmp_path, monkeypatch, config, GITHUB_TOKEN=GITHUB_TOKEN) as inbox:
        event_id = await add(inbox, charge_event())
        result = await inbox.create_ticket(event_id, "Card declined", "Call the customer", "urgent", "test")
        again = await inbox.create_ticket(event_id, "Card declined", "", "urgent", "test")
    ticket = result.ticket
    assert (ticket.tracker, ticket.tracker_id, ticket.tracker_url) == (
        "github",
        "#42",
        "https://github.com/acme/billing/issues/42",
    )
    assert ticket.delivery is not None and ticket.delivery.status == "sent"
    assert not again.created and again.ticket.tracker_id == "#42"
    (request,) = receiver.requests  # the repeat did not open a second issue
    assert request.path == "/repos/acme/billing/issues"
    assert request.headers["Authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert request.headers["Accept"] == "application/vnd.github+json"
    body = request.json()
    assert body["title"] == "Card declined" and body["labels"] == ["stripe-inbox", "priority: urgent"]
    assert body["body"].startswith("Call the customer") and event_id in body["body"]


async def test_webhook_tracker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver) -> None:
    receiver.responses["/tickets"] = (200, {"id": "T-9", "url": "https://tracker.example/T-9"})
    receiver.start()
    config = f'[tickets]\ntype = "webhook"\nurl = "{receiver.url}/tickets"\nsecret_env = "HOOK_SECRET"\n'
    async with inbox_with(tmp_path, monkeypatch, config, HOOK_SECRET=HOOK_SECRET) as inbox:
        event_id = await add(inbox, charge_event())
        ticket = (await inbox.create_ticket(event_id, "Refund?", "", "normal", "test")).ticket
    assert (ticket.tracker_id, ticket.tracker_url) == ("T-9", "https://tracker.example/T-9")
    (request,) = receiver.requests
    assert request.json()["title"] == "Refund?" and SIGNATURE_HEADER in request.headers


async def test_receiver_down_then_up_is_delivered_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    config = '[channels.ops]\ntype = "slack"\nwebhook_url_env = "SLACK_URL"\n'
    async with inbox_with(tmp_path, monkeypatch, config, SLACK_URL=f"{receiver.url}/slack") as inbox:
        event_id = await add(inbox, charge_event())
        queued = await inbox.notify("ops", "retry me", event_id, None, "test")
        assert queued.status == "queued" and "cannot connect" in (queued.reason or "")
        assert queued.notification.delivery.next_attempt_at is not None
        assert await inbox.outbox.deliver_due() == 0  # backing off: not due yet
        receiver.start()
        later = time.time() + 3600
        assert await inbox.outbox.deliver_due(now=later) == 1
        assert await inbox.outbox.deliver_due(now=later + 3600) == 0
        again = await inbox.notify("ops", "retry me", event_id, None, "test")  # the agent repeats itself
        assert again.duplicate and again.status == "sent"
        detail = await inbox.get_event(event_id)
        stats = await inbox.stats()
    assert len(receiver.requests) == 1
    (notification,) = detail.notifications
    assert (notification.delivery.status, notification.delivery.attempts) == ("sent", 2)
    assert stats.actions["sent"] == 1 and stats.actions["queued"] == 0


async def test_last_attempt_fails_visibly_in_the_audit_trail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    receiver.responses["/slack"] = (503, {"error": "overloaded"})
    receiver.start()
    config = (
        "[outbox]\nmax_attempts = 3\nretry_base_seconds = 1\n"
        '[channels.ops]\ntype = "slack"\nwebhook_url_env = "SLACK_URL"\n'
    )
    async with inbox_with(tmp_path, monkeypatch, config, SLACK_URL=f"{receiver.url}/slack") as inbox:
        event_id = await add(inbox, charge_event())
        first = await inbox.notify("ops", "doomed", event_id, None, "test")
        assert first.status == "queued" and first.reason is not None and "HTTP 503" in first.reason
        assert await inbox.outbox.deliver_due(now=time.time() + 10) == 1
        assert await inbox.outbox.deliver_due(now=time.time() + 100) == 1
        assert await inbox.outbox.deliver_due(now=time.time() + 1000) == 0
        detail = await inbox.get_event(event_id)
    assert len(receiver.requests) == 3
    assert detail.notifications[0].delivery.status == "failed"
    final = detail.audit[-1]
    assert (final.actor, final.action, final.result["status"], final.result["attempts"]) == (
        "outbox",
        "deliver_notification",
        "failed",
        3,
    )
    assert "HTTP 503" in final.result["reason"]


async def test_permanent_refusal_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    receiver.responses["/slack"] = (404, {"error": "no_service"})
    receiver.start()
    config = '[channels.ops]\ntype = "slack"\nwebhook_url_env = "SLACK_URL"\n'
    async with inbox_with(tmp_path, monkeypatch, config, SLACK_URL=f"{receiver.url}/slack") as inbox:
        event_id = await add(inbox, charge_event())
        result = await inbox.notify("ops", "hello", event_id, None, "test")
    assert result.status == "failed" and "HTTP 404" in (result.reason or "")


async def test_explicit_idempotency_key_sends_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    receiver.start()
    config = '[channels.ops]\ntype = "slack"\nwebhook_url_env = "SLACK_URL"\n'
    async with inbox_with(tmp_path, monkeypatch, config, SLACK_URL=f"{receiver.url}/slack") as inbox:
        first = await inbox.notify("ops", "daily digest", None, None, "t", idempotency_key="digest-2026-11-22")
        second = await inbox.notify(
            "ops", "daily digest, reworded", None, None, "t", idempotency_key="digest-2026-11-22"
        )
        other_day = await inbox.notify("ops", "daily digest", None, None, "t", idempotency_key="digest-2026-11-23")
    assert (first.duplicate, second.duplicate, other_day.duplicate) == (False, True, False)
    assert [r.json()["text"] for r in receiver.requests] == ["daily digest", "daily digest"]


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ('[channels.x]\ntype = "pager"\n', {}, "channels.x: Input tag 'pager'"),
        (
            '[channels.x]\ntype = "slack"\nwebhook_url_env = "NOPE_UNSET"\n',
            {},
            "environment variable NOPE_UNSET is not set",
        ),
        (
            '[channels.x]\ntype = "slack"\nwebhook_url_env = "SLACK_URL"\n',
            {"SLACK_URL": "hooks.slack.com/x"},
            "SLACK_URL does not hold an http(s) URL",
        ),
        (
            '[channels.x]\ntype = "webhook"\nurl = "not a url"\nsecret_env = "S"\n',
            {"S": "s"},
            "channels.x.webhook.url: Input should be a valid URL",
        ),
        ('[channels.x]\ntype = "email"\nhost = "h"\nfrom = "nobody"\nto = "customer"\n', {}, "channels.x.email.from"),
        ('[channels.X]\ntype = "log"\n', {}, "'X' is not a channel name"),
        (
            '[tickets]\ntype = "github"\nrepository = "no-slash"\ntoken_env = "T"\n',
            {"T": "t"},
            "tickets.github.repository",
        ),
        (
            '[tickets]\ntype = "github"\nrepository = "a/b"\ntoken_env = "UNSET_TOKEN"\n',
            {},
            "environment variable UNSET_TOKEN is not set",
        ),
    ],
)
def test_bad_channel_config_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, env: dict[str, str], message: str
) -> None:
    from stripe_inbox.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "stripe-inbox.toml").write_text(config)
    with pytest.raises(ConfigError) as caught:
        load_settings(db=str(tmp_path / "x.db"))
    assert message in str(caught.value)
    for value in env.values():
        assert value not in str(caught.value) or len(value) < 3


def test_outbox_table_has_no_secrets_column() -> None:
    from stripe_inbox.stores.sqlite_schema import MIGRATIONS

    # OAuth tokens are kept as digests only (their table and its token_hash column); tokenize and tokenchars
    # are the full-text index's options.
    schema = "".join(MIGRATIONS).lower()
    for harmless in ("oauth_tokens", "token_hash", "tokenize", "tokenchars"):
        schema = schema.replace(harmless, "")
    assert "url" not in schema.replace("tracker_url", "") and "token" not in schema and "password" not in schema
