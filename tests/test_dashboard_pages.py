"""The dashboard's approvals and tokens pages, and the event page's forward replay and retry: over ASGI on both
databases (CSRF, audit as `dashboard`, errors shown on the page), then in Chromium against a real `serve` whose
approved e-mail reaches a loopback SMTP server and whose replayed event reaches a handler that verifies it with the
`stripe` package."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from mcp import Client

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the browser tests say what to install
    sync_playwright = None  # type: ignore[assignment]

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.auth.minting import ACCESS_TOKEN_PREFIX, REFRESH_TOKEN_PREFIX, digest, grant_id, mint, public_id
from stripe_inbox.stores.oauth_records import NewOAuthToken
from stripe_inbox.web.app import create_app

from .conftest import SECRET, Server, cli_env, deliver, make_event, run_cli, start_server, stop_server
from .postgres import postgres_schema
from .receivers import HTTPReceiver, SMTPReceiver
from .test_dashboard import BOUND_MS, CHROMIUM, ORIGIN, csrf_of, flash_of, needs_browser
from .test_forward import ALL_SECRET, BOUND, configure, forward_env, post, start_receiver, stats_once

pytestmark = pytest.mark.anyio
HOOK_SECRET = "hook-secret-for-tests"
SCREENSHOTS = Path("/tmp")  # looked at by a person checking the pages render sensibly; not part of the docs
CUSTOMER_EMAIL = "jenny.rosen@example.com"
T = TypeVar("T")


def config_text(receiver_url: str, forward_url: str) -> str:
    return (
        f'[channels.ops]\ntype = "webhook"\nurl = "{receiver_url}/ops"\nsecret_env = "HOOK_SECRET"\nconfirm = true\n'
        f'\n[tickets]\ntype = "webhook"\nurl = "{receiver_url}/tickets"\nsecret_env = "HOOK_SECRET"\nconfirm = true\n'
        f'\n[[forward]]\nname = "billing"\nurl = "{forward_url}"\nsecret_env = "ALL_SECRET_ENV"\n'
    )


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    running = HTTPReceiver().start()
    yield running
    running.stop()


@pytest.fixture(params=["sqlite", "postgres"])
async def inbox(
    request: pytest.FixtureRequest, tmp_path: Path, receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Inbox]:
    for name in ("STRIPE_INBOX_TOKEN", "STRIPE_INBOX_MCP_TOKEN", "STRIPE_INBOX_CONFIG", "STRIPE_INBOX_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("ALL_SECRET_ENV", ALL_SECRET)
    config = tmp_path / "inbox.toml"
    config.write_text(config_text(receiver.url, "http://127.0.0.1:9/hook"))
    if request.param == "sqlite":
        async with open_inbox(load_settings(str(config), db=str(tmp_path / "inbox.db"), webhook_secret=SECRET)) as made:
            yield made
        return
    async with postgres_schema() as url, open_inbox(load_settings(str(config), db=url, webhook_secret=SECRET)) as made:
        yield made


@pytest.fixture
async def ui(inbox: Inbox) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(inbox))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        yield client


async def follow(ui: httpx.AsyncClient, response: httpx.Response) -> str:
    """The message the page an action returned to says."""
    assert response.status_code == 303, response.text
    return flash_of((await ui.get(response.headers["location"])).text)


async def audit_of(inbox: Inbox, event_id: str) -> list[tuple[str, str]]:
    return [(entry.actor, entry.action) for entry in await inbox.store.audit_trail(event_id)]


async def test_signed_out_the_new_pages_lead_to_sign_in_and_their_actions_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_INBOX_TOKEN", "pages-token-" + "q" * 24)
    async with open_inbox(load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET)) as inbox:
        transport = httpx.ASGITransport(app=create_app(inbox))
        async with httpx.AsyncClient(transport=transport, base_url="https://inbox.example.com") as client:
            for path in ("/ui/approvals", "/ui/tokens"):
                response = await client.get(path)
                assert response.status_code == 303 and response.headers["location"].startswith("/ui/sign-in?")
            for path in ("/ui/approvals/1/approve", "/ui/tokens/tok_x/revoke", "/ui/events/evt_x/replay"):
                assert (await client.post(path, data={})).status_code == 401


# -- approvals -----------------------------------------------------------------------------------


async def test_approvals_lists_what_waits_and_approve_sends_it_once(
    ui: httpx.AsyncClient, inbox: Inbox, receiver: HTTPReceiver
) -> None:
    event = make_event("charge.dispute.created")
    await deliver(ui, event)
    waiting = await inbox.notify("ops", "Dispute <opened>", event["id"], "About the dispute", "mcp")
    assert waiting.status == "awaiting_approval"
    approval_id = (await inbox.store.approvals())[0].id

    page = await ui.get("/ui/approvals")
    assert page.status_code == 200
    assert 'id="nav-approvals">Approvals <span class="badge"' in page.text and ">1</span>" in page.text
    assert "Dispute &lt;opened&gt;" in page.text and "About the dispute" in page.text  # escaped, never markup
    assert f'href="/ui/events/{event["id"]}"' in page.text and f'data-approval="{approval_id}"' in page.text
    approve = f"/ui/approvals/{approval_id}/approve"
    assert (await ui.post(approve, data={"csrf_token": "forged"})).status_code == 403
    form = {"csrf_token": csrf_of(page.text)}
    assert (await ui.post(approve, data=form, headers={"Origin": "http://evil.example"})).status_code == 403
    assert receiver.requests == []

    assert await follow(ui, await ui.post(approve, data=form)) == f"Approved {approval_id} (ops): sent."
    again = await follow(ui, await ui.post(approve, data=form))
    assert again == f"approval {approval_id} is not awaiting approval: it is sent"
    assert [request.json()["text"] for request in receiver.requests] == ["Dispute <opened>"]
    assert ("dashboard", "approve") in await audit_of(inbox, event["id"])
    after = await ui.get("/ui/approvals")
    assert "Nothing waits for approval." in after.text and 'class="badge"' not in after.text


async def test_rejected_from_the_approvals_page_nothing_is_sent(
    ui: httpx.AsyncClient, inbox: Inbox, receiver: HTTPReceiver
) -> None:
    event = make_event("charge.dispute.created")
    await deliver(ui, event)
    await inbox.notify("ops", "Dispute opened", event["id"], None, "mcp")
    approval_id = (await inbox.store.approvals())[0].id
    form = {"csrf_token": csrf_of((await ui.get("/ui/approvals")).text)}

    rejected = await follow(ui, await ui.post(f"/ui/approvals/{approval_id}/reject", data=form))
    assert rejected == f"Rejected {approval_id} (ops): nothing will be sent."
    late = await follow(ui, await ui.post(f"/ui/approvals/{approval_id}/approve", data=form))
    assert late.endswith("it is rejected")
    assert "no approval 999999" in await follow(ui, await ui.post("/ui/approvals/999999/approve", data=form))
    assert receiver.requests == []
    assert ("dashboard", "reject") in await audit_of(inbox, event["id"])
    (note,) = await inbox.store.notifications(event["id"])
    assert (note.delivery.status, note.delivery.reason) == ("rejected", "rejected by dashboard")


async def test_a_ticket_waiting_for_approval_shows_its_title_and_is_opened_once_approved(
    ui: httpx.AsyncClient, inbox: Inbox, receiver: HTTPReceiver
) -> None:
    event = make_event("charge.dispute.created")
    await deliver(ui, event)
    made = await inbox.create_ticket(event["id"], "Answer the dispute", "evidence due in 7 days", "high", "mcp")
    assert made.ticket.delivery is not None and made.ticket.delivery.status == "awaiting_approval"
    (approval,) = await inbox.store.approvals()
    page = await ui.get("/ui/approvals")
    assert "Answer the dispute" in page.text and "evidence due in 7 days" in page.text and "(high)" in page.text
    approve = await ui.post(f"/ui/approvals/{approval.id}/approve", data={"csrf_token": csrf_of(page.text)})
    assert await follow(ui, approve) == f"Approved {approval.id} (webhook): sent."
    assert [request.path for request in receiver.requests] == ["/tickets"]


# -- tokens --------------------------------------------------------------------------------------


async def issue_tokens(inbox: Inbox, client_name: str) -> tuple[str, str, list[str]]:
    """An OAuth grant as the authorization server makes one: (access token id, its value, both values)."""
    now, grant = time.time(), grant_id()
    values = {"access": mint(ACCESS_TOKEN_PREFIX), "refresh": mint(REFRESH_TOKEN_PREFIX)}
    tokens = [
        NewOAuthToken(
            id=public_id(),
            token_hash=digest(value),
            kind=kind,
            grant_id=grant,
            client_id="https://client.example/meta.json",
            client_name=client_name,
            scopes=("inbox:read", "inbox:write"),
            resource=None,
            created_at=now,
            expires_at=now + (3600 if kind == "access" else 86400),
        )
        for kind, value in values.items()
    ]
    code = mint("sio_code_")
    await inbox.store.add_oauth_code(digest(code), tokens[0].client_id, grant, "{}", now + 300)
    assert await inbox.store.redeem_oauth_code(digest(code), now, tokens)
    return tokens[0].id, values["access"], list(values.values())


async def test_the_tokens_page_lists_tokens_without_their_values_and_revokes_a_grant(
    ui: httpx.AsyncClient, inbox: Inbox
) -> None:
    token_id, access_value, values = await issue_tokens(inbox, "Claude <Desktop>")
    other_id, _, _ = await issue_tokens(inbox, "Cursor")
    page = await ui.get("/ui/tokens")
    assert page.status_code == 200
    assert f'data-token="{token_id}"' in page.text and f'data-token="{other_id}"' in page.text
    assert "Claude &lt;Desktop&gt;" in page.text and "inbox:write" in page.text
    for value in values:
        assert value not in page.text and digest(value) not in page.text
    revoke = f"/ui/tokens/{token_id}/revoke"
    assert (await ui.post(revoke, data={})).status_code == 403

    form = {"csrf_token": csrf_of(page.text)}
    said = await follow(ui, await ui.post(revoke, data=form))
    assert said == f"Revoked {token_id}: 2 usable tokens of its grant ended."
    assert [token.client_name for token in await inbox.store.oauth_tokens(time.time())] == ["Cursor", "Cursor"]
    revoked = await inbox.store.oauth_token(digest(access_value))
    assert revoked is not None and revoked.revoked_at is not None
    rows = await inbox.store.db.fetch("SELECT actor, arguments, result FROM audit WHERE action = 'revoke_token'")
    assert [(row[0], json.loads(row[1]), json.loads(row[2])["revoked"]) for row in rows] == [
        ("dashboard", {"token_id": token_id}, 2)
    ]
    assert "no OAuth token tok_nope" in await follow(ui, await ui.post("/ui/tokens/tok_nope/revoke", data=form))
    listed = (await ui.get("/ui/tokens")).text
    assert f'data-token="{token_id}"' not in listed
    every = (await ui.get("/ui/tokens?all=1")).text
    assert f'data-token="{token_id}"' in every and "revoked" in every


async def test_a_revoke_from_the_cli_is_audited_too(tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"
    async with open_inbox(load_settings(db=str(db), webhook_secret=SECRET)) as inbox:
        token_id = (await issue_tokens(inbox, "Cursor"))[0]
    printed = run_cli("tokens", "revoke", token_id, env=cli_env(db), cwd=tmp_path).stdout
    assert printed.startswith("revoked 2 tokens")
    unknown = run_cli("tokens", "revoke", "tok_000000000000", env=cli_env(db), cwd=tmp_path, check=False)
    assert unknown.returncode != 0 and "no OAuth token tok_000000000000; `stripe-inbox tokens list`" in unknown.stderr
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT actor, arguments FROM audit WHERE action = 'revoke_token'").fetchall()
    assert [(actor, json.loads(arguments)) for actor, arguments in rows] == [("cli", {"token_id": token_id})]


# -- forwards from the event page ------------------------------------------------------------------


async def test_replay_and_retry_from_the_event_page_queue_audited_forwards(ui: httpx.AsyncClient, inbox: Inbox) -> None:
    event = make_event()
    await deliver(ui, event)
    page = await ui.get(f"/ui/events/{event['id']}")
    assert "<option>billing</option>" in page.text
    form = {"csrf_token": csrf_of(page.text)}
    replay = f"/ui/events/{event['id']}/replay"
    assert (await ui.post(replay, data={"destination": "billing"})).status_code == 403

    queued = await follow(ui, await ui.post(replay, data={**form, "destination": "billing"}))
    assert queued.startswith("Replay to billing queued as forward ")
    (auto, replayed) = await inbox.store.forwards(event["id"])  # the ingress's own forward, then the replay
    assert replayed.replay and replayed.status == "queued" and queued.endswith(f" {replayed.id}.")
    unknown = await follow(ui, await ui.post(replay, data={**form, "destination": "elsewhere"}))
    assert "billing" in unknown and "elsewhere" in unknown

    retry = f"/ui/events/{event['id']}/forwards/{auto.id}/retry"
    assert "only a failed one can be retried" in await follow(ui, await ui.post(retry, data=form))
    async with inbox.store.db.transaction() as tx:
        await tx.execute(
            "UPDATE deliveries SET status = 'failed', attempts = 5, reason = 'HTTP 500', finished_at = ? WHERE id = ?",
            time.time(),
            auto.id,
        )
    failed_page = (await ui.get(f"/ui/events/{event['id']}")).text
    assert f"/forwards/{auto.id}/retry" in failed_page and f"/forwards/{replayed.id}/retry" not in failed_page
    assert await follow(ui, await ui.post(retry, data=form)) == f"Forward {auto.id} to billing queued again."
    again = await inbox.store.forward(auto.id)
    assert (again.status, again.attempts, again.finished_at) == ("queued", 0, None)
    other = make_event()
    await deliver(ui, other)
    elsewhere = await follow(ui, await ui.post(f"/ui/events/{other['id']}/forwards/{auto.id}/retry", data=form))
    assert elsewhere == f"no forward {auto.id} of event {other['id']}"
    audit = await audit_of(inbox, event["id"])
    assert ("dashboard", "replay_event") in audit and ("dashboard", "retry_forward") in audit


# -- in Chromium, against a real serve ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None, "no chromium on PATH: apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(BOUND_MS)
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def smtp() -> Iterator[SMTPReceiver]:
    with SMTPReceiver() as running:
        yield running


def run_async(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`function(*args)` to its end, bounded, on a thread of its own: Playwright's sync API keeps this thread's
    event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, function, *args).result(timeout=BOUND)


async def agent_notifies(server: Server, event_id: str, messages: list[str]) -> None:
    """An agent asks, over MCP, to e-mail the customer; the channel asks a person first."""
    async with Client(server.mcp_url, mode="legacy") as client:
        for message in messages:
            arguments = {"channel": "customer", "message": message, "event_id": event_id, "subject": "Your invoice"}
            result = await client.call_tool("notify", arguments)
            assert result.structured_content["status"] == "awaiting_approval", result.content  # type: ignore[index]


@needs_browser
def test_in_chromium_approve_sends_one_email_and_reject_sends_none(
    tmp_path: Path, page: Page, smtp: SMTPReceiver
) -> None:
    (tmp_path / "stripe-inbox.toml").write_text(
        f'[channels.customer]\ntype = "email"\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n'
        'from = "billing@shop.example"\nto = "customer"\n'
    )
    server = start_server(tmp_path / "inbox.db", tmp_path)
    try:
        event = make_event()
        event["data"]["object"]["customer_email"] = CUSTOMER_EMAIL
        post(server, event)
        run_async(agent_notifies, server, event["id"], ["Your card was declined: please update it.", "A second draft"])

        page.goto(f"{server.url}/ui/")
        expect(page.locator("#nav-approvals .badge")).to_have_text("2")
        page.click("#nav-approvals")
        rows = page.locator("tr[data-approval]")
        expect(rows).to_have_count(2)
        for expected in (CUSTOMER_EMAIL, "Your card was declined: please update it.", "Your invoice", event["id"]):
            expect(rows.nth(0)).to_contain_text(expected)
        page.screenshot(path=SCREENSHOTS / "h6-approvals.png", full_page=True)
        approved, rejected = (rows.nth(i).get_attribute("data-approval") for i in (0, 1))

        rows.nth(0).locator("button", has_text="Approve").click()
        expect(page.locator(".flash")).to_have_text(f"Approved {approved} (customer): sent.")
        assert [(recipients, mail["Subject"]) for _, recipients, mail in smtp.messages] == [
            ([CUSTOMER_EMAIL], "Your invoice")
        ]
        expect(page.locator("#nav-approvals .badge")).to_have_text("1")
        page.locator(f'tr[data-approval="{rejected}"] button', has_text="Reject").click()
        expect(page.locator(".flash")).to_have_text(f"Rejected {rejected} (customer): nothing will be sent.")
        expect(page.locator("tr[data-approval]")).to_have_count(0)
        expect(page.locator("#nav-approvals .badge")).to_have_count(0)
        assert len(smtp.messages) == 1

        page.goto(f"{server.url}/ui/events/{event['id']}")
        audit = page.locator("table.audit tbody tr")
        expect(audit.filter(has_text="dashboard").filter(has_text="approve")).to_have_count(1)
        expect(audit.filter(has_text="dashboard").filter(has_text="reject")).to_have_count(1)
    finally:
        stop_server(server)


def wait_for_forwards(server: Server, status: str, count: int) -> None:
    """Until `serve` has recorded `count` forwards in `status` (a little after the handler answered): told by
    stripe://stats' change notifications, bounded."""
    run_async(stats_once, server, lambda stats: stats["forwards"][status] >= count)


