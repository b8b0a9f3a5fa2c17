from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stripe_inbox import Inbox, Settings, load_settings, open_inbox
from stripe_inbox.stripe.signature import sign
from stripe_inbox.web.app import create_app

SECRET = "whsec_test_" + "a" * 32
OTHER_SECRET = "whsec_test_" + "b" * 32
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stripe"
STARTUP_TIMEOUT = 30


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_event(event_type: str = "invoice.payment_failed", **fields: Any) -> dict[str, Any]:
    """A small but well-formed event with a fresh id."""
    obj = {
        "id": "in_" + secrets.token_hex(8),
        "object": "invoice",
        "amount_due": 4900,
        "currency": "usd",
        "customer": "cus_" + secrets.token_hex(6),
        "attempt_count": 2,
    }
    event = {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }
    event.update(fields)
    return event


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()


def signed_headers(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sign(payload, secret, timestamp), "Content-Type": "application/json"}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "inbox.db"


@pytest.fixture
def settings(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in (
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_API_KEY",
        "STRIPE_SECRET_KEY",
        "STRIPE_INBOX_DB",
        "STRIPE_INBOX_MCP_TOKEN",
        "STRIPE_INBOX_TOKEN",
        "STRIPE_INBOX_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(db_path.parent)
    return load_settings(db=str(db_path), webhook_secret=f"{SECRET}, {OTHER_SECRET}")


@pytest.fixture
async def inbox(settings: Settings) -> AsyncIterator[Inbox]:
    async with open_inbox(settings) as opened:
        yield opened


@pytest.fixture
async def http(inbox: Inbox) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(inbox))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def deliver(http: httpx.AsyncClient, event: dict[str, Any] | bytes, **sign_args: Any) -> httpx.Response:
    payload = event if isinstance(event, bytes) else encode(event)
    return await http.post("/webhooks/stripe", content=payload, headers=signed_headers(payload, **sign_args))


def fixture_events() -> list[Path]:
    return sorted((FIXTURES / "events").glob("*.json"))


needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "events").is_dir(), reason=f"shared Stripe fixtures not found at {FIXTURES}"
)


# -- real processes ------------------------------------------------------------------------------


def cli_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "PYTEST"))}
    env.update({"STRIPE_INBOX_DB": str(db), "STRIPE_WEBHOOK_SECRET": SECRET, **extra})
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "stripe_inbox", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"stripe-inbox {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    lines: queue.Queue[str]
    output: list[str]
    pump: threading.Thread

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhooks/stripe"

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"


def start_server(
    db: Path, cwd: Path, env: dict[str, str] | None = None, *args: str, command: list[str] | None = None
) -> Server:
    """`stripe-inbox serve` on a free port (or `command`, another way to start it); returns once it prints the
    address it listens on."""
    process = subprocess.Popen(
        command or [sys.executable, "-m", "stripe_inbox", "serve", "--port", "0", *args],
        env=env or cli_env(db),
        cwd=cwd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            output.append(line)
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    server = Server(process, "", lines, output, reader)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0 and process.poll() is None:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if "listening on " in line:
            server.url = line.split("listening on ")[1].split()[0]
            return server
    stop_server(server)
    raise AssertionError("serve did not start:\n" + "".join(output))


def wait_for_line(server: Server, text: str, timeout: float = STARTUP_TIMEOUT) -> str:
    """The next line `serve` prints that contains `text` (its log thread writes a little after the fact)."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = server.lines.get(timeout=remaining)
        except queue.Empty:
            break
        if text in line:
            return line
    raise AssertionError(f"serve did not print {text!r} within {timeout} s:\n" + "".join(server.output))


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=15)
    server.pump.join(timeout=15)
    assert server.process.stderr is not None
    server.process.stderr.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "inbox.db", tmp_path)
    yield running
    stop_server(running)
