"""OAuth for remote MCP clients: the official `mcp` client's OAuth support against `serve` on loopback, from
discovery to revocation; the RFCs' answers to bad requests; client ID metadata documents; the consent page in a
browser."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from stripe_inbox import Settings, load_settings
from stripe_inbox.auth.scopes import READ, WRITE, required_scope
from stripe_inbox.errors import ConfigError
from stripe_inbox.mcp.tools import TOOL_INFO

from .conftest import Server, cli_env, encode, make_event, run_cli, signed_headers, start_server, stop_server

pytestmark = pytest.mark.anyio
ACCESS_TOKEN = "operator-access-token-" + "x" * 20
CALLBACK = "http://127.0.0.1:43123/callback"  # never reached: the handlers below read the redirect instead


@dataclass
class Inbox:
    server: Server
    db: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inbox]:
    """One `serve` for the module: each test registers clients of its own and looks only at their tokens."""
    directory = tmp_path_factory.mktemp("oauth")
    db = directory / "inbox.db"
    port = free_port()
    env = cli_env(db, STRIPE_INBOX_MCP_TOKEN=ACCESS_TOKEN, STRIPE_INBOX_PUBLIC_URL=f"http://127.0.0.1:{port}")
    server = start_server(db, directory, env, "--port", str(port))
    yield Inbox(server, db, env)
    stop_server(server)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- a person at the consent page, and the client's side of the redirect --------------------------


class FormReader(HTMLParser):
    """The consent form's fields, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.buttons: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = attributes["action"]
        elif tag == "input" and attributes.get("type") == "hidden":
            self.fields[attributes["name"]] = attributes["value"]
        elif tag == "button":
            self.buttons.append(attributes["value"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read_form(html: str) -> FormReader:
    reader = FormReader()
    reader.feed(html)
    return reader


@dataclass
class Operator:
    """Opens the authorization URL the client hands over, signs in with the access token and presses a button;
    then, as the client's callback, hands over what came back."""

    decision: str = "allow"
    token: str = ACCESS_TOKEN
    pages: list[str] = field(default_factory=list)
    result: AuthorizationCodeResult | None = None
    answered: dict[str, str] = field(default_factory=dict)

    async def redirect_handler(self, authorization_url: str) -> None:
        async with httpx.AsyncClient() as browser:
            consent = await browser.get(authorization_url, follow_redirects=True)
            assert consent.status_code == 200, consent.text
            assert consent.headers["x-frame-options"] == "DENY"
            self.pages.append(consent.text)
            form = read_form(consent.text)
            origin = {"Origin": f"{consent.url.scheme}://{consent.url.netloc.decode()}"}
            signed_in = await browser.post(
                str(consent.url.join(form.action)),
                data={**form.fields, "intent": "sign_in", "token": self.token},
                headers=origin,
            )
            assert signed_in.status_code == 303, signed_in.text
            decide = await browser.get(str(consent.url.join(signed_in.headers["location"])))
            form = read_form(decide.text)
            assert self.decision in form.buttons
            answer = await browser.post(
                str(consent.url.join(form.action)), data={**form.fields, "decision": self.decision}, headers=origin
            )
        assert answer.status_code == 303, answer.text
        location = urlsplit(answer.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
        self.answered = {name: values[0] for name, values in parse_qs(location.query).items()}
        if "code" in self.answered:
            self.result = AuthorizationCodeResult(
                code=self.answered["code"], state=self.answered.get("state"), iss=self.answered.get("iss")
            )

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.result is not None, f"no code came back: {self.answered}"
        return self.result


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def oauth_client(inbox: Inbox, operator: Operator, storage: MemoryStorage, name: str) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=inbox.server.mcp_url,
        client_metadata=OAuthClientMetadata(client_name=name, redirect_uris=[CALLBACK]),  # type: ignore[list-item]
        storage=storage,
        redirect_handler=operator.redirect_handler,
        callback_handler=operator.callback_handler,
    )


def deliver(inbox: Inbox) -> str:
    event = make_event()
    payload = encode(event)
    response = httpx.post(inbox.server.webhook_url, content=payload, headers=signed_headers(payload))
    assert response.status_code == 200, response.text
    return str(event["id"])


def mcp_status(inbox: Inbox, bearer: str) -> int:
    """What /mcp answers an initialize carrying this bearer token."""
    response = httpx.post(
        inbox.server.mcp_url,
        headers={
            "Authorization": f"Bearer {bearer}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        },
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "probe", "version": "1"},
            },
        },
    )
    return response.status_code


