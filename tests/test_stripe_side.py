"""register, backfill, thin events and Connect, against a loopback server that answers as Stripe's API."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from stripe_inbox import Inbox, Settings, load_settings, open_inbox
from stripe_inbox.errors import InvalidArgument
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp.server import create_mcp_server
from stripe_inbox.stripe.api import StripeAPI, StripeAPIError
from stripe_inbox.stripe.backfill import backfill, start_of
from stripe_inbox.stripe.register import register
from stripe_inbox.web.app import create_app

from .conftest import SECRET, cli_env, deliver, encode, make_event, run_cli, signed_headers
from .fake_stripe import FakeStripe

pytestmark = pytest.mark.anyio
API_KEY = "sk_test_inbox123"
NOW = int(time.time())


@pytest.fixture
def stripe_api() -> Iterator[FakeStripe]:
    fake = FakeStripe()
    yield fake
    fake.stop()


@pytest.fixture
def api_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stripe_api: FakeStripe) -> Settings:
    monkeypatch.chdir(tmp_path)
    for name in ("STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY", "STRIPE_SECRET_KEY", "STRIPE_INBOX_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return load_settings(db=str(tmp_path / "api.db"), api_key=API_KEY, api_base=stripe_api.url, webhook_secret=SECRET)


@pytest.fixture
async def api_inbox(api_settings: Settings) -> AsyncIterator[Inbox]:
    async with open_inbox(api_settings) as inbox:
        yield inbox


def stripe_events(count: int, start: int = NOW - 86400) -> list[dict[str, Any]]:
    """`count` events one second apart, as the Events API returns them."""
    events = []
    for number in range(count):
        event = make_event(
            "invoice.paid" if number % 3 else "charge.refunded",
            created=start + number,
            id=f"evt_{number:06d}",
            pending_webhooks=number % 2,
        )
        events.append(event)
    return events


# -- register ------------------------------------------------------------------------------------


async def test_register_creates_the_endpoint_and_its_secret_verifies_deliveries(
    api_settings: Settings, stripe_api: FakeStripe
) -> None:
    url = "https://inbox.example.com/webhooks/stripe"
    done = await register(api_settings, url, ["invoice.paid", "charge.dispute.created"])
    listing, create = stripe_api.requests
    assert (listing.method, listing.path, listing.params) == ("GET", "/v1/webhook_endpoints", {"limit": ["100"]})
    assert (create.method, create.path) == ("POST", "/v1/webhook_endpoints")
    assert create.params == {
        "url": [url],
        "enabled_events[0]": ["invoice.paid"],
        "enabled_events[1]": ["charge.dispute.created"],
        "description": ["stripe-inbox"],
    }
    assert create.headers["Authorization"] == f"Bearer {API_KEY}"
    assert create.headers["Content-Type"] == "application/x-www-form-urlencoded"
    secret = stripe_api.endpoints[0]["secret"]
    assert done.endpoint_id == stripe_api.endpoints[0]["id"] and done.notes == []
    assert Path(done.secret_file).read_text().split() == [secret]  # type: ignore[arg-type]
    assert Path(done.secret_file).stat().st_mode & 0o777 == 0o600  # type: ignore[arg-type]

    async with open_inbox(api_settings) as inbox:  # `serve` started after register
        assert secret in inbox.secrets and SECRET in inbox.secrets
        transport = httpx.ASGITransport(app=create_app(inbox))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            event = make_event()
            assert (await deliver(http, event, secret=secret)).status_code == 200
        assert (await inbox.event(event["id"])).status == "pending"


async def test_register_refuses_a_second_endpoint_for_the_same_url(
    api_settings: Settings, stripe_api: FakeStripe
) -> None:
    url = "https://inbox.example.com/webhooks/stripe"
    first = await register(api_settings, url, None)
    with pytest.raises(StripeAPIError, match=f"an endpoint for {url} already exists \\({first.endpoint_id}\\)"):
        await register(api_settings, url, None)
    assert len(stripe_api.endpoints) == 1
    forced = await register(api_settings, url, None, force=True)
    assert forced.endpoint_id != first.endpoint_id and len(stripe_api.endpoints) == 2


async def test_register_dry_run_and_prefix_patterns(api_settings: Settings, stripe_api: FakeStripe) -> None:
    done = await register(api_settings, "http://localhost:8000/hooks", ["invoice.*"], dry_run=True)
    assert stripe_api.requests == []
    assert done.request.startswith(f"POST {stripe_api.url}/v1/webhook_endpoints\n")
    assert "enabled_events%5B0%5D=%2A" in done.request and done.enabled_events == ["*"]
    assert len(done.notes) == 3  # http, unusual path, '*' instead of prefixes
    with pytest.raises(InvalidArgument, match="is not an http"):
        await register(api_settings, "inbox.example.com", None, dry_run=True)


def test_register_command_and_its_errors(tmp_path: Path, stripe_api: FakeStripe) -> None:
    env = cli_env(tmp_path / "r.db", STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=stripe_api.url)
    result = run_cli("register", "--url", "https://x.example.com/webhooks/stripe", env=env, cwd=tmp_path)
    assert "created webhook endpoint we_" in result.stdout and "mode 0600" in result.stdout
    again = run_cli("register", "--url", "https://x.example.com/webhooks/stripe", env=env, cwd=tmp_path, check=False)
    assert again.returncode != 0 and "--force" in again.stderr
    no_key = {k: v for k, v in env.items() if k != "STRIPE_API_KEY"}
    missing = run_cli(
        "register", "--url", "https://y.example.com/webhooks/stripe", env=no_key, cwd=tmp_path, check=False
    )
    assert missing.returncode != 0 and "no Stripe API key: set STRIPE_API_KEY" in missing.stderr
    stripe_api.error = (401, "invalid_request_error", "Invalid API Key provided: sk_test_***123")
    refused = run_cli("register", "--url", "https://y.example.com/webhooks/stripe", env=env, cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "Stripe refused the API key (401)" in refused.stderr
    assert API_KEY not in refused.stderr + refused.stdout


# -- backfill ------------------------------------------------------------------------------------


async def test_backfill_of_1000_events_over_pages_with_some_present(api_inbox: Inbox, stripe_api: FakeStripe) -> None:
    stripe_api.events = stripe_events(1000)
    present = [IncomingEvent.parse(encode(e)) for e in stripe_api.events[100:250]]
    await api_inbox.accept(present)
    api = StripeAPI(API_KEY, stripe_api.url)
    pages: list[int] = []
    result = await backfill(api_inbox, api, start_of(None, 2), progress=lambda r: pages.append(r.pages))
    assert (result.new, result.already_present, result.filtered, result.pages) == (850, 150, 0, 10)
    assert pages == list(range(1, 11)) and not result.resumed
    assert (await api_inbox.list_events(status="all", limit=1)).total == 1000
    first, second = stripe_api.requests[:2]
    assert first.params["limit"] == ["100"] and "starting_after" not in first.params
    assert int(first.params["created[gte]"][0]) == pytest.approx(time.time() - 2 * 86400, abs=5)
    assert second.params["starting_after"] == ["evt_000900"]  # newest first: the last of page one
    assert result.continue_from is not None and int(result.continue_from.timestamp()) == NOW - 86400 + 999

    again = await backfill(api_inbox, api)  # a plain run continues from the newest event seen
    assert again.new == 0 and again.already_present == 1 and again.pages == 1
    assert stripe_api.requests[-1].params["created[gte]"] == [str(NOW - 86400 + 999)]


async def test_an_interrupted_backfill_resumes_without_gaps_or_duplicates(
    api_inbox: Inbox, stripe_api: FakeStripe
) -> None:
    stripe_api.events = stripe_events(1000)
    stripe_api.fail_on_page = 4
    api = StripeAPI(API_KEY, stripe_api.url)
    with pytest.raises(StripeAPIError, match="boom"):
        await backfill(api_inbox, api, start_of(None, 2))
    assert (await api_inbox.list_events(status="all", limit=1)).total == 300
    resumed = await backfill(api_inbox, api)
    assert resumed.resumed and resumed.new == 1000 and resumed.already_present == 0
    assert stripe_api.requests[-7].params["starting_after"] == ["evt_000700"]  # page 4 again, not page 1
    page = await api_inbox.list_events(status="all", limit=100)
    assert page.total == 1000
    stored = [await api_inbox.store.get_event(f"evt_{n:06d}") for n in range(1000)]
    assert all(event is not None and event.deliveries == 1 for event in stored)


async def test_backfill_filters_undelivered_and_by_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stripe_api: FakeStripe
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        db=str(tmp_path / "f.db"),
        api_key=API_KEY,
        api_base=stripe_api.url,
        webhook_secret=SECRET,
        events=["charge.refunded"],
    )
    stripe_api.events = stripe_events(30)
    async with open_inbox(settings) as inbox:
        result = await backfill(inbox, StripeAPI(API_KEY, stripe_api.url), start_of(None, 2), undelivered_only=True)
        stored = (await inbox.list_events(status="all", limit=100)).events
    request = stripe_api.requests[0]
    assert request.params["delivery_success"] == ["false"] and request.params["types[0]"] == ["charge.refunded"]
    expected = {e["id"] for e in stripe_events(30) if e["type"] == "charge.refunded" and e["pending_webhooks"]}
    assert {e.id for e in stored} == expected and result.new == len(expected)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ((401, "invalid_request_error", "Invalid API Key"), "Stripe refused the API key (401)"),
        ((403, "invalid_request_error", "restricted key"), "the API key may not do this (403)"),
        ((429, "rate_limit_error", "Too many requests"), "Stripe is rate-limiting this key (429)"),
    ],
)
async def test_api_errors_are_clear(
    api_inbox: Inbox, stripe_api: FakeStripe, error: tuple[int, str, str], message: str
) -> None:
    stripe_api.error = error
    with pytest.raises(StripeAPIError) as caught:
        await backfill(api_inbox, StripeAPI(API_KEY, stripe_api.url), start_of(None, 1))
    assert message in str(caught.value)


async def test_network_down_is_clear(api_inbox: Inbox) -> None:
    with pytest.raises(StripeAPIError, match=r"cannot reach the Stripe API at http://127\.0\.0\.1:9"):
        await backfill(api_inbox, StripeAPI(API_KEY, "http://127.0.0.1:9"), start_of(None, 1))


def test_backfill_window_arguments() -> None:
    now = 1_800_000_000.0
    assert start_of(None, None, now) is None
    assert start_of(None, 3, now) == now - 3 * 86400
    assert start_of("2027-01-14", None, now) == datetime(2027, 1, 14, tzinfo=UTC).timestamp()
    assert start_of("2027-01-14T12:00:00+02:00", None, now) == datetime(2027, 1, 14, 10, tzinfo=UTC).timestamp()
    for since, days, message in [
        ("2020-01-01", None, "more than 30 days ago"),
        (None, 31, "at most 30"),
        ("yesterday", None, "not a date"),
        ("2027-01-14", 2, "not both"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            start_of(since, days, now)


def test_backfill_command_shows_progress_and_counts(tmp_path: Path, stripe_api: FakeStripe) -> None:
    stripe_api.events = stripe_events(250)
    env = cli_env(tmp_path / "b.db", STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=stripe_api.url)
    result = run_cli("backfill", "--days", "2", env=env, cwd=tmp_path)
    assert "page 3: 250 new" in result.stderr
    assert "250 new, 0 already present, 0 filtered" in result.stdout
    second = json.loads(run_cli("backfill", "--json", env=env, cwd=tmp_path).stdout)
    assert (second["new"], second["already_present"]) == (0, 1)


async def test_backfill_tool(api_inbox: Inbox, stripe_api: FakeStripe, tmp_path: Path) -> None:
    stripe_api.events = stripe_events(5)
    server = create_mcp_server(api_inbox)
    async with server.running(), Client(server) as client:
        result = await client.call_tool("backfill_events", {"days": 2})
        assert result.structured_content["new"] == 5
        bad = await client.call_tool("backfill_events", {"days": 45})
        assert bad.is_error and "days" in bad.content[0].text
    async with open_inbox(load_settings(db=str(tmp_path / "nokey.db"), webhook_secret=SECRET)) as inbox:
        keyless = create_mcp_server(inbox)
        async with keyless.running(), Client(keyless) as client:
            missing = await client.call_tool("backfill_events", {})
            assert missing.is_error and "no Stripe API key" in missing.content[0].text


# -- thin events and Connect ---------------------------------------------------------------------


def thin_event(**fields: Any) -> dict[str, Any]:
    return {
        "id": "evt_test_65R9Ijk8q7e3t1CYo3q16RCMs8SQB0UJBh7rmTaE6dWK",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "livemode": False,
        "created": "2024-09-17T06:20:52.246Z",
        "related_object": {
            "id": "mtr_test_61R9IgY7KbYHrnK6741CYo3q16RCM0e8",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_test_61R9IgY7KbYHrnK6741CYo3q16RCM0e8",
        },
        "reason": {"type": "request", "request": {"id": "req_1", "idempotency_key": "k"}},
        **fields,
    }


async def test_thin_events_are_verified_stored_and_fetched(api_inbox: Inbox, stripe_api: FakeStripe) -> None:
    transport = httpx.ASGITransport(app=create_app(api_inbox))
    event = thin_event(context="acct_1Nv0FGQ9RKHgCVdK")
    payload = encode(event)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        accepted = await http.post("/webhooks/stripe/thin", content=payload, headers=signed_headers(payload))
        tampered = await http.post(
            "/webhooks/stripe/thin", content=payload.replace(b"error_report", b"x"), headers=signed_headers(payload)
        )
        snapshot = encode(make_event())
        wrong_door = await http.post("/webhooks/stripe/thin", content=snapshot, headers=signed_headers(snapshot))
        other_door = await http.post("/webhooks/stripe", content=payload, headers=signed_headers(payload))
    assert accepted.status_code == 200 and accepted.json() == {"received": True}
    assert (tampered.status_code, tampered.json()["error"]) == (400, "invalid_signature")
    assert wrong_door.json()["message"] == "this is a snapshot event: its endpoint is /webhooks/stripe"
    assert other_door.json()["message"] == "this is a thin event: its endpoint is /webhooks/stripe/thin"

    stored = await api_inbox.event(event["id"])
    assert (stored.kind, stored.object_id, stored.account) == (
        "thin",
        event["related_object"]["id"],
        "acct_1Nv0FGQ9RKHgCVdK",
    )
    assert stored.created == 1726554052 and stored.payload == payload
    missing = await api_inbox.get_event(event["id"])
    assert missing.full_event is None and "could not fetch the full event" in (missing.full_event_note or "")
    stripe_api.v2_events[event["id"]] = {**event, "data": {"developer_message_summary": "meter error"}}
    detail = await api_inbox.get_event(event["id"])
    assert detail.related_object == event["related_object"]
    assert detail.full_event is not None and detail.full_event["data"]["developer_message_summary"] == "meter error"
    assert stripe_api.requests[-1].path == f"/v2/core/events/{event['id']}"


async def test_thin_event_without_an_api_key_says_so(inbox: Inbox) -> None:
    event = thin_event()
    await inbox.accept([IncomingEvent.parse(encode(event))])
    detail = await inbox.get_event(event["id"])
    assert detail.kind == "thin" and detail.full_event is None
    assert detail.full_event_note == (
        "a thin event holds only a reference; set STRIPE_API_KEY to fetch the full event from Stripe"
    )


async def test_connect_account_is_kept_shown_and_filterable(inbox: Inbox, tmp_path: Path) -> None:
    mine, theirs = make_event(account="acct_A"), make_event(account="acct_B")
    await inbox.accept([IncomingEvent.parse(encode(e)) for e in (mine, theirs, make_event())])
    server = create_mcp_server(inbox)
    async with server.running(), Client(server) as client:
        page = (await client.call_tool("list_events", {"account": "acct_A"})).structured_content
        detail = (await client.call_tool("get_event", {"event_id": theirs["id"]})).structured_content
    assert [e["id"] for e in page["events"]] == [mine["id"]] and page["events"][0]["account"] == "acct_A"
    assert detail["account"] == "acct_B"
    listed = run_cli(
        "events", "list", "--account", "acct_B", "--json", env=cli_env(tmp_path / "inbox.db"), cwd=tmp_path
    )
    assert [e["id"] for e in json.loads(listed.stdout)["events"]] == [theirs["id"]]
