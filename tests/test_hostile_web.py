"""Issue #22 items 5, 7, 9 and 14 (in part): hostile HTTP clients, generic environment variables, guessing the
dashboard's token and reusing its cookies, /metrics, the database file's mode and unbounded numbers; each attack
is made against a real `serve` or the real command where it can be."""

from __future__ import annotations

import math
import os
import re
import select
import socket
import stat
import time
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from stripe_inbox import Inbox, load_settings
from stripe_inbox.errors import ConfigError
from stripe_inbox.settings import ENVIRONMENT, HttpLimits, Settings
from stripe_inbox.web.session import COOKIE_NAME, DashboardSessions
from stripe_inbox.web.throttle import FREE_FAILURES, MAX_LOCK_SECONDS, SignInThrottle

from .conftest import (
    Server,
    cli_env,
    encode,
    make_event,
    run_cli,
    signed_headers,
    start_server,
    stop_server,
)
from .fake_stripe import FakeStripe

TOKEN = "hostile-web-token-" + "q" * 20
BOUND = 10.0  # seconds any single wait may take
MiB = 1024 * 1024


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Server]:
    """`serve` with an access token."""
    running = start_server(tmp_path / "inbox.db", tmp_path, cli_env(tmp_path / "inbox.db", STRIPE_INBOX_TOKEN=TOKEN))
    yield running
    stop_server(running)


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[Server]:
    """`serve` without a token (loopback only), with a one-second header timeout."""
    (tmp_path / "stripe-inbox.toml").write_text("[http]\nheader_timeout_seconds = 1\n")
    running = start_server(tmp_path / "inbox.db", tmp_path)
    yield running
    stop_server(running)


def connect(server: Server) -> socket.socket:
    url = urlsplit(server.url)
    assert url.hostname is not None and url.port is not None
    return socket.create_connection((url.hostname, url.port), timeout=BOUND)


def read_until_closed(sock: socket.socket) -> bytes:
    """What the server sent before it closed; a reset (the server closed with our bytes unread) ends it too."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) * 1024


def healthy(server: Server) -> bool:
    return httpx.get(f"{server.url}/healthz", timeout=BOUND).status_code == 200


# -- item 5: slow or huge request heads --------------------------------------------------------------------


def push_header(sock: socket.socket, limit: int) -> int:
    """Send an endless header value until the server answers or drops the connection, or `limit` bytes went."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
    chunk, sent = b"a" * 65536, 0
    while sent < limit and not select.select([sock], [], [], 0)[0]:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return sent


def test_unterminated_huge_headers_are_cut_off_at_the_cap_and_memory_stays_bounded(server: Server) -> None:
    before = resident_bytes(server.process.pid)
    attackers = [connect(server) for _ in range(8)]
    try:
        for sock in attackers:
            sent = push_header(sock, limit=32 * MiB)
            assert sent < 32 * MiB, "the server kept reading a 32 MB header"
            answer = read_until_closed(sock)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert resident_bytes(server.process.pid) - before < 64 * MiB
        assert healthy(server)
    finally:
        for sock in attackers:
            sock.close()


def test_a_head_over_the_cap_gets_431_and_a_close(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 96 * 1024)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert healthy(server)


def test_a_head_just_under_the_cap_is_served(server: Server) -> None:
    response = httpx.get(f"{server.url}/healthz", headers={"X-Padding": "a" * 60 * 1024}, timeout=BOUND)
    assert response.status_code == 200


def test_bodies_far_over_the_header_cap_are_stored_and_kept_alive_connections_go_on(server: Server) -> None:
    with httpx.Client(timeout=BOUND) as client:  # one connection, kept alive
        for padding in (200, 600, 900):
            payload = encode(make_event(metadata={"padding": "p" * padding * 1024}))
            response = client.post(server.webhook_url, content=payload, headers=signed_headers(payload))
            assert (response.status_code, response.json()) == (200, {"received": True})


