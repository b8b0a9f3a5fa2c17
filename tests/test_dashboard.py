"""The dashboard at /ui/: its pages and access rules over ASGI, then in a real browser (Debian's Chromium driven by
Playwright) against a real `serve`."""

from __future__ import annotations

import html as html_module
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stripe_inbox import Inbox, load_settings, open_inbox, search_indexer
from stripe_inbox.redact import MASK
from stripe_inbox.stores import Audit, open_store, search
from stripe_inbox.stripe.samples import SAMPLES, sample_event
from stripe_inbox.web.app import create_app
from stripe_inbox.web.chart import hourly_chart

from .conftest import SECRET, Server, cli_env, deliver, make_event, signed_headers, start_server, stop_server
from .postgres import postgres_schema
from .test_stripe_side import thin_event

TOKEN = "dash-token-" + "z" * 24
ORIGIN = "http://127.0.0.1"
DOCS = Path(__file__).resolve().parents[1] / "docs"
BOUND_MS = 10_000  # every wait in the browser is bounded by this

pytestmark = pytest.mark.anyio


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def flash_of(html: str) -> str:
    found = re.search(r'<p class="flash[^"]*" role="status">([^<]*)</p>', html)
    return html_module.unescape(found.group(1)) if found else ""


# -- over ASGI -----------------------------------------------------------------------------------


@pytest.fixture
async def ui(inbox: Inbox) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(inbox))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        yield client


async def test_root_leads_to_the_inbox_page(ui: httpx.AsyncClient) -> None:
    event = make_event()
    assert (await deliver(ui, event)).status_code == 200
    response = await ui.get("/", follow_redirects=True)
    assert response.status_code == 200 and str(response.url) == f"{ORIGIN}/ui/"
    assert event["id"] in response.text and "invoice.payment_failed" in response.text
    assert "USD 49.00" in response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie and "Secure" not in cookie
    ui.cookies.clear()  # a new visitor, behind a proxy that speaks HTTPS to the browser
    assert "Secure" in (await ui.get("/ui/", headers={"X-Forwarded-Proto": "https"})).headers["set-cookie"]
    assert "app;dur=" in response.headers["server-timing"]


async def test_without_a_token_only_this_machine_may_look(ui: httpx.AsyncClient) -> None:
    assert (await ui.get("/ui/", headers={"Host": "inbox.example.com"})).status_code == 403
    assert (await ui.get("/ui/", headers={"Host": "localhost:8000"})).status_code == 200
    assert (await ui.get("/ui/", headers={"Origin": "http://evil.example"})).status_code == 403


async def test_a_post_needs_the_session_csrf_token_and_the_same_origin(ui: httpx.AsyncClient, inbox: Inbox) -> None:
    event = make_event()
    await deliver(ui, event)
    page = await ui.get(f"/ui/events/{event['id']}")
    form = {"csrf_token": csrf_of(page.text), "outcome": "handled"}
    ack = f"/ui/events/{event['id']}/ack"
    assert (await ui.post(ack, data={"outcome": "handled"})).status_code == 403
    assert (await ui.post(ack, data={**form, "csrf_token": "forged"})).status_code == 403
    assert (await ui.post(ack, data=form, headers={"Origin": "http://evil.example"})).status_code == 403
    assert (await ui.post(ack, data=form, headers={"Referer": "http://evil.example/x"})).status_code == 403
    assert (await ui.post(ack, data=form, headers={"Sec-Fetch-Site": "cross-site"})).status_code == 403
    assert (await inbox.event(event["id"])).status == "pending"
    done = await ui.post(ack, data=form, headers={"Origin": ORIGIN})
    assert done.status_code == 303 and done.headers["location"] == f"/ui/events/{event['id']}"
    assert (await inbox.event(event["id"])).status == "acked"
    assert flash_of((await ui.get(done.headers["location"])).text) == "Acked as handled."
    again = await ui.get(f"/ui/events/{event['id']}")
    assert flash_of(again.text) == "", "a message is said once"


async def test_a_refused_action_says_why(ui: httpx.AsyncClient) -> None:
    event = make_event()
    await deliver(ui, event)
    csrf = csrf_of((await ui.get(f"/ui/events/{event['id']}")).text)
    done = await ui.post(f"/ui/events/{event['id']}/ack", data={"csrf_token": csrf, "outcome": "solved"})
    assert "outcome 'solved' is not valid" in flash_of((await ui.get(done.headers["location"])).text)
    assert (await ui.get("/ui/events/evt_missing")).status_code == 404
    bad = await ui.get("/ui/", params={"cursor": "x"})
    assert bad.status_code == 400 and "cursor" in bad.text