def tokens_of(inbox: Inbox, client_name: str) -> list[str]:
    """The lines of `tokens list` about one client's tokens."""
    listed = run_cli("tokens", "list", env=inbox.env, cwd=inbox.db.parent).stdout
    return [line for line in listed.splitlines() if client_name in line]


def stored_bytes(inbox: Inbox) -> bytes:
    return b"".join(path.read_bytes() for path in inbox.db.parent.glob(inbox.db.name + "*"))


# -- configuration and scopes ------------------------------------------------------------------------


def test_public_url_is_an_https_origin_and_needs_the_access_token(settings: Settings) -> None:
    db = settings.db
    assert load_settings(db=db, mcp_token=ACCESS_TOKEN, public_url="https://inbox.example.com/").public_url == (
        "https://inbox.example.com"
    )
    assert (
        load_settings(db=db, mcp_token=ACCESS_TOKEN, public_url="http://127.0.0.1:8000").public_url
        == "http://127.0.0.1:8000"
    )
    for wrong, complaint in [
        ("http://inbox.example.com", "must be https://"),
        ("https://inbox.example.com/inbox", "origin alone"),
        ("inbox.example.com", "absolute URL"),
    ]:
        with pytest.raises(ConfigError, match=complaint):
            load_settings(db=db, mcp_token=ACCESS_TOKEN, public_url=wrong)
    with pytest.raises(ConfigError, match=r"public_url turns on OAuth.*set it too"):
        load_settings(db=db, public_url="https://inbox.example.com")


def test_read_only_tools_need_inbox_read_and_the_rest_inbox_write() -> None:
    needs = {name: required_scope(info.annotations) for name, info in TOOL_INFO.items()}
    assert needs["list_events"] == needs["get_event"] == needs["get_stats"] == READ
    assert needs["ack_event"] == needs["claim_events"] == WRITE
    assert all((scope == READ) == bool(TOOL_INFO[name].annotations.read_only_hint) for name, scope in needs.items())
    assert required_scope(None) == WRITE


# -- the whole flow with the official client ------------------------------------------------------


