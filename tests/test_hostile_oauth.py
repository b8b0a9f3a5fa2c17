"""The OAuth authorization server under attack (issue #22, items 3, 4, 8, 10 and the OAuth part of 14): each attack
performed against a real `serve`, failing safely; the defences' parts checked in-process."""

from __future__ import annotations

import ipaddress
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpcore
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from stripe_inbox import Settings, load_settings
from stripe_inbox.auth import client_documents
from stripe_inbox.auth.client_documents import ClientDocuments
from stripe_inbox.auth.public_network import IPAddress, PolicedBackend, is_public
from stripe_inbox.auth.rate_limit import RateLimiter
from stripe_inbox.inbox import open_inbox
from stripe_inbox.mcp.server import create_mcp_server
from stripe_inbox.stores import Store
from stripe_inbox.upkeep import UNUSED_OAUTH_CLIENT_SECONDS, Upkeep
from stripe_inbox.web.app import create_app

from .test_oauth import (
    ACCESS_TOKEN,
    CALLBACK,
    Inbox,
    LoopbackWeb,
    authorize,
    chromium,
    consent,
    deliver,
    exchange,
    inbox,
    pkce,
    read_form,
    register,
    web,
)
from .test_oauth_store import pair, store

__all__ = ["inbox", "store", "web"]  # fixtures this module uses from others
pytestmark = pytest.mark.anyio


def error_page(response: httpx.Response, error: str) -> str:
    """An authorization error shown to the person as a page: never a redirect, never a server error."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert f'<code id="error-code">{error}</code>' in response.text
    return response.text


# -- 3: registration is small, rate-limited per address, and forgotten when unused ---------------------------


def test_registration_refuses_large_bodies_and_floods_from_one_address(inbox: Inbox) -> None:
    padding = "x" * (3_900_000)
    huge = httpx.post(inbox.url + "/register", json={"redirect_uris": [CALLBACK], "client_name": padding})
    assert huge.status_code == 413
    assert huge.json() == {
        "error": "invalid_client_metadata",
        "error_description": "client metadata is limited to 16384 bytes",
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds on the bytes that arrive
        yield b'{"redirect_uris": ["' + CALLBACK.encode() + b'"], "client_name": "'
        yield from (b"y" * 4096 for _ in range(8))
        yield b'"}'

    streamed = httpx.post(inbox.url + "/register", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    with sqlite3.connect(inbox.db) as database:
        (largest,) = database.execute("SELECT coalesce(max(length(metadata)), 0) FROM oauth_clients").fetchone()
    assert largest < 16 * 1024

    # Another loopback address is another client address: its flood does not stop 127.0.0.1 from registering.
    flooder = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with flooder:
        answers = [
            flooder.post(inbox.url + "/register", json={"redirect_uris": [CALLBACK]}).status_code for _ in range(21)
        ]
        refused = flooder.post(inbox.url + "/register", json={"redirect_uris": [CALLBACK]})
    assert answers[:20] == [201] * 20 and answers[20] == 429
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "too many registrations" in refused.json()["error_description"]
    register(inbox)  # 127.0.0.1 still may


def test_the_rate_limiter_refills_with_time() -> None:
    now = [1000.0]
    limiter = RateLimiter(per_minute=10, burst=2, clock=lambda: now[0])
    assert limiter.allow("a") is None and limiter.allow("a") is None
    assert limiter.allow("a") == pytest.approx(6.0)
    assert limiter.allow("b") is None  # per key
    now[0] += 6.0
    assert limiter.wait("a") is None  # spends nothing
    assert limiter.allow("a") is None
    assert limiter.wait("a") == pytest.approx(6.0)


async def test_store_prunes_registrations_that_never_got_a_token(store: Store) -> None:
    await store.add_oauth_client("old-unused", "{}", 1000.0)
    await store.add_oauth_client("old-used", "{}", 1000.0)
    await store.add_oauth_client("new-unused", "{}", 90_000.0)
    await store.add_oauth_code("code", "old-used", "grant-1", "{}", 2000.0)
    assert await store.redeem_oauth_code("code", 1500.0, pair("grant-1", 1500.0, client_id="old-used"))

    assert await store.prune_oauth_clients(registered_before=50_000.0) == 1
    assert await store.oauth_client("old-unused") is None
    assert await store.oauth_client("old-used") == "{}"
    assert await store.oauth_client("new-unused") == "{}"


@pytest.fixture
def oauth_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("STRIPE_INBOX_DB", "STRIPE_INBOX_MCP_TOKEN", "STRIPE_INBOX_TOKEN", "STRIPE_INBOX_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return load_settings(
        db=str(tmp_path / "inbox.db"),
        webhook_secret="whsec_" + "s" * 32,
        mcp_token=ACCESS_TOKEN,
        public_url="http://127.0.0.1:8000",
    )


async def test_upkeep_forgets_registrations_unused_for_a_day(oauth_settings: Settings) -> None:
    async with open_inbox(oauth_settings) as opened:
        now = time.time()
        await opened.store.add_oauth_client("yesterday", "{}", now - UNUSED_OAUTH_CLIENT_SECONDS - 60)
        await opened.store.add_oauth_client("an-hour-ago", "{}", now - 3600)
        assert await Upkeep(opened).forget_unused_oauth_clients(now=now) == 1
        assert await opened.store.oauth_client("yesterday") is None
        assert await opened.store.oauth_client("an-hour-ago") is not None
        # A day later, with the clock moved rather than waited for, the other goes too.
        assert await Upkeep(opened).forget_unused_oauth_clients(now=now + UNUSED_OAUTH_CLIENT_SECONDS) == 1


# -- 4: client ID metadata documents: public addresses only, one deadline, failures cached ------------------


class Listener:
    """A TCP port that nothing accepts on: a connection attempt would still complete in its backlog, where
    `connected()` finds it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.setblocking(False)
        self.port = int(self.socket.getsockname()[1])

    def connected(self) -> bool:
        try:
            connection, _ = self.socket.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True