@needs_browser
def test_in_chromium_a_failed_forward_is_retried_and_an_event_replayed_to_a_verifying_handler(
    tmp_path: Path, page: Page
) -> None:
    receiver = start_receiver(ALL_SECRET)
    db = tmp_path / "inbox.db"
    destination = f'name = "billing"\nurl = "{receiver.url}"\nsecret_env = "ALL_SECRET_ENV"'
    configure(tmp_path, [destination], "max_attempts = 1\npause_after_failures = 1000")
    server = start_server(db, tmp_path, forward_env(db))
    try:
        receiver.tell("fail")
        event = make_event()
        stored = post(server, event)
        receiver.wait_for(1, lambda record: record["id"] == event["id"] and record["status"] == 500)
        wait_for_forwards(server, "failed", 1)
        receiver.tell("ok")

        page.goto(f"{server.url}/ui/events/{event['id']}")
        (failed,) = [row[0] for row in forward_ids(db, event["id"])]
        expect(page.locator(f'[data-forward="{failed}"]')).to_contain_text("failed after 1 attempt · HTTP 500")
        page.screenshot(path=SCREENSHOTS / "h6-event-failed-forward.png", full_page=True)
        page.locator(f'[data-forward="{failed}"] button', has_text="Retry").click()
        expect(page.locator(".flash")).to_have_text(f"Forward {failed} to billing queued again.")
        taken = lambda record: record["id"] == event["id"] and record["verified"] and record["status"] == 200  # noqa: E731
        receiver.wait_for(1, taken)

        page.select_option("select[name=destination]", "billing")
        page.locator("form.replay button").click()
        expect(page.locator(".flash")).to_contain_text("Replay to billing queued as forward ")
        records = receiver.wait_for(2, taken)
        assert all(base64.b64decode(record["body"]) == stored for record in records if taken(record))

        wait_for_forwards(server, "sent", 2)
        page.reload()
        expect(page.locator("[data-forward]")).to_have_count(2)
        expect(page.locator("[data-forward] button")).to_have_count(0)  # nothing failed is left to retry
        audit = page.locator("table.audit tbody tr").filter(has_text="dashboard")
        expect(audit.filter(has_text="retry_forward")).to_have_count(1)
        expect(audit.filter(has_text="replay_event")).to_have_count(1)
        page.screenshot(path=SCREENSHOTS / "h6-event-forwards.png", full_page=True)
    finally:
        stop_server(server)
        receiver.stop()


def forward_ids(db: Path, event_id: str) -> list[tuple[int]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT id FROM deliveries WHERE kind = 'forward' AND event_id = ? ORDER BY id", (event_id,)
        ).fetchall()


@needs_browser
def test_in_chromium_the_tokens_page_revokes_a_client(tmp_path: Path, page: Page) -> None:
    async def issue() -> str:
        settings = load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET)
        async with open_inbox(settings) as inbox:
            await issue_tokens(inbox, "Cursor")
            return (await issue_tokens(inbox, "Claude Desktop"))[0]

    token_id = run_async(issue)
    server = start_server(tmp_path / "inbox.db", tmp_path)
    try:
        page.goto(f"{server.url}/ui/tokens")
        expect(page.locator("tr[data-token]")).to_have_count(4)
        page.screenshot(path=SCREENSHOTS / "h6-tokens.png", full_page=True)
        page.locator(f'tr[data-token="{token_id}"] button', has_text="Revoke").click()
        expect(page.locator(".flash")).to_have_text(f"Revoked {token_id}: 2 usable tokens of its grant ended.")
        expect(page.locator("tr[data-token]")).to_have_count(2)
        expect(page.locator("tr[data-token]").first).to_contain_text("Cursor")
    finally:
        stop_server(server)
