"""The presenter: what MCP, the dashboard and the CLI show of an event (masking, suggested triage, resolution),
unit by unit and then the same event seen through MCP and the dashboard."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp.server import create_mcp_server
from stripe_inbox.models import Classification, EventSummary
from stripe_inbox.presenter import Presenter, resolution_note
from stripe_inbox.redact import MASK
from stripe_inbox.stores import StoredEvent
from stripe_inbox.stripe.samples import sample_event
from stripe_inbox.web.app import create_app

from .conftest import SECRET, encode, make_event

pytestmark = pytest.mark.anyio
ORIGIN = "http://127.0.0.1"
EMAIL = "jenny.rosen@example.com"


def never_triaged(stored: StoredEvent, superseded_by: str | None) -> Classification:
    raise AssertionError("the policy was asked although nothing needed its triage")


async def add(inbox: Inbox, event: dict[str, Any]) -> StoredEvent:
    await inbox.store.add_events([IncomingEvent.parse(encode(event))], time.time())
    return await inbox.event(event["id"])


def test_shown_masks_models_and_data_alike_and_reveal_shows_them() -> None:
    presenter = Presenter(["email"], never_triaged)
    data = {"customer_email": EMAIL, "description": f"write to {EMAIL}", "amount": 4900}
    assert presenter.shown(data) == {"customer_email": MASK, "description": f"write to {MASK}", "amount": 4900}
    assert presenter.shown(data, reveal=True) is data
    summary = Classification(
        category="billing", priority="high", summary=f"ask {EMAIL}", signals=[], suggested_actions=[]
    )
    shown = presenter.shown(summary)
    assert isinstance(shown, Classification) and shown.summary == f"ask {MASK}"
    assert presenter.masks


def test_without_a_redact_policy_what_is_shown_is_what_is_stored() -> None:
    presenter = Presenter([], never_triaged)
    data = {"customer_email": EMAIL}
    assert presenter.shown(data) is data and not presenter.masks


def test_the_resolution_note_says_what_resolved_the_event_and_whether_it_came_late() -> None:
    summary = EventSummary.model_validate(
        {
            "id": "evt_1",
            "type": "invoice.payment_failed",
            "status": "pending",
            "created": "2026-01-01T00:00:00Z",
            "received_at": "2026-01-01T00:00:01Z",
            "deliveries": 1,
            "livemode": False,
        }
    )
    assert resolution_note(summary) == ""
    late = summary.model_copy(update={"superseded_by": "evt_2", "stale": True})
    assert resolution_note(late) == "resolved by evt_2, arrived late"


async def test_a_stored_classification_is_shown_as_such_else_the_policy_suggests_one(inbox: Inbox) -> None:
    asked: list[str | None] = []

    def triage(stored: StoredEvent, superseded_by: str | None) -> Classification:
        asked.append(superseded_by)
        return inbox.triage(stored, superseded_by)

    presenter = Presenter([], triage)
    stored = await add(inbox, make_event())
    suggested, classified = presenter.triage(stored, "evt_later")
    assert not classified and asked == ["evt_later"] and "resolved by evt_later" in suggested.summary
    stored_one = await inbox.classify(stored.id, "test")
    shown, classified = presenter.triage(await inbox.event(stored.id), None)
    assert classified and shown == stored_one and asked == ["evt_later"]


async def test_the_event_page_and_the_list_show_what_resolved_the_event(inbox: Inbox) -> None:
    failed = make_event()
    paid = make_event("invoice.paid", data=failed["data"], created=failed["created"] + 60)
    await add(inbox, failed)
    await add(inbox, paid)
    transport = httpx.ASGITransport(app=create_app(inbox))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as ui:
        page = (await ui.get(f"/ui/events/{failed['id']}")).text
        listed = (await ui.get("/ui/")).text
    assert "Superseded by" in page and f"/ui/events/{paid['id']}" in page
    assert f"(resolved by {paid['id']})" in page  # the suggested triage knows it too
    assert f'superseded by <a href="/ui/events/{paid["id"]}">' in listed


@pytest.fixture
async def masking_inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    settings = load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET, redact=["email"])
    async with open_inbox(settings) as opened:
        yield opened


async def test_mcp_and_the_dashboard_mask_the_same_event_alike(masking_inbox: Inbox) -> None:
    payload = sample_event("checkout.session.completed")
    event = json.loads(payload)
    email = event["data"]["object"]["customer_details"]["email"]
    await masking_inbox.store.add_events([IncomingEvent.parse(payload)], time.time())
    server = create_mcp_server(masking_inbox)
    async with server.running(), Client(server) as client:
        result = await client.call_tool("get_event", {"event_id": event["id"]})
    through_mcp = json.dumps(result.structured_content)
    transport = httpx.ASGITransport(app=create_app(masking_inbox))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as ui:
        page = (await ui.get(f"/ui/events/{event['id']}")).text
        listed = (await ui.get("/ui/")).text
    for shown in (through_mcp, page, listed):
        assert email not in shown
    assert MASK in through_mcp and MASK in page
    detail = await masking_inbox.get_event(event["id"])
    presented = Presenter(["email"], masking_inbox.triage).shown(detail)
    assert result.structured_content["event"] == presented.event  # MCP shows exactly what the presenter does