async def test_the_official_client_signs_in_calls_tools_refreshes_and_is_revoked(inbox: Inbox) -> None:
    unauthorized = httpx.post(inbox.server.mcp_url, json={})
    assert unauthorized.status_code == 401
    challenge = unauthorized.headers["www-authenticate"]
    assert f'resource_metadata="{inbox.url}/.well-known/oauth-protected-resource/mcp"' in challenge
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        resource = httpx.get(inbox.url + path).json()
        assert resource["resource"] == inbox.server.mcp_url
        assert resource["authorization_servers"] == [inbox.url]
        assert resource["scopes_supported"] == ["inbox:read", "inbox:write"]
    metadata = httpx.get(inbox.url + "/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == inbox.url
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["client_id_metadata_document_supported"] is True
    assert metadata["grant_types_supported"] == ["authorization_code", "refresh_token"]

    event_id = deliver(inbox)
    operator, storage = Operator(), MemoryStorage()
    auth = oauth_client(inbox, operator, storage, "Claude test agent")
    async with (
        httpx2.AsyncClient(auth=auth) as http,
        Client(streamable_http_client(inbox.server.mcp_url, http_client=http), mode="legacy") as session,
    ):
        assert "Claude test agent" in operator.pages[0]
        assert "inbox:write" in operator.pages[0]
        assert storage.client_info is not None and storage.client_info.token_endpoint_auth_method == "none"
        assert storage.tokens is not None and storage.tokens.scope == "inbox:read inbox:write"
        first = storage.tokens
        assert (await session.call_tool("get_stats", {})).structured_content["total"] >= 1
        acked = await session.call_tool("ack_event", {"event_id": event_id, "outcome": "handled"})
        assert not acked.is_error, acked.content

        auth.context.token_expiry_time = 0.5  # long past: the next request refreshes first
        detail = await session.call_tool("get_event", {"event_id": event_id})
        assert detail.structured_content["state"]["status"] == "acked"
        refreshed = storage.tokens
        assert refreshed.access_token != first.access_token and refreshed.refresh_token != first.refresh_token
        assert len(operator.pages) == 1  # refreshing asked nobody

    assert mcp_status(inbox, first.access_token) == 401  # rotated out with its refresh token
    assert mcp_status(inbox, refreshed.access_token) == 200

    listed = tokens_of(inbox, "Claude test agent")
    assert all("inbox:read inbox:write" in line and "usable" in line for line in listed)
    assert len(listed) == 2  # the live access and refresh tokens; the rotated ones are not listed

    revoked = httpx.post(
        str(metadata["revocation_endpoint"]),
        data={"token": refreshed.refresh_token, "client_id": storage.client_info.client_id},
    )
    assert revoked.status_code == 200
    assert mcp_status(inbox, refreshed.access_token) == 401
    assert tokens_of(inbox, "Claude test agent") == []

    # Nothing secret in clear: not in the database, not in what `serve` printed.
    database, log = stored_bytes(inbox), "".join(inbox.server.output)
    for secret in (first.access_token, first.refresh_token, refreshed.access_token, ACCESS_TOKEN):
        assert secret and secret.encode() not in database and secret not in log
    assert operator.result is not None and operator.result.code not in log


async def test_a_read_only_grant_cannot_ack(inbox: Inbox) -> None:
    event_id = deliver(inbox)
    operator, storage = Operator(decision="allow_read"), MemoryStorage()
    async with (
        httpx2.AsyncClient(auth=oauth_client(inbox, operator, storage, "reader")) as http,
        Client(streamable_http_client(inbox.server.mcp_url, http_client=http), mode="legacy") as session,
    ):
        assert storage.tokens is not None and storage.tokens.scope == "inbox:read"
        listed = await session.call_tool("list_events", {})
        assert not listed.is_error
        refused = await session.call_tool("ack_event", {"event_id": event_id, "outcome": "handled"})
        assert refused.is_error
        assert refused.content[0].text.startswith("insufficient_scope: ack_event needs the inbox:write scope")
        detail = await session.call_tool("get_event", {"event_id": event_id})
        assert detail.structured_content["state"]["status"] == "pending"


async def test_the_static_token_keeps_working_beside_oauth(inbox: Inbox) -> None:
    event_id = deliver(inbox)
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {ACCESS_TOKEN}"}) as http,
        Client(streamable_http_client(inbox.server.mcp_url, http_client=http), mode="legacy") as session,
    ):
        acked = await session.call_tool("ack_event", {"event_id": event_id, "outcome": "handled"})
        assert not acked.is_error, acked.content
    assert mcp_status(inbox, "sio_at_" + "guess" * 8) == 401


# -- the authorization server by hand: each bad request gets the RFC's answer and no token ---------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def register(inbox: Inbox, **metadata: Any) -> str:
    response = httpx.post(
        inbox.url + "/register", json={"client_name": "by hand", "redirect_uris": [CALLBACK], **metadata}
    )
    assert response.status_code == 201, response.text
    assert "client_secret" not in response.json()
    return str(response.json()["client_id"])


def authorize(inbox: Inbox, client_id: str, challenge: str, **extra: str) -> httpx.Response:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st4te",
        "resource": inbox.server.mcp_url,
        **extra,
    }
    return httpx.get(f"{inbox.url}/authorize?{urlencode({k: v for k, v in query.items() if v})}")


def error_in_redirect(response: httpx.Response) -> dict[str, str]:
    assert response.status_code in (302, 303), response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    return {name: values[0] for name, values in parse_qs(location.query).items()}