def dribble_until_answered(sock: socket.socket) -> tuple[bytes, float]:
    """Send a byte every 0.1 s (the wait for the server's answer paces it) until the server answers."""
    started = time.monotonic()
    while time.monotonic() - started < BOUND:
        if select.select([sock], [], [], 0.1)[0]:
            return read_until_closed(sock), time.monotonic() - started
        try:
            sock.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            return b"", time.monotonic() - started
    raise AssertionError(f"the server still waits for a head dribbled for {BOUND} s")


def test_slow_heads_and_idle_connections_are_closed_after_the_header_timeout(open_server: Server) -> None:
    idle = connect(open_server)
    slow = connect(open_server)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    kept_alive = connect(open_server)  # one good request, then a slow second head on the same connection
    kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while not first.endswith(b'{"status":"ok"}'):  # the whole first response; the socket's timeout bounds it
        chunk = kept_alive.recv(65536)
        assert chunk, f"closed after {first!r}"
        first += chunk
    assert first.startswith(b"HTTP/1.1 200 ")
    kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    try:
        assert healthy(open_server)  # the server answers others while they hang on
        for sock in (slow, kept_alive):
            answer, seconds = dribble_until_answered(sock)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert seconds < 5
        idle_answer = read_until_closed(idle)
        assert idle_answer == b"" or idle_answer.startswith(b"HTTP/1.1 408 "), idle_answer[:200]
        assert healthy(open_server)
    finally:
        for sock in (idle, slow, kept_alive):
            sock.close()


def test_the_systemd_example_raises_the_descriptor_limit() -> None:
    unit = (Path(__file__).parents[1] / "examples" / "stripe-inbox.service").read_text()
    match = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert match is not None and int(match.group(1)) >= 4 * HttpLimits().max_connections


# -- item 7: only the documented environment variables -----------------------------------------------------

GENERIC = {
    "WEBHOOK_SECRET": "whsec_generic" + "c" * 24,
    "API_KEY": "sk_test_generic",
    "API_BASE": "http://127.0.0.1:9",
    "DB": "elsewhere.db",
    "MCP_TOKEN": "generic-token-" + "m" * 20,
    "DASHBOARD_REVEAL": "true",
    "EVENTS": '["nothing.*"]',
}