@pytest.fixture
def listener() -> Iterator[Listener]:
    opened = Listener()
    yield opened
    opened.socket.close()


def test_client_id_documents_on_internal_addresses_are_never_fetched(inbox: Inbox, listener: Listener) -> None:
    _, challenge = pkce()
    internal = [
        f"https://127.0.0.1:{listener.port}/client.json",
        f"https://localhost:{listener.port}/client.json",
        f"https://[::ffff:127.0.0.1]:{listener.port}/client.json",
        "https://169.254.169.254/latest/meta-data/client.json",  # the cloud's metadata service
        "https://10.0.0.1/client.json",
        "https://[fd00::1]/client.json",
        f"http://127.0.0.1:{listener.port}/client.json",  # plain HTTP: not even on loopback
    ]
    for client_id in internal:
        started = time.monotonic()
        page = error_page(authorize(inbox, client_id, challenge), "invalid_request")
        assert "not found" in page
        assert time.monotonic() - started < client_documents.DEADLINE_SECONDS, client_id
    assert not listener.connected()


def test_malformed_client_ids_are_a_400_page(inbox: Inbox) -> None:
    _, challenge = pkce()
    for client_id in ("https://[::1/client.json", "https://host.example:99999/c.json", "https://exa mple.com/c"):
        error_page(authorize(inbox, client_id, challenge), "invalid_request")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fd12:3456::1",
        "::ffff:8.8.8.8",
        "2002:7f00:1::1",
        "ff02::1",
        "::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


async def test_the_address_actually_connected_to_is_checked(listener: Listener) -> None:
    """A name that passes when resolved and then points elsewhere (DNS rebinding) is caught on the socket."""
    checked: list[IPAddress] = []

    def first_answer_only(address: IPAddress) -> bool:
        checked.append(address)
        return len(checked) == 1

    backend = PolicedBackend(first_answer_only)
    with pytest.raises(httpcore.ConnectError, match=re.escape("connected to 127.0.0.1, which is not a public address")):
        await backend.connect_tcp("127.0.0.1", listener.port, timeout=5)
    assert len(checked) == 2


def loopback_too(address: IPAddress) -> bool:
    """The tests' seam: their documents are served from loopback."""
    return address.is_loopback or is_public(address)


def loopback_documents() -> ClientDocuments:
    return ClientDocuments(permit=loopback_too, schemes=("http", "https"))