async def test_classify_and_retry_a_failed_notification_go_through_the_inbox(
    ui: httpx.AsyncClient, inbox: Inbox
) -> None:
    event = make_event()
    await deliver(ui, event)
    made = await inbox.notify("log", "payment failed", event["id"], None, actor="mcp")
    # The log channel always takes a message: make this one look like it had failed for good.
    async with inbox.store.db.transaction() as tx:
        await tx.execute(
            "UPDATE deliveries SET status = 'failed', reason = 'smtp said no' "
            "WHERE kind = 'notification' AND ref_id = ?",
            made.notification.id,
        )
    page = await ui.get(f"/ui/events/{event['id']}")
    assert "smtp said no" in page.text and "Retry" in page.text
    csrf = csrf_of(page.text)

    retried = await ui.post(
        f"/ui/events/{event['id']}/retry/notification/{made.notification.id}", data={"csrf_token": csrf}
    )
    assert (
        flash_of((await ui.get(retried.headers["location"])).text)
        == f"Retried notification {made.notification.id}: sent."
    )
    classified = await ui.post(f"/ui/events/{event['id']}/classify", data={"csrf_token": csrf})
    assert flash_of((await ui.get(classified.headers["location"])).text).startswith("Classified as payment_failed")

    audit = [(entry.actor, entry.action) for entry in (await inbox.get_event(event["id"])).audit]
    assert ("dashboard", "retry_notification") in audit and ("dashboard", "classify") in audit
    again = await ui.post(
        f"/ui/events/{event['id']}/retry/notification/{made.notification.id}", data={"csrf_token": csrf}
    )
    assert "only a failed one can be retried" in flash_of((await ui.get(again.headers["location"])).text)


async def test_a_thin_event_has_its_pages_too(ui: httpx.AsyncClient) -> None:
    event = thin_event()
    payload = json.dumps(event).encode()
    assert (await ui.post("/webhooks/stripe/thin", content=payload, headers=signed_headers(payload))).status_code == 200
    page = await ui.get(f"/ui/events/{event['id']}")
    assert page.status_code == 200 and "STRIPE_API_KEY" in page.text and "mtr_test_" in page.text
    assert event["id"] in (await ui.get("/ui/")).text


async def test_the_live_list_answers_only_when_the_inbox_changed(ui: httpx.AsyncClient) -> None:
    first = await ui.get("/ui/", headers={"X-Inbox-Live": "none"})
    marker = first.headers["x-inbox-marker"]
    assert first.status_code == 200 and "<html" not in first.text
    assert (await ui.get("/ui/", headers={"X-Inbox-Live": marker})).status_code == 204
    event = make_event()
    await deliver(ui, event)
    changed = await ui.get("/ui/", headers={"X-Inbox-Live": marker})
    assert changed.status_code == 200 and event["id"] in changed.text


async def test_a_search_says_how_many_events_are_not_in_its_index_yet(
    ui: httpx.AsyncClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_indexer, "READ_CATCH_UP", 0)  # overloaded: a read does not index the queue itself
    event = make_event()
    event["data"]["object"]["customer_email"] = "late@example.com"
    assert (await deliver(ui, event)).status_code == 200
    before = await ui.get("/ui/", params={"status": "all", "email": "late@example.com"})
    assert "1 not in the search index yet" in before.text and event["id"] not in before.text
    await inbox.indexer.catch_up()  # what serve's indexer does within a second
    after = await ui.get("/ui/", params={"status": "all", "email": "late@example.com"})
    assert event["id"] in after.text and "not in the search index" not in after.text


async def test_a_search_counted_up_to_its_cap_shows_the_count_with_a_plus(
    ui: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "TEXT_COUNT_CAP", 2)
    for _ in range(3):
        event = make_event()
        event["data"]["object"]["description"] = "weekly plan"
        assert (await deliver(ui, event)).status_code == 200
    capped = await ui.get("/ui/", params={"status": "all", "query": "weekly"})
    assert '<p class="total">2+ events' in capped.text
    monkeypatch.setattr(search, "TEXT_COUNT_CAP", 3)
    exact = await ui.get("/ui/", params={"status": "all", "query": "weekly"})
    assert '<p class="total">3 events' in exact.text


async def test_redacted_without_reveal_unless_the_policy_allows(tmp_path: Path) -> None:
    settings = load_settings(db=str(tmp_path / "inbox.db"), webhook_secret=SECRET, redact=["email"])
    payload = sample_event("checkout.session.completed")
    email = json.loads(payload)["data"]["object"]["customer_details"]["email"]
    async with open_inbox(settings) as inbox:
        transport = httpx.ASGITransport(app=create_app(inbox))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as ui:
            await ui.post("/webhooks/stripe", content=payload, headers=signed_headers(payload))
            event_id = json.loads(payload)["id"]
            page = await ui.get(f"/ui/events/{event_id}")
            assert email not in page.text and MASK in page.text and "Reveal" not in page.text
            assert email not in (await ui.get("/ui/?status=all")).text
            refused = await ui.post(f"/ui/events/{event_id}/reveal", data={"csrf_token": csrf_of(page.text)})
            assert refused.status_code == 403 and email not in refused.text