def test_serve_ignores_generic_variables(tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"
    running = start_server(db, tmp_path, cli_env(db, **GENERIC))
    try:
        payload = encode(make_event())
        forged_headers = signed_headers(payload, GENERIC["WEBHOOK_SECRET"])
        forged = httpx.post(running.webhook_url, content=payload, headers=forged_headers, timeout=BOUND)
        assert forged.status_code == 400, "WEBHOOK_SECRET was taken for the signing secret"
        genuine = httpx.post(running.webhook_url, content=payload, headers=signed_headers(payload), timeout=BOUND)
        assert (genuine.status_code, genuine.json()) == (200, {"received": True})  # stored: EVENTS filters nothing
        # MCP_TOKEN would have made the dashboard and /metrics ask for a token.
        assert httpx.get(f"{running.url}/ui/", timeout=BOUND).status_code == 200
        assert httpx.get(f"{running.url}/metrics", timeout=BOUND).status_code == 200
        assert db.exists() and not (tmp_path / "elsewhere.db").exists()
    finally:
        stop_server(running)


def test_the_stripe_key_goes_only_to_stripe_api_base(tmp_path: Path) -> None:
    genuine, stranger = FakeStripe(), FakeStripe()
    try:
        db = tmp_path / "inbox.db"
        env = cli_env(db, STRIPE_API_KEY="sk_test_genuine", STRIPE_API_BASE=genuine.url, **GENERIC)
        env["API_BASE"] = stranger.url
        run_cli("backfill", "--days", "1", env=env, cwd=tmp_path)
        assert stranger.requests == [], "another program's API_BASE received a request"
        assert genuine.requests
        assert {request.headers["Authorization"] for request in genuine.requests} == {"Bearer sk_test_genuine"}
    finally:
        genuine.stop()
        stranger.stop()


def test_only_the_documented_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [*ENVIRONMENT, "STRIPE_INBOX_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in GENERIC.items():
        monkeypatch.setenv(name, value)
    assert load_settings().model_dump() == Settings().model_dump()
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_older_name")
    monkeypatch.setenv("STRIPE_INBOX_MCP_TOKEN", "older-token-name-" + "o" * 10)
    monkeypatch.setenv("STRIPE_INBOX_TOKEN", TOKEN)
    settings = load_settings()
    assert (settings.api_key, settings.mcp_token) == ("sk_test_older_name", TOKEN)


# -- item 9: guessing the token, stale sessions -------------------------------------------------------------

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(client: httpx.Client, url: str) -> str:
    match = CSRF.search(client.get(url).text)
    assert match is not None
    return match.group(1)


def try_token(client: httpx.Client, server: Server, token: str, address: str | None = None) -> httpx.Response:
    csrf = csrf_of(client, f"{server.url}/ui/sign-in")
    headers = {"x-forwarded-for": address} if address else {}  # uvicorn trusts it from loopback, as from a proxy
    form = {"csrf_token": csrf, "token": token, "next": "/ui/"}
    return client.post(f"{server.url}/ui/sign-in", data=form, headers=headers)


def test_guessing_the_token_is_throttled_per_address(guarded: Server) -> None:
    with httpx.Client(timeout=BOUND) as client:
        for guess in range(FREE_FAILURES):
            assert try_token(client, guarded, f"guess-{guess}-" + "g" * 20).status_code == 401
        locked = try_token(client, guarded, TOKEN)  # the right token waits too: else the lock tells nothing
        assert locked.status_code == 429
        assert re.search(r"Too many failed attempts from your address: try again in \d+ s", locked.text)
        assert int(locked.headers["retry-after"]) >= 1
        assert try_token(client, guarded, TOKEN, address="203.0.113.9").status_code == 303


def test_each_further_failure_locks_twice_as_long_and_a_success_clears() -> None:
    now = [1000.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    for _ in range(FREE_FAILURES - 1):
        throttle.failed("198.51.100.1")
    assert throttle.wait_seconds("198.51.100.1") == 0
    throttle.failed("198.51.100.1")
    assert throttle.wait_seconds("198.51.100.1") == 2
    now[0] += 2
    assert throttle.wait_seconds("198.51.100.1") == 0
    throttle.failed("198.51.100.1")
    assert throttle.wait_seconds("198.51.100.1") == 4
    for _ in range(40):
        throttle.failed("198.51.100.1")
    assert throttle.wait_seconds("198.51.100.1") == MAX_LOCK_SECONDS
    assert throttle.wait_seconds("198.51.100.2") == 0
    throttle.succeeded("198.51.100.1")
    assert throttle.wait_seconds("198.51.100.1") == 0


def test_a_short_token_stops_serve_without_printing_it(tmp_path: Path) -> None:
    short = "fifteen-chars-1"
    db = tmp_path / "inbox.db"
    result = run_cli("serve", "--port", "0", env=cli_env(db, STRIPE_INBOX_TOKEN=short), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "STRIPE_INBOX_TOKEN" in result.stderr and "shorter than 16 characters" in result.stderr
    assert short not in result.stderr + result.stdout


def test_a_cookie_copied_before_sign_out_is_refused_after(guarded: Server) -> None:
    with httpx.Client(timeout=BOUND) as operator:
        assert try_token(operator, guarded, TOKEN).status_code == 303
        copied = operator.cookies[COOKIE_NAME]
        with httpx.Client(timeout=BOUND, cookies={COOKIE_NAME: copied}) as thief:
            assert thief.get(f"{guarded.url}/ui/").status_code == 200
            csrf = csrf_of(operator, f"{guarded.url}/ui/")
            assert operator.post(f"{guarded.url}/ui/sign-out", data={"csrf_token": csrf}).status_code == 303
            refused = thief.get(f"{guarded.url}/ui/")
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/ui/sign-in")


def connection_with(cookie: str) -> HTTPConnection:
    return HTTPConnection({"type": "http", "headers": [(b"cookie", f"{COOKIE_NAME}={cookie}".encode())]})


@pytest.mark.anyio
async def test_signed_in_reads_the_cookie_and_sign_out_reaches_every_replica(inbox: Inbox) -> None:
    here, there = DashboardSessions(TOKEN, inbox.store), DashboardSessions(TOKEN, inbox.store)  # two replicas
    session: dict[str, Any] = {}
    here.sign_in(session)
    cookie = here.signer.dumps(session, time.time())
    assert here.signed_in(connection_with(cookie)) and there.signed_in(connection_with(cookie))
    await here.sign_out(dict(session))
    assert not here.signed_in(connection_with(cookie))
    await there.refresh()
    assert not there.signed_in(connection_with(cookie))
    again: dict[str, Any] = {}
    there.sign_in(again)
    assert here.signed_in(connection_with(here.signer.dumps(again, time.time())))


def test_a_new_token_ends_every_session() -> None:
    sessions, rotated = DashboardSessions(TOKEN), DashboardSessions(TOKEN + "-rotated")
    session: dict[str, Any] = {}
    sessions.sign_in(session)
    cookie = sessions.signer.dumps(session, time.time())
    assert sessions.signed_in(connection_with(cookie))
    assert rotated.signer.loads(cookie, time.time()) == {}
    assert not rotated.signed_in(connection_with(cookie))


# -- item 14: /metrics, the database file, unbounded numbers -----------------------------------------------


def test_metrics_refuse_a_rebinding_host_without_a_token(server: Server) -> None:
    rebound = httpx.get(f"{server.url}/metrics", headers={"Host": "rebind.example:8000"}, timeout=BOUND)
    assert rebound.status_code == 403
    assert "stripe_inbox_" not in rebound.text
    assert httpx.get(f"{server.url}/metrics", timeout=BOUND).status_code == 200


def test_metrics_need_the_bearer_token_when_one_is_set(guarded: Server) -> None:
    url = f"{guarded.url}/metrics"
    anonymous = httpx.get(url, timeout=BOUND)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert "stripe_inbox_" not in anonymous.text
    assert httpx.get(url, headers={"Authorization": "Bearer not-" + TOKEN}, timeout=BOUND).status_code == 401
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=BOUND)
    assert scraped.status_code == 200 and "stripe_inbox_oldest_pending_age_seconds" in scraped.text


def test_the_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        running = start_server(tmp_path / "inbox.db", tmp_path)
    finally:
        os.umask(previous)
    try:
        payload = encode(make_event())
        assert httpx.post(running.webhook_url, content=payload, headers=signed_headers(payload)).status_code == 200
        for name in ("inbox.db", "inbox.db-wal", "inbox.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        stop_server(running)


def test_an_infinite_timeout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "stripe-inbox.toml").write_text("body_timeout_seconds = 1e309\n")
    result = run_cli("events", "list", env=cli_env(tmp_path / "inbox.db"), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "body_timeout_seconds: Input should be a finite number" in result.stderr


def numeric_settings(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every number in the settings, nested tables included (not lists of tables: [[forward]])."""
    for name, field in model.model_fields.items():
        optional = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        for kind in typing.get_args(field.annotation) if optional else (field.annotation,):
            if kind in (int, float):
                yield (*prefix, name)
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from numeric_settings(kind, (*prefix, name))


NUMBERS = sorted(set(numeric_settings(Settings)))


def nested(path: tuple[str, ...], value: object) -> dict[str, Any]:
    table: dict[str, Any] = {path[-1]: value}
    if path[:-1] == ("alerts",):
        table["channel"] = "log"
    return {path[0]: table} if len(path) == 2 else table


def test_every_number_in_the_settings_is_covered() -> None:
    assert ("body_timeout_seconds",) in NUMBERS and ("http", "header_timeout_seconds") in NUMBERS
    assert ("outbox", "retry_max_seconds") in NUMBERS and ("alerts", "check_seconds") in NUMBERS


@pytest.mark.parametrize("path", NUMBERS, ids=".".join)
@pytest.mark.parametrize("value", [math.inf, math.nan, 1e18], ids=["inf", "nan", "huge"])
def test_every_number_is_finite_and_bounded(settings: Settings, path: tuple[str, ...], value: float) -> None:
    with pytest.raises(ConfigError, match=re.escape(".".join(path))):
        load_settings(**nested(path, value))


def test_a_high_value_threshold_must_be_finite(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="finite"):
        load_settings(policy={"high_value": {"usd": math.inf}})
