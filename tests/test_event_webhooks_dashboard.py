"""/ui/subscriptions: the webhook subscriptions clients made, never a secret, and revoking one (CSRF, audited as
`dashboard`, its callback told once): over ASGI, then in Chromium against a real `serve` whose revoke reaches a
receiver on loopback that verifies it with `standardwebhooks`."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.event_webhooks.subscriptions import WebhookSubscriptions
from stripe_inbox.web.app import create_app

from .conftest import SECRET, start_server, stop_server
from .test_dashboard import ORIGIN, csrf_of, needs_browser
from .test_dashboard_pages import browser, follow, page, run_async  # noqa: F401 - the browser fixtures
from .webhook_receiver import WebhookReceiver

try:
    from playwright.sync_api import Page, expect
except ImportError:  # needs_browser says what to install
    Page = expect = None  # type: ignore[assignment,misc]

pytestmark = pytest.mark.anyio


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    running = WebhookReceiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()).start()
    yield running
    running.stop()


async def subscribe(inbox: Inbox, receiver: WebhookReceiver) -> str:
    params = {
        "name": "stripe.event",
        "arguments": {"types": ["invoice.*"], "min_priority": "high"},
        "delivery": {"mode": "webhook", "url": receiver.url, "secret": receiver.secret},
    }
    return (await WebhookSubscriptions(inbox, loopback_http=True).subscribe("claude-web", params)).id


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    async with open_inbox(load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET)) as made:
        yield made


async def test_the_page_lists_subscriptions_without_secrets_and_revokes_one(
    inbox: Inbox, receiver: WebhookReceiver
) -> None:
    subscription_id = await subscribe(inbox, receiver)
    transport = httpx.ASGITransport(app=create_app(inbox))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as ui:
        page_ = await ui.get("/ui/subscriptions")
        assert page_.status_code == 200
        assert f'data-subscription="{subscription_id}"' in page_.text and "claude-web" in page_.text
        assert "min_priority" in page_.text and "/hooks/stripe?tenant=a%20b" in page_.text
        assert receiver.secret.removeprefix("whsec_") not in page_.text and "v1:" not in page_.text
        assert 'href="/ui/subscriptions"' in page_.text  # in the navigation
        revoke = f"/ui/subscriptions/{subscription_id}/revoke"
        assert (await ui.post(revoke, data={})).status_code == 403
        form = {"csrf_token": csrf_of(page_.text)}
        said = await follow(ui, await ui.post(revoke, data=form))
        assert said.startswith(f"Revoked {subscription_id}:")
        assert "no live subscription" in await follow(ui, await ui.post(revoke, data=form))
        assert f'data-subscription="{subscription_id}"' not in (await ui.get("/ui/subscriptions")).text
        every = (await ui.get("/ui/subscriptions?all=1")).text
        assert f'data-subscription="{subscription_id}"' in every and "revoked by the operator" in every
    rows = await inbox.store.db.fetch("SELECT actor, arguments FROM audit WHERE action = 'revoke_subscription'")
    assert [(row[0], json.loads(row[1])) for row in rows] == [("dashboard", {"subscription_id": subscription_id})]


@needs_browser
def test_in_chromium_revoking_a_subscription_tells_its_callback(
    tmp_path: Path,
    page: Page,  # noqa: F811 - the fixture
    receiver: WebhookReceiver,
) -> None:
    async def seed() -> str:
        async with open_inbox(load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET)) as inbox:
            return await subscribe(inbox, receiver)

    subscription_id = run_async(seed)
    server = start_server(tmp_path / "inbox.db", tmp_path)
    try:
        page.goto(f"{server.url}/ui/subscriptions")
        row = page.locator(f'tr[data-subscription="{subscription_id}"]')
        expect(row).to_contain_text("claude-web")
        row.locator("button", has_text="Revoke").click()
        expect(page.locator(".flash")).to_contain_text(f"Revoked {subscription_id}")
        expect(page.locator("tr[data-subscription]")).to_have_count(0)
        receiver.wait_for(lambda each: any(d.body.get("type") == "terminated" for d in each.accepted))
        (told,) = [d for d in receiver.accepted if d.body.get("type") == "terminated"]
        assert told.headers["x-mcp-subscription-id"] == subscription_id
        assert "revoked by the operator" in told.body["error"]["message"]
    finally:
        stop_server(server)