def test_the_chart_has_a_bar_per_hour_of_the_last_day() -> None:
    now = 1_800_000_000.0
    chart = hourly_chart({int(now) // 3600: 4, int(now) // 3600 - 1: 2, int(now) // 3600 - 30: 9}, now)
    assert len(chart.bars) == 24 and chart.total == 6 and chart.peak == 4
    assert chart.bars[-1].height == chart.height and chart.bars[-2].height == chart.height / 2
    assert chart.bars[0].height == 0


def test_the_access_token_has_its_new_name_and_its_old(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("STRIPE_INBOX_TOKEN", "STRIPE_INBOX_MCP_TOKEN"):
        monkeypatch.delenv("STRIPE_INBOX_TOKEN", raising=False)
        monkeypatch.delenv("STRIPE_INBOX_MCP_TOKEN", raising=False)
        monkeypatch.setenv(name, TOKEN)
        assert load_settings().mcp_token == TOKEN


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        store = await open_store(str(tmp_path / "inbox.db"))
        yield store
        await store.close()
        return
    async with postgres_schema() as url:
        store = await open_store(url)
        yield store
        await store.close()


async def test_received_per_hour_reads_the_same_on_both_databases(any_store: Any) -> None:
    from stripe_inbox.events import IncomingEvent

    hour = 1_800_000_000 // 3600 * 3600
    for at, count in ((hour - 7200, 1), (hour + 0.4, 2), (hour + 3599.4, 3), (hour + 3600, 4)):
        events = [IncomingEvent.parse(json.dumps(make_event()).encode()) for _ in range(count)]
        await any_store.add_events(events, at)
    assert await any_store.received_per_hour(hour) == {hour // 3600: 5, hour // 3600 + 1: 4}
    marker = await any_store.change_marker()
    (event,) = await any_store.get_events([events[0].id, "evt_missing"])
    await any_store.add_audit(event.id, time.time(), Audit("dashboard", "reveal_payload", {}))
    assert await any_store.change_marker() > marker


# -- in a real browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the test extra has it
    sync_playwright = None  # type: ignore[assignment]

# `make test` installs both (.ci/run installs Chromium), so in CI a missing one fails instead of skipping.
needs_browser = pytest.mark.skipif(
    (CHROMIUM is None or sync_playwright is None) and not os.environ.get("CI"),
    reason="the browser tests need Playwright (pip install -e '.[test]') and Chromium (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None, "no chromium on PATH: apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`serve` without a token: the dashboard answers on this machine, no sign-in."""
    where = tmp_path_factory.mktemp("loopback")
    running = start_server(where / "inbox.db", where)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`serve` with an access token, masking e-mail addresses, and letting the dashboard reveal them."""
    where = tmp_path_factory.mktemp("guarded")
    (where / "stripe-inbox.toml").write_text('redact = ["email"]\ndashboard_reveal = true\n')
    running = start_server(where / "inbox.db", where, cli_env(where / "inbox.db", STRIPE_INBOX_TOKEN=TOKEN))
    yield running
    stop_server(running)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(BOUND_MS)
    opened = context.new_page()
    yield opened
    context.close()


def send(server: Server, payload: bytes) -> str:
    response = httpx.post(server.webhook_url, content=payload, headers=signed_headers(payload), timeout=10)
    assert response.status_code == 200, response.text
    return str(json.loads(payload)["id"])


def sign_in(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/ui/")
    page.fill("input[name=token]", TOKEN)
    page.click("text=Sign in >> nth=-1")
    expect(page.locator("h1")).to_have_text("Inbox")


@needs_browser
def test_the_inbox_lists_what_arrived_and_the_search_narrows_it(loopback: Server, page: Page) -> None:
    sent = {event_type: send(loopback, sample_event(event_type)) for event_type in SAMPLES}
    page.goto(loopback.url)
    expect(page.locator("h1")).to_have_text("Inbox")
    assert page.url == f"{loopback.url}/ui/"
    for event_id in sent.values():
        expect(page.locator(f'tr[data-event="{event_id}"]')).to_have_count(1)
    expect(page.locator("#count-pending")).to_have_text(str(len(sent)))
    expect(page.locator("svg rect")).to_have_count(24)
    page.screenshot(path=DOCS / "dashboard-inbox.png", full_page=True)

    page.fill("input[name=type]", "invoice.paid")
    page.click("form.search button[type=submit]")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-event="{sent["invoice.paid"]}"]')).to_have_count(1)
    assert "type=invoice.paid" in page.url  # the search is in the URL: it can be shared


@needs_browser
def test_an_event_that_arrives_while_the_page_is_open_appears(loopback: Server, page: Page) -> None:
    page.goto(f"{loopback.url}/ui/?status=all")
    expect(page.locator("h1")).to_have_text("Inbox")
    event_id = send(loopback, sample_event("charge.refunded"))
    expect(page.locator(f'tr[data-event="{event_id}"]')).to_have_count(1)


@needs_browser
def test_the_event_page_shows_payload_and_audit_and_acks_as_dashboard(loopback: Server, page: Page) -> None:
    event_id = send(loopback, sample_event("charge.dispute.created"))
    page.goto(f"{loopback.url}/ui/")
    page.click(f'tr[data-event="{event_id}"] a >> nth=0')
    expect(page.locator("#payload")).to_contain_text(event_id)
    expect(page.locator("#payload")).to_contain_text('"reason": "fraudulent"')

    page.click("text=Classify")
    expect(page.locator(".flash")).to_contain_text("Classified as")
    page.select_option("select[name=outcome]", "escalated")
    page.fill("input[name=note]", "evidence sent to Stripe")
    page.click("form.ack button")
    expect(page.locator(".flash")).to_have_text("Acked as escalated with the note “evidence sent to Stripe”.")
    expect(page.locator("h1 .status")).to_have_text("acked")
    expect(page.locator("table.audit td.actor")).to_have_text(["dashboard", "dashboard"])
    expect(page.locator("table.audit")).to_contain_text("ack_event")
    page.screenshot(path=DOCS / "dashboard-event.png", full_page=True)

    page.goto(f"{loopback.url}/ui/")
    expect(page.locator("h1")).to_have_text("Inbox")
    expect(page.locator(f'tr[data-event="{event_id}"]')).to_have_count(0)


@needs_browser
def test_a_cross_site_post_is_refused(loopback: Server, page: Page) -> None:
    event_id = send(loopback, sample_event("invoice.payment_failed"))
    page.goto(f"{loopback.url}/ui/events/{event_id}")
    csrf = page.locator("input[name=csrf_token] >> nth=0").get_attribute("value")
    # Even a page that somehow had the CSRF token is refused: its Origin is not the dashboard's.
    attack = (
        f'<form method="post" action="{loopback.url}/ui/events/{event_id}/ack">'
        f'<input name="csrf_token" value="{csrf}"><input name="outcome" value="ignored"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    page.route("http://evil.test/**", lambda route: route.fulfill(content_type="text/html", body=attack))
    with page.expect_response(lambda response: response.url.endswith("/ack")) as answer:
        page.goto("http://evil.test/")
    assert answer.value.status == 403
    page.goto(f"{loopback.url}/ui/events/{event_id}")
    expect(page.locator("h1 .status")).to_have_text("pending")


@needs_browser
def test_sign_in_takes_the_token_and_no_page_shows_it(guarded: Server, page: Page) -> None:
    event_id = send(guarded, sample_event("invoice.payment_failed"))
    page.goto(f"{guarded.url}/ui/events/{event_id}")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("input[name=token]", "not-" + TOKEN)
    page.click("text=Sign in >> nth=-1")
    expect(page.locator("[role=alert]")).to_have_text("That is not the access token.")
    assert "/ui/sign-in" in page.url
    seen = [page.content()]

    page.fill("input[name=token]", TOKEN)
    page.click("text=Sign in >> nth=-1")
    expect(page.locator("#payload")).to_contain_text(event_id)  # back where it was going
    seen.append(page.content())
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    page.goto(f"{guarded.url}/ui/")
    seen.append(page.content())
    for html in seen:
        assert TOKEN not in html and SECRET not in html

    page.click("text=Sign out")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.goto(f"{guarded.url}/ui/")
    expect(page.locator("h1")).to_have_text("Sign in")


@needs_browser
def test_redaction_holds_until_an_audited_reveal(guarded: Server, page: Page) -> None:
    payload = sample_event("checkout.session.completed")
    email = json.loads(payload)["data"]["object"]["customer_details"]["email"]
    event_id = send(guarded, payload)
    sign_in(page, guarded)
    assert email not in page.content()
    page.goto(f"{guarded.url}/ui/events/{event_id}")
    expect(page.locator("#payload")).to_contain_text(MASK)
    assert email not in page.content()

    page.click("text=Reveal personal data")
    expect(page.locator("#payload")).to_contain_text(email)
    expect(page.locator("table.audit")).to_contain_text("reveal_payload")
    page.goto(f"{guarded.url}/ui/events/{event_id}")
    expect(page.locator("#payload")).to_contain_text(MASK)
    assert email not in page.content()
