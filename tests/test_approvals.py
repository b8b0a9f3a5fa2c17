"""A `confirm = true` channel sends only after a person agreed: asked through MCP elicitation during the
`notify` call (the official client over stdio), else approved or rejected later with `stripe-inbox approvals`."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import ElicitRequestParams, ElicitResult

from stripe_inbox import load_settings, open_inbox
from stripe_inbox.approvals import needs_confirmation
from stripe_inbox.errors import InvalidArgument
from stripe_inbox.events import IncomingEvent
from stripe_inbox.settings import Settings

from .conftest import cli_env, make_event, run_cli
from .receivers import HTTPReceiver

pytestmark = pytest.mark.anyio
HOOK_SECRET = "hook-secret-for-tests"


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    running = HTTPReceiver().start()
    yield running
    running.stop()


def write_config(tmp_path: Path, receiver: HTTPReceiver, extra: str = "") -> Path:
    config = tmp_path / "inbox.toml"
    config.write_text(
        f'{extra}[channels.ops]\ntype = "webhook"\nurl = "{receiver.url}/ops"\nsecret_env = "HOOK_SECRET"\n'
        "confirm = true\n"
    )
    return config


def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "inbox.db", HOOK_SECRET=HOOK_SECRET)


async def stored_event(tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    event = make_event("charge.dispute.created")
    async with open_inbox(load_settings(str(config), db=str(tmp_path / "inbox.db"))) as inbox:
        await inbox.accept([IncomingEvent.parse(json.dumps(event).encode())])
    return str(event["id"])


@asynccontextmanager
async def mcp_session(
    tmp_path: Path, config: Path, answer: str | None, mode: str = "legacy"
) -> AsyncIterator[tuple[Client, list[str]]]:
    asked: list[str] = []

    async def elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action=answer, content={"send": True} if answer == "accept" else None)  # type: ignore[arg-type]

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "stripe_inbox", "mcp", "--db", str(tmp_path / "inbox.db"), "--config", str(config)],
        env=env(tmp_path),
        cwd=str(tmp_path),
    )
    async with Client(params, mode=mode, elicitation_callback=elicit if answer else None) as client:
        yield client, asked


async def notify(client: Client, event_id: str) -> dict[str, Any]:
    result = await client.call_tool("notify", {"channel": "ops", "message": "Dispute opened", "event_id": event_id})
    assert not result.is_error, result.content
    return result.structured_content  # type: ignore[return-value]


async def audit(client: Client, event_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    detail = (await client.call_tool("get_event", {"event_id": event_id})).structured_content
    return [(entry["actor"], entry["action"], entry["result"]) for entry in detail["audit"]]  # type: ignore[index]


# legacy: `elicitation/create` while the call waits; auto (2026-07-28): the input-required result, answered in a retry.
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_agreed_through_elicitation_it_is_sent(
    tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    config = write_config(tmp_path, receiver)
    event_id = await stored_event(tmp_path, config, monkeypatch)
    async with mcp_session(tmp_path, config, "accept", mode) as (client, asked):
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        result = await notify(client, event_id)
        assert result["status"] == "sent"
    (question,) = asked
    assert "'ops'" in question and event_id in question and '"Dispute opened"' in question
    assert [request.json()["text"] for request in receiver.requests] == ["Dispute opened"]


async def test_declined_through_elicitation_nothing_is_sent_and_the_decline_is_audited(
    tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, receiver)
    event_id = await stored_event(tmp_path, config, monkeypatch)
    async with mcp_session(tmp_path, config, "decline") as (client, asked):
        result = await notify(client, event_id)
        assert (result["status"], result["reason"]) == ("rejected", "declined by the person asked to confirm it")
        (entry,) = [e for e in await audit(client, event_id) if e[1] == "notify"]
        assert entry[2]["status"] == "rejected"
        again = await notify(client, event_id)  # the same call made again is the same, declined, notification
        assert again["duplicate"] and again["status"] == "rejected"
    assert len(asked) == 2
    assert receiver.requests == []


async def test_without_elicitation_it_waits_until_approved_from_the_cli_then_is_sent_once(
    tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, receiver)
    event_id = await stored_event(tmp_path, config, monkeypatch)
    cli = ("--config", str(config))
    async with mcp_session(tmp_path, config, None) as (client, _):
        result = await notify(client, event_id)
        assert result["status"] == "awaiting_approval"
        assert "stripe-inbox approvals approve" in result["reason"] and "/ui/approvals" in result["reason"]
        approval_id = result["reason"].split("approvals approve ")[1].split("`")[0]

        listed = run_cli("approvals", "list", "--json", *cli, env=env(tmp_path), cwd=tmp_path)
        (waiting,) = json.loads(listed.stdout)
        assert (str(waiting["id"]), waiting["notification"]["message"]) == (approval_id, "Dispute opened")
        assert receiver.requests == []

        approved = run_cli("approvals", "approve", approval_id, *cli, env=env(tmp_path), cwd=tmp_path)
        assert f"approval {approval_id} approved: sent" in approved.stdout
        twice = run_cli("approvals", "approve", approval_id, *cli, env=env(tmp_path), cwd=tmp_path, check=False)
        assert twice.returncode != 0 and "not awaiting approval: it is sent" in twice.stderr
        assert [(actor, action) for actor, action, _ in await audit(client, event_id)][-3:] == [
            ("mcp", "notify"),
            ("cli", "approve"),
            ("outbox", "deliver_notification"),
        ]
    assert [request.json()["text"] for request in receiver.requests] == ["Dispute opened"]
    assert "nothing awaits approval" in run_cli("approvals", "list", *cli, env=env(tmp_path), cwd=tmp_path).stdout


async def test_rejected_from_the_cli_it_is_never_sent(
    tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, receiver)
    event_id = await stored_event(tmp_path, config, monkeypatch)
    cli = ("--config", str(config))
    async with mcp_session(tmp_path, config, None) as (client, _):
        result = await notify(client, event_id)
        approval_id = result["reason"].split("approvals approve ")[1].split("`")[0]
        rejected = run_cli("approvals", "reject", approval_id, *cli, env=env(tmp_path), cwd=tmp_path)
        assert "nothing will be sent" in rejected.stdout
        late = run_cli("approvals", "approve", approval_id, *cli, env=env(tmp_path), cwd=tmp_path, check=False)
        assert late.returncode != 0 and "it is rejected" in late.stderr
        detail = (await client.call_tool("get_event", {"event_id": event_id})).structured_content
        (note,) = detail["notifications"]  # type: ignore[index]
        assert (note["delivery"]["status"], note["delivery"]["reason"]) == ("rejected", "rejected by cli")
    assert receiver.requests == []


async def test_an_unanswered_approval_lapses_and_the_lapse_is_audited(
    tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, receiver, "approval_timeout_minutes = 0.000001\n")
    event_id = await stored_event(tmp_path, config, monkeypatch)
    async with open_inbox(load_settings(str(config), db=str(tmp_path / "inbox.db"))) as inbox:
        waiting = await inbox.notify("ops", "Dispute opened", event_id, None, "test")
        assert waiting.status == "awaiting_approval"
        assert await inbox.approvals.waiting() == []
        (note,) = await inbox.store.notifications(event_id)
        assert note.delivery.status == "rejected" and note.delivery.reason.startswith("lapsed")  # type: ignore[union-attr]
        assert (await inbox.store.audit_trail(event_id))[-1].action == "lapse"
        with pytest.raises(InvalidArgument, match="it is rejected"):
            await inbox.approvals.approve(1, "test")
    assert receiver.requests == []


def test_a_customer_email_channel_asks_first_unless_it_says_otherwise() -> None:
    parsed = Settings.model_validate(
        {
            "channels": {
                "customer": {"type": "email", "host": "h", "from": "a@example.com", "to": "customer"},
                "trusted": {"type": "email", "host": "h", "from": "a@example.com", "to": "customer", "confirm": False},
                "team": {"type": "email", "host": "h", "from": "a@example.com", "to": "team@example.com"},
            }
        }
    )
    assert [needs_confirmation(c) for c in parsed.channels.values()] == [True, False, False]