def consent(inbox: Inbox, authorized: httpx.Response, decision: str = "allow", token: str = ACCESS_TOKEN) -> str:
    """Answer the consent page the authorization sent to; the code that comes back."""
    assert authorized.status_code == 302, authorized.text
    with httpx.Client() as browser:
        page = browser.get(authorized.headers["location"])
        answer = sign_in_and_decide(browser, page, decision, token)
    assert answer.status_code == 303, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def sign_in_and_decide(
    browser: httpx.Client, page: httpx.Response, decision: str, token: str = ACCESS_TOKEN
) -> httpx.Response:
    """As a person at the consent page: sign in with the token, then press a button on the page that follows."""
    form = read_form(page.text)
    target = str(page.url.join(form.action))
    signed_in = browser.post(target, data={**form.fields, "intent": "sign_in", "token": token})
    assert signed_in.status_code == 303, signed_in.text
    form = read_form(browser.get(str(page.url.join(signed_in.headers["location"]))).text)
    assert decision in form.buttons and "sign_in" not in form.buttons
    return browser.post(target, data={**form.fields, "decision": decision})


def error_page(response: httpx.Response, error: str) -> None:
    """An authorization error shown to the person, never redirected to the client."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert f'<code id="error-code">{error}</code>' in response.text


def exchange(inbox: Inbox, client_id: str, code: str, verifier: str | None, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "client_id": client_id, "redirect_uri": CALLBACK}
    if verifier is not None:
        form["code_verifier"] = verifier
    return httpx.post(inbox.url + "/token", data={**form, **extra})


def refresh(inbox: Inbox, client_id: str, refresh_token: str) -> httpx.Response:
    return httpx.post(
        inbox.url + "/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id},
    )


def rfc_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert "access_token" not in body


def sql(inbox: Inbox, statement: str, *parameters: str) -> None:
    """Age what the server stored, instead of waiting for it to age."""
    with sqlite3.connect(inbox.db) as database:
        database.execute(statement, parameters)


def test_authorization_requests_are_checked_before_anyone_is_asked(inbox: Inbox) -> None:
    client_id = register(inbox)
    _, challenge = pkce()

    error_page(authorize(inbox, "no-such-client", challenge), "invalid_request")
    # A redirect URI the client did not register is never redirected to; nor is a registered one before the
    # operator has seen it on the consent page: errors are a page (tests/test_hostile_oauth.py has the attack).
    error_page(authorize(inbox, client_id, challenge, redirect_uri="http://127.0.0.1:9/elsewhere"), "invalid_request")
    error_page(authorize(inbox, client_id, ""), "invalid_request")  # no PKCE
    error_page(authorize(inbox, client_id, challenge, code_challenge_method="plain"), "invalid_request")
    error_page(authorize(inbox, client_id, challenge, scope="inbox:admin"), "invalid_scope")
    error_page(authorize(inbox, client_id, challenge, resource="https://elsewhere.example/mcp"), "invalid_target")
    denied = httpx.post(inbox.url + "/register", json={"redirect_uris": ["http://evil.example/cb"]})
    rfc_error(denied, 400, "invalid_redirect_uri")

    # The operator says no: the client hears access_denied, with its state.
    authorized = authorize(inbox, client_id, challenge)
    with httpx.Client() as browser:
        form = read_form(browser.get(authorized.headers["location"]).text)
        answer = browser.post(inbox.url + form.action, data={**form.fields, "decision": "deny"})
    assert error_in_redirect(answer) == {
        "error": "access_denied",
        "state": "st4te",
        "iss": inbox.url,
    }


def test_the_consent_page_wants_the_access_token_and_its_own_form(inbox: Inbox) -> None:
    client_id = register(inbox)
    _, challenge = pkce()
    authorized = authorize(inbox, client_id, challenge)
    with httpx.Client() as browser:
        form = read_form(browser.get(authorized.headers["location"]).text)
        sign_in = {**form.fields, "intent": "sign_in"}
        wrong = browser.post(inbox.url + form.action, data={**sign_in, "token": "guess"})
        assert wrong.status_code == 401 and "That is not the access token" in wrong.text and "guess" not in wrong.text
        forged = browser.post(inbox.url + form.action, data={**sign_in, "csrf": "x" * 43, "token": ACCESS_TOKEN})
        assert forged.status_code == 403
        cross_site = browser.post(
            inbox.url + form.action, data={**sign_in, "token": ACCESS_TOKEN}, headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403
        # The token sent along with a decision is no sign-in: signing in and deciding are separate acts.
        together = browser.post(
            inbox.url + form.action, data={**form.fields, "token": ACCESS_TOKEN, "decision": "allow"}
        )
        assert together.status_code == 401 and "Sign in first" in together.text
        assert browser.post(inbox.url + form.action, data={**sign_in, "token": ACCESS_TOKEN}).status_code == 303
        allowed = browser.post(inbox.url + form.action, data={**form.fields, "decision": "allow"})
        assert allowed.status_code == 303
        again = browser.post(inbox.url + form.action, data={**form.fields, "decision": "allow"})
        assert again.status_code == 400  # one request, one answer


def test_codes_need_the_pkce_verifier_and_work_once(inbox: Inbox) -> None:
    client_id = register(inbox)
    other_client = register(inbox)
    verifier, challenge = pkce()
    code = consent(inbox, authorize(inbox, client_id, challenge))

    rfc_error(exchange(inbox, client_id, code, None), 400, "invalid_request")
    rfc_error(exchange(inbox, client_id, code, pkce()[0]), 400, "invalid_grant")
    rfc_error(
        exchange(inbox, client_id, code, verifier, redirect_uri="http://127.0.0.1:9/other"), 400, "invalid_request"
    )
    rfc_error(exchange(inbox, other_client, code, verifier), 400, "invalid_grant")
    rfc_error(exchange(inbox, "no-such-client", code, verifier), 401, "invalid_client")

    issued = exchange(inbox, client_id, code, verifier)
    assert issued.status_code == 200, issued.text
    tokens = issued.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "inbox:read inbox:write"
    assert mcp_status(inbox, tokens["access_token"]) == 200

    # A replayed code gets nothing, and what it bought the first time is revoked (RFC 6749 §4.1.2).
    rfc_error(exchange(inbox, client_id, code, verifier), 400, "invalid_grant")
    assert mcp_status(inbox, tokens["access_token"]) == 401
    rfc_error(refresh(inbox, client_id, tokens["refresh_token"]), 400, "invalid_grant")

    # An expired code gets nothing either.
    verifier, challenge = pkce()
    late = consent(inbox, authorize(inbox, client_id, challenge))
    sql(inbox, "UPDATE oauth_codes SET expires_at = 0 WHERE client_id = ?", client_id)
    rfc_error(exchange(inbox, client_id, late, verifier), 400, "invalid_grant")


def test_refresh_tokens_rotate_and_a_reused_one_ends_the_grant(inbox: Inbox) -> None:
    client_id = register(inbox)
    verifier, challenge = pkce()
    first = exchange(inbox, client_id, consent(inbox, authorize(inbox, client_id, challenge)), verifier).json()

    second = refresh(inbox, client_id, first["refresh_token"])
    assert second.status_code == 200, second.text
    second_tokens = second.json()
    assert second_tokens["refresh_token"] != first["refresh_token"]
    assert mcp_status(inbox, second_tokens["access_token"]) == 200

    # The first refresh token again: someone else holds a copy, so the whole grant ends.
    rfc_error(refresh(inbox, client_id, first["refresh_token"]), 400, "invalid_grant")
    assert mcp_status(inbox, second_tokens["access_token"]) == 401
    rfc_error(refresh(inbox, client_id, second_tokens["refresh_token"]), 400, "invalid_grant")


def test_expired_and_revoked_tokens_are_refused(inbox: Inbox) -> None:
    client_id = register(inbox)
    verifier, challenge = pkce()
    tokens = exchange(inbox, client_id, consent(inbox, authorize(inbox, client_id, challenge)), verifier).json()

    sql(inbox, "UPDATE oauth_tokens SET expires_at = 0 WHERE kind = 'access' AND client_id = ?", client_id)
    assert mcp_status(inbox, tokens["access_token"]) == 401
    sql(inbox, "UPDATE oauth_tokens SET expires_at = 0 WHERE kind = 'refresh' AND client_id = ?", client_id)
    rfc_error(refresh(inbox, client_id, tokens["refresh_token"]), 400, "invalid_grant")

    verifier, challenge = pkce()
    tokens = exchange(inbox, client_id, consent(inbox, authorize(inbox, client_id, challenge)), verifier).json()
    every = json.loads(run_cli("tokens", "list", "--json", env=inbox.env, cwd=inbox.db.parent).stdout)
    listed = [token for token in every if token["client_id"] == client_id]
    assert sorted(token["kind"] for token in listed) == ["access", "refresh"]
    assert all(
        token["client_name"] == "by hand" and token["scopes"] == ["inbox:read", "inbox:write"] for token in listed
    )
    printed = run_cli("tokens", "revoke", listed[0]["id"], env=inbox.env, cwd=inbox.db.parent).stdout
    assert printed.startswith("revoked 2 tokens")
    assert mcp_status(inbox, tokens["access_token"]) == 401
    rfc_error(refresh(inbox, client_id, tokens["refresh_token"]), 400, "invalid_grant")
    unknown = run_cli("tokens", "revoke", "tok_000000000000", env=inbox.env, cwd=inbox.db.parent, check=False)
    assert unknown.returncode != 0 and "no OAuth token" in unknown.stderr


# -- client ID metadata documents ------------------------------------------------------------------


class LoopbackWeb:
    """A web server on loopback: serves the JSON documents a test puts at its paths, and records what it was asked
    for (a browser arriving at a client's redirect URI)."""

    def __init__(self) -> None:
        self.documents: dict[str, bytes] = {}
        self.asked: list[str] = []
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                web.asked.append(self.path)
                body = web.documents.get(urlsplit(self.path).path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def put(self, path: str, document: dict[str, Any]) -> str:
        self.documents[path] = json.dumps(document).encode()
        return self.url + path


@pytest.fixture
def web() -> Iterator[LoopbackWeb]:
    running = LoopbackWeb()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()
    running.thread.join(timeout=10)


# -- the consent page in a browser -------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser test")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def test_the_consent_page_in_a_browser(inbox: Inbox, web: LoopbackWeb) -> None:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    callback = web.url + "/callback"
    client_id = register(inbox, client_name="Cursor on a laptop", redirect_uris=[callback])
    verifier, challenge = pkce()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": callback,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "from-the-browser",
        "scope": "inbox:read inbox:write",
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page()
            page.goto(f"{inbox.url}/authorize?{urlencode(query)}")
            assert page.title() == "Allow Cursor on a laptop? · stripe-inbox"
            scopes = page.locator("#scopes li").all_inner_texts()
            assert [scope.split(": ")[0] for scope in scopes] == ["inbox:read", "inbox:write"]
            page.get_by_label("Sign in with the access token").fill("not-the-token")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("alert").wait_for()
            assert page.get_by_role("alert").inner_text() == "That is not the access token."
            assert page.get_by_label("Sign in with the access token").input_value() == ""

            page.get_by_label("Sign in with the access token").fill(ACCESS_TOKEN)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Allow read only").wait_for()
            with page.expect_navigation(url=callback + "*"):
                page.get_by_role("button", name="Allow read only").click()
        finally:
            browser.close()

    (arrived,) = [path for path in web.asked if path.startswith("/callback")]  # beside the favicon
    answer = {name: values[0] for name, values in parse_qs(urlsplit(arrived).query).items()}
    assert (answer["state"], answer["iss"]) == ("from-the-browser", inbox.url)
    tokens = exchange(inbox, client_id, answer["code"], verifier, redirect_uri=callback)
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["scope"] == "inbox:read"
