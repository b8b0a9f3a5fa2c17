"""Hostile input: only 400, 408 or 413 come back, nothing is stored, and the server keeps serving."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time
from pathlib import Path

import httpx
import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.errors import DeliveryRejected
from stripe_inbox.stripe.signature import verify
from stripe_inbox.web.app import create_app

from .conftest import SECRET, cli_env, deliver, encode, make_event, start_server, stop_server

HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
SIGNATURES = st.one_of(
    HEADER_TEXT,
    st.builds(lambda t, rest: f"t={t},{rest}", st.integers(-(2**40), 2**40), HEADER_TEXT),
    st.lists(
        st.sampled_from(["t=1700000000", "v1=" + "0" * 64, "v0=abc", "t=", "v1=", ",", "=", "t=x"]), max_size=8
    ).map(",".join),
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.text(max_size=200),
    secret=st.sampled_from([SECRET, "whsec_other_secret_value"]),
    timestamp=st.integers(1_600_000_000, 1_900_000_000),
    tamper=st.sampled_from(["none", "body", "sig", "v0"]),
)
def test_verification_agrees_with_the_stripe_package(body: str, secret: str, timestamp: int, tamper: str) -> None:
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
    payload = body.encode()
    if tamper == "body":
        payload += b" "
    elif tamper == "sig":
        header = header[:-1] + ("0" if header[-1] != "0" else "1")
    elif tamper == "v0":
        header = header.replace("v1=", "v0=")
    try:
        stripe.WebhookSignature.verify_header(payload.decode(), header, SECRET, tolerance=None)
        theirs = True
    except stripe.SignatureVerificationError:
        theirs = False
    try:
        ours = verify(payload, header, [SECRET], now=timestamp) == timestamp
    except DeliveryRejected:
        ours = False
    assert ours == theirs


@pytest.mark.parametrize("size", [2046, 2047, 2048, 4094, 4095, 70_000])
def test_verification_of_bodies_hashed_in_pieces(size: int) -> None:
    """Long bodies are hashed in pieces (so the GIL stays with the event loop): every byte still counts."""
    body = "".join(chr(97 + index % 26) for index in range(size))
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=1_700_000_000)
    assert verify(body.encode(), header, [SECRET], now=1_700_000_000) == 1_700_000_000
    for position in (0, 2040, size // 2, size - 1):
        tampered = bytearray(body.encode())
        tampered[position] ^= 1
        with pytest.raises(DeliveryRejected):
            verify(bytes(tampered), header, [SECRET], now=1_700_000_000)


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import anyio.from_thread

    path = tmp_path_factory.mktemp("hostile")
    with anyio.from_thread.start_blocking_portal() as portal:
        settings_ = load_settings(db=str(path / "hostile.db"), webhook_secret=SECRET)
        inbox_cm = open_inbox(settings_)
        inbox: Inbox = portal.call(inbox_cm.__aenter__)
        try:
            yield portal, inbox, create_app(inbox)
        finally:
            portal.call(inbox_cm.__aexit__, None, None, None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(str.encode),
        st.builds(lambda: encode(make_event())),
    ),
    signature=st.one_of(st.none(), SIGNATURES),
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]),
)
def test_unsigned_or_malformed_deliveries_are_refused_and_nothing_is_stored(
    hostile_app,
    body: bytes,  # type: ignore[no-untyped-def]
    signature: str | None,
    content_type: str,
) -> None:
    portal, inbox, app = hostile_app
    headers = {"Content-Type": content_type} if content_type else {}
    if signature is not None:
        headers["Stripe-Signature"] = signature

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.post("/webhooks/stripe", content=body, headers=headers)

    response = portal.call(post)
    assert response.status_code in (400, 413)
    assert response.json()["error"] in ("missing_signature", "invalid_signature", "invalid_payload", "too_large")
    assert portal.call(inbox.stats).total == 0


@pytest.mark.anyio
async def test_the_server_keeps_serving_after_hostile_input(http: httpx.AsyncClient, inbox: Inbox) -> None:
    for body in (b"\x00" * 100, b"{" * 5000, b'{"id": "' + b"A" * 100_000 + b'"}'):
        assert (
            await http.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": "t=1,v1=0"})
        ).status_code == 400
    event = make_event()
    assert (await deliver(http, event)).status_code == 200
    assert (await inbox.stats()).total == 1


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and Content-Length body); the socket's timeout bounds the wait."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_slow_and_oversized_bodies_are_cut_off_by_a_real_server(tmp_path: Path) -> None:
    (tmp_path / "stripe-inbox.toml").write_text("body_timeout_seconds = 0.5\n")
    db = tmp_path / "slow.db"
    server = start_server(db, tmp_path, cli_env(db))
    try:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as slow:  # a slowloris
            slow.sendall(
                b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
                b"Stripe-Signature: t=1,v1=0\r\n\r\n" + b"{" * 10
            )
            started = time.monotonic()
            answer = read_response(slow)
            assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer
            assert time.monotonic() - started < 9  # cut off by the server, not by our socket timeout
        with socket.create_connection((host, int(port)), timeout=10) as big:
            big.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000000\r\n\r\n")
            big.sendall(b"x" * 65536)
            assert read_response(big).startswith(b"HTTP/1.1 413")
        payload = encode(make_event())
        timestamp = int(time.time())
        digest = hmac.new(SECRET.encode(), b"%d." % timestamp + payload, hashlib.sha256).hexdigest()
        ok = httpx.post(
            server.webhook_url, content=payload, headers={"Stripe-Signature": f"t={timestamp},v1={digest}"}, timeout=10
        )
        assert ok.status_code == 200
    finally:
        stop_server(server)