class Drip:
    """A server that answers 200 and then sends its body a byte at a time, for ever: each read succeeds, so only
    a deadline for the whole fetch ends it."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/client.json"
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                connection.recv(65536)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
                )
                try:
                    while not self.stop.wait(0.05):  # the attacker's pace, not a wait of the test's
                        connection.sendall(b" ")
                except OSError:
                    continue


@pytest.fixture
def drip() -> Iterator[Drip]:
    running = Drip()
    running.thread.start()
    yield running
    running.stop.set()
    socket.create_connection(running.server.getsockname(), timeout=5).close()  # wakes an accept() that waits
    running.thread.join(timeout=10)
    running.server.close()


async def test_a_slow_drip_document_is_cut_at_the_deadline_and_the_failure_cached(
    drip: Drip, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_documents, "DEADLINE_SECONDS", 1.0)
    documents = loopback_documents()
    started = time.monotonic()
    assert await documents.client(drip.url) is None
    assert 1.0 <= time.monotonic() - started < 4.0
    assert await documents.client(drip.url) is None  # from the cache: no second connection
    assert drip.connections == 1


async def test_failures_are_cached(web: LoopbackWeb) -> None:
    documents = loopback_documents()
    missing = web.url + "/missing.json"
    assert await documents.client(missing) is None
    assert await documents.client(missing) is None
    assert web.asked == ["/missing.json"]


async def test_a_client_id_metadata_document_stands_in_for_registration(
    oauth_settings: Settings, web: LoopbackWeb
) -> None:
    """The legitimate path, in-process so that the tests' seam can let the provider fetch from loopback."""
    client_id = web.url + "/client.json"
    web.put("/client.json", {"client_id": client_id, "client_name": "Document client", "redirect_uris": [CALLBACK]})
    impostor = web.put("/impostor.json", {"client_id": client_id, "redirect_uris": [CALLBACK]})
    verifier, challenge = pkce()
    async with open_inbox(oauth_settings) as opened:
        server = create_mcp_server(opened)
        assert server.auth_provider is not None
        server.auth_provider.documents = loopback_documents()  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=create_app(opened, server))
        async with (
            server.session_manager.run(),
            server.running(),
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as browser,
        ):
            query = authorization_query(client_id, challenge)
            authorized = await browser.get(f"/authorize?{urlencode(query)}")
            assert authorized.status_code == 302, authorized.text
            page = await browser.get(authorized.headers["location"])
            assert "Document client" in page.text and client_id in page.text
            code = await sign_in_and_allow(browser, page)
            token = await browser.post(
                "/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "client_id": client_id,
                    "redirect_uri": CALLBACK,
                    "code_verifier": verifier,
                },
            )
            assert token.status_code == 200, token.text
            refused = await browser.get(f"/authorize?{urlencode(authorization_query(impostor, challenge))}")
            error_page(refused, "invalid_request")


def authorization_query(client_id: str, challenge: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st4te",
        **extra,
    }


async def sign_in_and_allow(browser: httpx.AsyncClient, page: httpx.Response) -> str:
    form = read_form(page.text)
    signed_in = await browser.post(form.action, data={**form.fields, "intent": "sign_in", "token": ACCESS_TOKEN})
    assert signed_in.status_code == 303, signed_in.text
    form = read_form((await browser.get(signed_in.headers["location"])).text)
    allowed = await browser.post(form.action, data={**form.fields, "decision": "allow"})
    assert allowed.status_code == 303, allowed.text
    return parse_qs(urlsplit(allowed.headers["location"]).query)["code"][0]


# -- 8: no open redirect from /authorize --------------------------------------------------------------------


def test_authorize_errors_never_redirect_to_a_registered_evil_uri(inbox: Inbox) -> None:
    evil = "https://evil.example/landing"
    client_id = register(inbox, redirect_uris=[evil])
    _, challenge = pkce()
    attacks: list[tuple[dict[str, str], str]] = [
        ({"scope": "inbox:admin"}, "invalid_scope"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"resource": "https://elsewhere.example/mcp"}, "invalid_target"),
    ]
    for change, error in attacks:
        query = {
            k: v for k, v in {**authorization_query(client_id, challenge, redirect_uri=evil), **change}.items() if v
        }
        answer = httpx.get(f"{inbox.url}/authorize?{urlencode(query)}")
        page = error_page(answer, error)
        assert "evil.example" not in page
    # A valid request goes to the consent page, where the operator sees the redirect URI before any redirect.
    valid = httpx.get(
        f"{inbox.url}/authorize?{urlencode(authorization_query(client_id, challenge, redirect_uri=evil))}"
    )
    assert valid.status_code == 302 and valid.headers["location"].startswith(inbox.url + "/ui/oauth/consent?")


# -- 10: the consent page: Enter in the sign-in field signs in, and decides nothing ---------------------------


