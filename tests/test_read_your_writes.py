"""Read-your-writes: what a search, a timeline, resolution or classify answers is consistent with every event
list_events already shows, at once (no sleep, no retry), in-process and through a real `serve`, `stripe-inbox mcp`
over stdio and the CLI; and under overload (a queue too long to index on a read) a read answers at once, says
how many events the index lacks, and resolution is still right."""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from mcp import Client, StdioServerParameters

from stripe_inbox import Inbox, load_settings, open_inbox, search_indexer
from stripe_inbox.errors import StoreUnavailable
from stripe_inbox.events import IncomingEvent
from stripe_inbox.web.app import create_app

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
)
from .postgres import postgres_schema
from .test_channel_push import session as channel_session
from .test_store import db  # noqa: F401  # the database fixture: SQLite and PostgreSQL

pytestmark = pytest.mark.anyio
BOUND = 60


@pytest.fixture
async def inbox(db: str) -> AsyncIterator[Inbox]:  # noqa: F811
    async with open_inbox(load_settings(db=db, webhook_secret=SECRET)) as opened:
        yield opened


def invoice_pair(email: str, words: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An invoice's payment_failed and then its invoice.paid, a minute later by Stripe's clock."""
    failed = make_event("invoice.payment_failed", created=int(time.time()) - 60)
    failed["data"]["object"]["customer_email"] = email
    paid = make_event("invoice.paid")
    paid["data"]["object"] = {**failed["data"]["object"], "description": words, "status": "paid"}
    return failed, paid


async def store(inbox: Inbox, *events: dict[str, Any]) -> None:
    """Stored as the ingress stores them: only queued for the search index."""
    await inbox.accept([IncomingEvent.parse(encode(event)) for event in events])


async def filler(inbox: Inbox, count: int) -> None:
    await inbox.accept([IncomingEvent.parse(encode(make_event("charge.succeeded"))) for _ in range(count)])


async def test_a_read_first_indexes_what_is_queued_when_it_is_little(inbox: Inbox) -> None:
    failed, paid = invoice_pair("ryw@example.com", "quarterly renewal")
    invoice = failed["data"]["object"]["id"]
    await store(inbox, failed)
    await store(inbox, paid)
    assert await inbox.store.unindexed() == 2  # nothing indexed them yet: the read does
    page = await inbox.list_events("all", query="quarterly")
    assert ([e.id for e in page.events], page.unindexed) == ([paid["id"]], 0)
    assert {e.id for e in (await inbox.list_events("all", object_id=invoice)).events} == {failed["id"], paid["id"]}
    assert len((await inbox.list_events("all", email="ryw@example.com")).events) == 2
    timeline = await inbox.timeline(invoice)
    assert ([e.id for e in timeline.events], timeline.unindexed) == ([failed["id"], paid["id"]], 0)
    assert timeline.events[0].superseded_by == paid["id"]
    classification = await inbox.classify(failed["id"], "test")
    assert classification.priority == "low" and paid["id"] in classification.summary
    assert [a.tool for a in classification.suggested_actions] == ["ack_event"]


async def test_under_overload_a_read_answers_at_once_and_resolution_is_still_right(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_indexer, "READ_CATCH_UP", 5)
    await filler(inbox, 6)  # more than a read indexes itself
    failed, paid = invoice_pair("burst@example.com", "burst plan")
    await store(inbox, failed)
    await store(inbox, paid)
    page = await inbox.list_events("all", query="burst")
    assert (page.events, page.unindexed) == ([], 8)  # not found, and the page says why
    timeline = await inbox.timeline(failed["data"]["object"]["id"])
    assert ([e.id for e in timeline.events], timeline.unindexed) == ([failed["id"], paid["id"]], 8)
    assert timeline.events[0].superseded_by == paid["id"]  # its own object's events are read from the queue
    pending = {e.id: e for e in (await inbox.list_events("pending", limit=100)).events}
    assert pending[failed["id"]].superseded_by == paid["id"] and not pending[paid["id"]].stale
    assert (await inbox.classify(failed["id"], "test")).priority == "low"
    assert await inbox.store.unindexed() == 8  # resolution read the queue; it indexed nothing


async def test_resolution_is_right_whether_the_events_are_indexed_or_not(inbox: Inbox) -> None:
    """Whichever of the two is indexed and whichever still queued, in order or not: superseded_by and stale
    come out the same (resolution does not wait for the index)."""
    for paid_first in (False, True):
        failed, paid = invoice_pair("mix@example.com", "mixed")
        earlier, later = (paid, failed) if paid_first else (failed, paid)
        await store(inbox, earlier)
        await inbox.indexer.catch_up()
        await store(inbox, later)  # only queued: nothing reads the search index here
        assert await inbox.store.unindexed() == 1
        first, second = await inbox.summaries([await inbox.event(failed["id"]), await inbox.event(paid["id"])])
        assert (first.superseded_by, first.stale) == (paid["id"], paid_first)  # arrived after a newer one
        assert (second.superseded_by, second.stale) == (None, False)
        assert (await inbox.classify(failed["id"], "test")).priority == "low"


async def test_readers_at_once_share_the_catch_up_and_index_each_event_once(inbox: Inbox) -> None:
    tag = secrets.token_hex(4)
    events = [make_event("invoice.paid") for _ in range(30)]
    for event in events:
        event["data"]["object"]["description"] = f"shared {tag}"
    await store(inbox, *events)
    found: list[int] = []

    async def search() -> None:
        found.append(len((await inbox.list_events("all", query=tag, limit=100)).events))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(search)
    assert found == [30] * 5 and await inbox.store.unindexed() == 0
    assert (await inbox.list_events("all", query=tag, limit=100)).total == 30  # each indexed once


async def test_an_event_with_nul_in_its_text_is_indexed_and_holds_up_no_other(inbox: Inbox) -> None:
    """JSON may carry U+0000 where PostgreSQL's text cannot: such an event is indexed without it, and the events
    queued with it are indexed too."""
    odd = make_event("invoice.paid")
    odd["data"]["object"].update(customer_email="nul\u0000@example.com", description="nul\u0000plan")
    other = make_event("invoice.paid")
    other["data"]["object"]["description"] = "neighbour plan"
    await store(inbox, odd, other)
    assert [e.id for e in (await inbox.list_events("all", email="nul@example.com")).events] == [odd["id"]]
    assert [e.id for e in (await inbox.list_events("all", query="neighbour")).events] == [other["id"]]


async def test_a_read_whose_catch_up_fails_still_answers_and_says_what_it_lacks(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def unwritable(*_: Any) -> int:
        raise StoreUnavailable("the inbox database cannot be written: disk full")

    monkeypatch.setattr(inbox.store, "index", unwritable)
    failed, paid = invoice_pair("full@example.com", "full disk")
    await store(inbox, failed, paid)
    page = await inbox.list_events("all", query="disk")
    assert (page.events, page.unindexed) == ([], 2)
    assert "disk full" in caplog.text
    (summary,) = await inbox.summaries([await inbox.event(failed["id"])])
    assert summary.superseded_by == paid["id"]


# -- a real `serve`, `stripe-inbox mcp` over stdio and the CLI ----------------------------------------------


async def post(url: str, *events: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=BOUND) as http:
        for event in events:  # one after another: the paid one arrives second
            payload = encode(event)
            response = await http.post(url, content=payload, headers=signed_headers(payload))
            assert response.status_code == 200, response.text


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content  # type: ignore[no-any-return]


async def told_of(client: Client, url: str, failed: dict[str, Any], paid: dict[str, Any]) -> None:
    """The agent waits with wait_for_events while both are delivered, and is woken by the paid one."""
    async with anyio.create_task_group() as group:
        group.start_soon(post, url, failed, paid)
        arguments = {"timeout_seconds": BOUND, "type": paid["type"]}
        woken = structured(await client.call_tool("wait_for_events", arguments))
    assert [event["id"] for event in woken["events"]] == [paid["id"]]


async def agent_reads(client: Client, failed: dict[str, Any], paid: dict[str, Any], words: str) -> int:
    """What an agent asks right after it was told of the paid invoice, each asked once; returns the
    `unindexed` the search answered with. Resolution and classify must be right either way."""
    invoice = failed["data"]["object"]["id"]
    pending = structured(await client.call_tool("list_events", {"type": failed["type"], "limit": 100}))
    by_id = {event["id"]: event for event in pending["events"]}
    assert by_id[failed["id"]]["superseded_by"] == paid["id"]
    classification = structured(await client.call_tool("classify", {"event_id": failed["id"]}))
    assert classification["priority"] == "low" and paid["id"] in classification["summary"]
    assert [action["tool"] for action in classification["suggested_actions"]] == ["ack_event"]
    search = structured(await client.call_tool("list_events", {"status": "all", "query": words}))
    keyed = structured(await client.call_tool("list_events", {"status": "all", "object_id": invoice}))
    timeline = structured(await client.call_tool("get_timeline", {"object_id": invoice}))
    assert [event["id"] for event in timeline["events"]] == [failed["id"], paid["id"]]
    assert timeline["events"][0]["superseded_by"] == paid["id"]
    if search["unindexed"] == 0:  # every read is consistent with what list_events shows
        assert [event["id"] for event in search["events"]] == [paid["id"]]
        assert {event["id"] for event in keyed["events"]} == {failed["id"], paid["id"]}
        assert timeline["unindexed"] == 0
    else:  # overloaded: not found yet, and each answer says why
        assert search["events"] == [] and keyed["unindexed"] == timeline["unindexed"] == search["unindexed"]
    for event in (failed, paid):  # done with them: the next wait_for_events waits for new ones
        structured(await client.call_tool("ack_event", {"event_id": event["id"]}))
    return int(search["unindexed"])


def env_for(database: str) -> dict[str, str]:
    return cli_env(Path("unused"), STRIPE_INBOX_DB=database)  # a SQLite path or a postgresql:// URL


def stdio_agent(database: str, cwd: Path) -> StdioServerParameters:
    arguments = ["-m", "stripe_inbox", "mcp", "--db", database]
    return StdioServerParameters(command=sys.executable, args=arguments, env=env_for(database), cwd=str(cwd))


def cli_json(database: str, cwd: Path, *arguments: str) -> dict[str, Any]:
    return json.loads(run_cli(*arguments, "--json", env=env_for(database), cwd=cwd).stdout)  # type: ignore[no-any-return]


def cli_reads(database: str, cwd: Path, failed: dict[str, Any], paid: dict[str, Any], words: str) -> int:
    invoice = failed["data"]["object"]["id"]
    search = cli_json(database, cwd, "events", "list", "--status", "all", "--query", words)
    timeline = cli_json(database, cwd, "events", "timeline", invoice)
    pending = cli_json(database, cwd, "events", "list", "--type", failed["type"], "--limit", "100")
    assert {e["id"]: e["superseded_by"] for e in pending["events"]}[failed["id"]] == paid["id"]
    assert [event["id"] for event in timeline["events"]] == [failed["id"], paid["id"]]
    assert timeline["events"][0]["superseded_by"] == paid["id"]
    if search["unindexed"] == 0:
        assert [event["id"] for event in search["events"]] == [paid["id"]]
    else:
        assert search["events"] == [] and timeline["unindexed"] == search["unindexed"]
    return int(search["unindexed"])


async def test_an_agent_finds_what_it_was_just_told_of_over_http_stdio_and_the_cli(tmp_path: Path) -> None:
    database = str(tmp_path / "inbox.db")
    server = start_server(Path(database), tmp_path)
    try:
        async with Client(server.mcp_url) as client:
            failed, paid = invoice_pair("http@example.com", "quarterly renewal")
            await told_of(client, server.webhook_url, failed, paid)
            assert await agent_reads(client, failed, paid, "quarterly") == 0  # at once: no sleep, no retry
        async with Client(stdio_agent(database, tmp_path)) as client:  # another process on the same database
            failed, paid = invoice_pair("stdio@example.com", "annual upgrade")
            await told_of(client, server.webhook_url, failed, paid)
            assert await agent_reads(client, failed, paid, "annual") == 0
        failed, paid = invoice_pair("cli@example.com", "monthly seats")
        await post(server.webhook_url, failed, paid)
        assert cli_reads(database, tmp_path, failed, paid, "monthly") == 0
    finally:
        stop_server(server)


@asynccontextmanager
async def held_backlog(url: str, count: int) -> AsyncIterator[None]:
    """`count` stored events that no indexer can take meanwhile (another transaction holds their queue rows):
    what a sustained overload looks like to a read, for as long as the test needs it."""
    async with open_inbox(load_settings(db=url, webhook_secret=SECRET)) as opened:
        await filler(opened, count)
    holder = await asyncpg.connect(url.split("?")[0], server_settings={"search_path": url.split("search_path=")[1]})
    try:
        async with holder.transaction():
            await holder.execute("SELECT seq FROM search_queue FOR UPDATE")
            yield
    finally:
        await holder.close()


async def test_under_overload_every_face_answers_at_once_with_unindexed_and_resolution_right(tmp_path: Path) -> None:
    backlog = search_indexer.READ_CATCH_UP + 100
    async with postgres_schema() as url, held_backlog(url, backlog):
        server = start_server(tmp_path / "unused.db", tmp_path, env_for(url))
        try:
            async with Client(server.mcp_url) as client:
                failed, paid = invoice_pair("burst@example.com", "burst plan")
                await told_of(client, server.webhook_url, failed, paid)
                assert await agent_reads(client, failed, paid, "burst") == backlog + 2
            async with Client(stdio_agent(url, tmp_path)) as client:
                failed, paid = invoice_pair("burst2@example.com", "surge plan")
                await told_of(client, server.webhook_url, failed, paid)
                assert await agent_reads(client, failed, paid, "surge") == backlog + 4
            failed, paid = invoice_pair("burst3@example.com", "spike plan")
            await post(server.webhook_url, failed, paid)
            assert cli_reads(url, tmp_path, failed, paid, "spike") == backlog + 6
        finally:
            stop_server(server)


async def test_a_failure_that_arrives_already_resolved_is_pushed_as_resolved(server: Server, tmp_path: Path) -> None:
    """The channel's wake-up carries what classify would answer: a late failure whose invoice was paid already."""
    failed, paid = invoice_pair("late@example.com", "late failure")
    async with channel_session(tmp_path, "--channel") as (_, hears):
        await post(server.webhook_url, paid, failed)  # out of order: the paid one first
        announced = {heard.meta["event_id"]: heard for heard in (await hears.next(), await hears.next())}
    pushed = announced[failed["id"]]
    assert (pushed.meta["priority"], pushed.meta["category"]) == ("low", "payment_failed")
    assert f"resolved by {paid['id']}" in pushed.content and "ack_event" in pushed.content
    assert "create_ticket" not in pushed.content


async def test_the_dashboard_finds_a_delivery_at_once(settings: Any) -> None:
    async with open_inbox(settings) as opened:
        transport = httpx.ASGITransport(app=create_app(opened))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as ui:
            failed, paid = invoice_pair("page@example.com", "dashboard plan")
            for event in (failed, paid):
                payload = encode(event)
                assert (await ui.post("/webhooks/stripe", content=payload, headers=signed_headers(payload))).is_success
            found = await ui.get("/ui/", params={"status": "all", "email": "page@example.com"})
            assert failed["id"] in found.text and paid["id"] in found.text
            assert "not in the search index" not in found.text
            page = await ui.get(f"/ui/events/{failed['id']}")
            assert paid["id"] in page.text  # its timeline, and what resolved it
