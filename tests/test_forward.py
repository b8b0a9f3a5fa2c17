"""Forwarding and replay with real processes: `serve` forwarding to handler processes that verify each request
with the stripe package's construct_event, across restarts and failures; `events replay`; `forward --to`."""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning

from stripe_inbox.errors import ConfigError
from stripe_inbox.settings import load_settings

from .conftest import Server, cli_env, encode, make_event, run_cli, signed_headers, start_server, stop_server

pytestmark = pytest.mark.anyio
RECEIVER = Path(__file__).with_name("forward_receiver.py")
ALL_SECRET = "whsec_forward_all_" + "f" * 32
BILLING_SECRET = "whsec_forward_billing_" + "g" * 32
BOUND = 30


@dataclass
class Receiver:
    """tests/forward_receiver.py running: each request it took, as the JSON line it printed."""

    process: subprocess.Popen[str]
    port: int
    lines: queue.Queue[dict[str, Any]]
    pump: threading.Thread
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(
        self, count: int, what: Callable[[dict[str, Any]], bool] = lambda record: True
    ) -> list[dict[str, Any]]:
        """The requests so far, once `count` of them match `what`; fails after BOUND seconds."""
        deadline = time.monotonic() + BOUND
        while sum(map(what, self.records)) < count:
            try:
                self.records.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{count} requests did not arrive; got {len(self.records)}") from None
        return self.records

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)
        self.pump.join(timeout=15)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def start_receiver(secret: str, port: int = 0) -> Receiver:
    process = subprocess.Popen(
        [sys.executable, str(RECEIVER), str(port)],
        env={**os.environ, "FORWARD_RECEIVER_SECRET": secret},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    assert process.stdout is not None
    started = json.loads(process.stdout.readline())

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            record = json.loads(line)
            record["at"] = time.monotonic()
            lines.put(record)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return Receiver(process, started["listening"], lines, reader)


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def configure(tmp_path: Path, destinations: list[str], outbox: str = "") -> None:
    """`destinations`: each a [[forward]] table's body."""
    tables = "".join(f"\n[[forward]]\n{body}\n" for body in destinations)
    (tmp_path / "stripe-inbox.toml").write_text(f"[outbox]\n{outbox}\n{tables}")


def forward_env(db: Path) -> dict[str, str]:
    return cli_env(db, ALL_SECRET_ENV=ALL_SECRET, BILLING_SECRET_ENV=BILLING_SECRET)


def post(server: Server, event: dict[str, Any]) -> bytes:
    payload = encode(event)
    response = httpx.post(server.webhook_url, content=payload, headers=signed_headers(payload), timeout=10)
    assert response.status_code == 200, response.text
    return payload


def forward_rows(db: Path) -> list[tuple[str, str, str, int]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT target, event_id, status, attempts FROM deliveries WHERE kind = 'forward' ORDER BY id"
        ).fetchall()


def wait_for_printed(server: Server, done: Callable[[list[str]], bool]) -> None:
    """Read what `serve` prints until `done` holds for the lines read so far."""
    seen: list[str] = []
    deadline = time.monotonic() + BOUND
    while not done(seen):
        try:
            seen.append(server.lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError("serve did not print what was awaited:\n" + "".join(server.output)) from None


async def stats_once(server: Server, holds: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """stripe://stats once `holds` is true of it, read again at each change it is told of."""
    updates, changed = anyio.create_memory_object_stream[None](100)

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            await updates.send(None)

    async with Client(server.mcp_url, mode="legacy", message_handler=on_message) as client:
        with updates, changed, anyio.fail_after(BOUND):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.subscribe_resource("stripe://stats")
            while not holds(stats := json.loads((await client.read_resource("stripe://stats")).contents[0].text)):
                await changed.receive()
    return stats


async def test_every_new_event_reaches_each_destination_once_verified_and_exact(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    everything, billing = start_receiver(ALL_SECRET), start_receiver(BILLING_SECRET)
    receivers += [everything, billing]
    configure(
        tmp_path,
        [
            f'name = "all"\nurl = "{everything.url}"\nsecret_env = "ALL_SECRET_ENV"',
            f'name = "billing"\nurl = "{billing.url}"\nevents = ["invoice.*"]\nsecret_env = "BILLING_SECRET_ENV"',
        ],
    )
    db = tmp_path / "inbox.db"
    server = start_server(db, tmp_path, forward_env(db))
    try:
        types = ["invoice.paid", "charge.refunded", "invoice.payment_failed"]
        sent = {}
        for number in range(12):
            payload = post(server, make_event(types[number % 3]))
            sent[json.loads(payload)["id"]] = payload
        post(server, json.loads(next(iter(sent.values()))))  # Stripe retrying: a duplicate, not forwarded again
        invoices = {event_id for event_id, payload in sent.items() if b'"invoice.' in payload}
        for receiver, expected in ((everything, set(sent)), (billing, invoices)):
            records = receiver.wait_for(len(expected))
            assert Counter(record["id"] for record in records) == Counter(expected)  # each once
            for record in records:
                assert record["verified"] and record["status"] == 200
                assert record["content_type"] == "application/json"
                assert base64.b64decode(record["body"]) == sent[record["id"]]  # the exact bytes Stripe sent
        stats = await stats_once(server, lambda stats: stats["forwards"]["sent"] == 20)
        assert stats["forwards"] == {"queued": 0, "sending": 0, "sent": 20, "failed": 0}
        rows = forward_rows(db)
        assert len(rows) == 12 + 8 and {(status, attempts) for _, _, status, attempts in rows} == {("sent", 1)}
        shown = run_cli("events", "show", next(iter(invoices)), env=forward_env(db), cwd=tmp_path).stdout
        assert "forward #" in shown and "to billing: sent after 1 attempt, last answer 200 in" in shown
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'stripe_inbox_forwards{destination="all",state="sent"} 12.0' in metrics
        assert 'stripe_inbox_forwards{destination="billing",state="sent"} 8.0' in metrics
        async with Client(server.mcp_url) as client:
            detail = json.loads(
                (await client.read_resource(f"stripe://events/{next(iter(invoices))}")).contents[0].text
            )
            assert sorted(forward["destination"] for forward in detail["forwards"]) == ["all", "billing"]
    finally:
        stop_server(server)
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("inbox.db*"))
    for secret in (ALL_SECRET, BILLING_SECRET):
        assert secret.encode() not in stored
        assert secret not in "".join(server.output) + shown


async def test_a_receiver_down_gets_its_events_after_retries_across_a_restart_of_serve(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    port = free_port()
    configure(
        tmp_path,
        [f'name = "hook"\nurl = "http://127.0.0.1:{port}/hook"\nsecret_env = "ALL_SECRET_ENV"'],
        "retry_base_seconds = 0.05\nretry_max_seconds = 0.2\nmax_attempts = 100\npause_after_failures = 1000",
    )
    db = tmp_path / "inbox.db"
    first = start_server(db, tmp_path, forward_env(db))
    try:
        ids = [json.loads(post(first, make_event()))["id"] for _ in range(3)]
        # Each has been tried and refused more than once.
        wait_for_printed(
            first, lambda lines: all(f"{i} to hook, attempt 2: queued (cannot connect" in "".join(lines) for i in ids)
        )
    finally:
        stop_server(first)
    assert {status for _, _, status, _ in forward_rows(db)} == {"queued"}
    receivers.append(receiver := start_receiver(ALL_SECRET, port))
    second = start_server(db, tmp_path, forward_env(db))
    try:
        records = receiver.wait_for(3)
        assert sorted(record["id"] for record in records) == sorted(ids) and all(r["verified"] for r in records)
    finally:
        stop_server(second)
    rows = forward_rows(db)
    assert {status for _, _, status, _ in rows} == {"sent"} and min(attempts for *_, attempts in rows) >= 3
    assert len(receiver.records) == 3  # nothing twice, even with the restart


async def test_a_failing_destination_is_paused_and_probed_while_the_other_keeps_receiving(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    good, bad = start_receiver(ALL_SECRET), start_receiver(BILLING_SECRET)
    receivers += [good, bad]
    bad.tell("fail")
    configure(
        tmp_path,
        [
            f'name = "good"\nurl = "{good.url}"\nsecret_env = "ALL_SECRET_ENV"',
            f'name = "bad"\nurl = "{bad.url}"\nsecret_env = "BILLING_SECRET_ENV"',
        ],
        "retry_base_seconds = 0.05\nretry_max_seconds = 0.05\nmax_attempts = 100\n"
        "pause_after_failures = 3\npause_seconds = 0.5",
    )
    db = tmp_path / "inbox.db"
    server = start_server(db, tmp_path, forward_env(db))
    try:
        ids = [json.loads(post(server, make_event()))["id"] for _ in range(5)]
        good.wait_for(5)
        while len({record["id"] for record in bad.records}) < 5:  # each tried once (and refused)
            bad.wait_for(len(bad.records) + 1)
        first_tries = list(bad.records)
        ids += [json.loads(post(server, make_event()))["id"] for _ in range(5)]
        assert sorted(r["id"] for r in good.wait_for(10)) == sorted(ids)  # not slowed by the other
        # Five failures at once paused it: from then on one probe at a time, each after the cool-down, instead of
        # a retry of each every 0.05 s.
        probes = bad.wait_for(len(first_tries) + 3)[-3:]
        assert all(later["at"] - earlier["at"] >= 0.4 for earlier, later in itertools.pairwise(probes))
        bad.tell("ok")
        delivered = bad.wait_for(10, lambda record: record["status"] == 200)
        assert sorted(r["id"] for r in delivered if r["status"] == 200) == sorted(ids)
    finally:
        stop_server(server)


async def test_replay_one_event_or_a_date_range_with_a_fresh_signature(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    receivers.append(receiver := start_receiver(ALL_SECRET))
    configure(tmp_path, [f'name = "hook"\nurl = "{receiver.url}"\nsecret_env = "ALL_SECRET_ENV"'])
    db = tmp_path / "inbox.db"
    env = forward_env(db)
    server = start_server(db, tmp_path, env)
    try:
        january = int(time.mktime((2026, 1, 5, 12, 0, 0, 0, 0, 0))) - time.timezone
        old = [json.loads(post(server, make_event(created=january + n)))["id"] for n in range(2)]
        recent = json.loads(post(server, make_event("charge.refunded")))["id"]
        receiver.wait_for(3)
        replayed = run_cli("events", "replay", recent, "--to", "hook", env=env, cwd=tmp_path)
        assert "1 event queued for hook" in replayed.stdout
        again = receiver.wait_for(4)[-1]
        assert again["id"] == recent and again["verified"]
        ranged = run_cli(
            "events", "replay", "--since", "2026-01-05", "--until", "2026-01-06", "--to", "hook", env=env, cwd=tmp_path
        )
        assert "2 events queued for hook" in ranged.stdout and "replayed 2/2" in ranged.stderr
        assert sorted(record["id"] for record in receiver.wait_for(6)[-2:]) == sorted(old)
        async with Client(server.mcp_url) as client:
            made = (
                await client.call_tool("replay_event", {"event_id": old[0], "destination": "hook"})
            ).structured_content
            assert made["replay"] and made["destination"] == "hook"
            unknown = await client.call_tool("replay_event", {"event_id": old[0], "destination": "nope"})
            assert unknown.is_error and "configured destinations: hook" in unknown.content[0].text
        assert receiver.wait_for(7)[-1]["id"] == old[0]
        assert all(record["verified"] for record in receiver.records)
        missing = run_cli("events", "replay", "evt_nope", "--to", "hook", env=env, cwd=tmp_path, check=False)
        assert missing.returncode != 0 and "no event 'evt_nope'" in missing.stderr
        nowhere = run_cli("events", "replay", recent, "--to", "nope", env=env, cwd=tmp_path, check=False)
        assert nowhere.returncode != 0 and "destination 'nope' is not valid" in nowhere.stderr
        detail = json.loads(run_cli("events", "show", recent, "--json", env=env, cwd=tmp_path).stdout)
        assert [a["action"] for a in detail["audit"]] == ["replay_event"]
        assert [(f["replay"], f["status"]) for f in detail["forwards"]] == [(False, "sent"), (True, "sent")]
    finally:
        stop_server(server)


@dataclass
class Forwarding:
    """`stripe-inbox forward --to` running; what it prints, line by line."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    pump: threading.Thread

    def interrupt(self) -> int:
        """Ctrl-C; its exit status."""
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=BOUND)
        self.pump.join(timeout=BOUND)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return status


def start_forwarding(tmp_path: Path, db: Path, url: str, *args: str) -> Forwarding:
    process = subprocess.Popen(
        [sys.executable, "-m", "stripe_inbox", "forward", "--to", url, "--secret", ALL_SECRET, *args],
        env=cli_env(db),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return Forwarding(process, lines, reader)


def read_lines(lines: queue.Queue[str], until: str, count: int = 1) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + BOUND
    while sum(until in line for line in seen) < count:
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"{until!r} not printed {count} times:\n{''.join(seen)}") from None
    return seen


def test_forward_to_prints_each_delivery_and_resumes_after_a_restart(tmp_path: Path, receivers: list[Receiver]) -> None:
    receivers.append(receiver := start_receiver(ALL_SECRET))
    db = tmp_path / "inbox.db"
    server = start_server(db, tmp_path)
    try:
        before = json.loads(post(server, make_event()))["id"]  # stored before it starts: not forwarded
        forwarding = start_forwarding(tmp_path, db, receiver.url, "--events", "invoice.*", "charge.*")
        read_lines(forwarding.lines, "Ready! Forwarding events stored from now on")
        first = [json.loads(post(server, make_event(kind)))["id"] for kind in ("invoice.paid", "charge.refunded")]
        post(server, make_event("customer.created"))  # not among --events
        printed = read_lines(forwarding.lines, "<-- [200] POST", 2)
        for event_id in first:
            assert any(f"[{event_id}]" in line and " ms" in line for line in printed)
        assert forwarding.interrupt() == 0
        read_lines(forwarding.lines, "stopping: 2 forwarded")
        later = [json.loads(post(server, make_event()))["id"] for _ in range(2)]  # while it is stopped
        forwarding = start_forwarding(tmp_path, db, receiver.url, "--events", "invoice.*", "charge.*")
        read_lines(forwarding.lines, "from where it stopped")
        read_lines(forwarding.lines, "<-- [200] POST", 2)
        assert forwarding.interrupt() == 0
    finally:
        stop_server(server)
    records = receiver.wait_for(4)
    assert [record["id"] for record in records] == first + later  # in order, each once, none before it started
    assert before not in {record["id"] for record in records} and all(r["verified"] for r in records)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "which is not set"),
        ("sk_live_abcdef123456", "looks like a Stripe API key"),
        ("hunter2hunter2", "does not"),
    ],
)
def test_a_destination_secret_missing_or_malformed_is_a_clear_startup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    if value is not None:
        monkeypatch.setenv("HOOK_SECRET", value)
    configure(tmp_path, ['name = "hook"\nurl = "http://127.0.0.1:9/hook"\nsecret_env = "HOOK_SECRET"'])
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "HOOK_SECRET" in message and problem in message and "'hook'" in message
    assert value is None or value[6:] not in message