def test_pressing_enter_in_the_sign_in_field_grants_nothing(inbox: Inbox, web: LoopbackWeb) -> None:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    callback = web.url + "/callback"
    client_id = register(inbox, client_name="Pressing Enter", redirect_uris=[callback])
    _, challenge = pkce()
    query = authorization_query(client_id, challenge, redirect_uri=callback, scope="inbox:read inbox:write")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page()
            page.goto(f"{inbox.url}/authorize?{urlencode(query)}")
            token_field = page.get_by_label("Sign in with the access token")
            token_field.fill(ACCESS_TOKEN)
            token_field.press("Enter")
            deny = page.get_by_role("button", name="Deny")
            deny.wait_for()
            # Signed in, and still asked: nothing reached the client.
            assert page.url.startswith(inbox.url + "/ui/oauth/consent?")
            assert page.get_by_label("Sign in with the access token").count() == 0
            buttons = page.locator("#decide button").all_inner_texts()
            assert buttons == ["Deny", "Allow read only", "Allow"]
            page.keyboard.press("Enter")  # nothing focused that submits
            assert page.url.startswith(inbox.url + "/ui/oauth/consent?")
        finally:
            browser.close()
    assert not [path for path in web.asked if path.startswith("/callback")]


def test_a_dashboard_session_skips_the_consent_sign_in(inbox: Inbox) -> None:
    client_id = register(inbox)
    verifier, challenge = pkce()
    with httpx.Client(base_url=inbox.url) as browser:
        sign_in_page = browser.get("/ui/sign-in").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', sign_in_page)
        assert csrf is not None
        signed_in = browser.post("/ui/sign-in", data={"csrf_token": csrf[1], "next": "/ui/", "token": ACCESS_TOKEN})
        assert signed_in.status_code == 303, signed_in.text
        authorized = browser.get(f"/authorize?{urlencode(authorization_query(client_id, challenge))}")
        page = browser.get(authorized.headers["location"])
        form = read_form(page.text)
        assert 'type="password"' not in page.text and form.buttons == ["deny", "allow_read", "allow"]
        allowed = browser.post(form.action, data={**form.fields, "decision": "allow"})
    assert allowed.status_code == 303
    code = parse_qs(urlsplit(allowed.headers["location"]).query)["code"][0]
    assert exchange(inbox, client_id, code, verifier).status_code == 200


# -- 14: with OAuth, an agent's claims belong to its client ---------------------------------------------------


def client_token(inbox: Inbox, name: str) -> str:
    client_id = register(inbox, client_name=name)
    verifier, challenge = pkce()
    code = consent(inbox, authorize(inbox, client_id, challenge))
    tokens = exchange(inbox, client_id, code, verifier)
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["access_token"])


async def test_one_oauth_client_cannot_ack_what_another_claimed(inbox: Inbox) -> None:
    first, second = client_token(inbox, "first"), client_token(inbox, "second")
    event_id = deliver(inbox)

    async def call(token: str, tool: str, arguments: dict[str, Any]) -> Any:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(streamable_http_client(inbox.server.mcp_url, http_client=http), mode="legacy") as session,
        ):
            return await session.call_tool(tool, arguments)

    claimed = await call(first, "claim_events", {"agent": "worker", "limit": 100})
    assert event_id in [event["id"] for event in claimed.structured_content["events"]]
    # The same agent name from another client is another agent.
    for arguments in ({"agent": "worker"}, {}):
        refused = await call(second, "ack_event", {"event_id": event_id, **arguments})
        assert refused.is_error, arguments
    stolen = await call(second, "claim_events", {"agent": "worker", "limit": 100})
    assert event_id not in [event["id"] for event in stolen.structured_content["events"]]
    acked = await call(first, "ack_event", {"event_id": event_id, "agent": "worker"})
    assert not acked.is_error, acked.content
    assert acked.structured_content["status"] == "acked"
    with sqlite3.connect(inbox.db) as database:
        (holder,) = database.execute(
            "SELECT actor FROM audit WHERE action = 'claim_events' AND event_id = ?", (event_id,)
        ).fetchone()
    assert holder.endswith("/worker") and holder != "worker"  # the claim was recorded under the client's name


def test_guessing_the_token_on_the_consent_page_is_throttled(inbox: Inbox) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3")) as guesser:
        registered = guesser.post(inbox.url + "/register", json={"redirect_uris": [CALLBACK]})
        _, challenge = pkce()
        query = authorization_query(registered.json()["client_id"], challenge)
        authorized = guesser.get(f"{inbox.url}/authorize?{urlencode(query)}")
        form = read_form(guesser.get(authorized.headers["location"]).text)
        sign_in = {**form.fields, "intent": "sign_in"}
        guesses = [guesser.post(inbox.url + form.action, data={**sign_in, "token": f"guess-{n}"}) for n in range(10)]
        assert [guess.status_code for guess in guesses] == [401] * 10
        throttled = guesser.post(inbox.url + form.action, data={**sign_in, "token": ACCESS_TOKEN})
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert "Too many wrong tokens" in throttled.text
    assert "stripe_inbox_session" not in throttled.headers.get("set-cookie", "")
