"""A real MCP Events webhook receiver on loopback, as a client would run one: every POST is verified with the
`standardwebhooks` package (a bad signature gets 401), a verification's challenge is echoed, and each event or
control message is recorded. Bound at once so its URL is known; listening only after `start()` (before that, and
after `stop()`, a connection is refused, as when the receiver is down)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .receivers import LoopbackHTTP

WAIT_SECONDS = 20.0


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class WebhookReceiver(LoopbackHTTP):
    secret: str
    # Answers to give, in order, to event (and control) POSTs before the default 204; e.g. [503, 503].
    script: list[int] = field(default_factory=list)
    echo: Callable[[str], Any] = lambda challenge: {"challenge": challenge}  # what a verification is answered
    verifications: list[Delivery] = field(default_factory=list)
    accepted: list[Delivery] = field(default_factory=list)  # events and controls answered 2xx
    refused: list[tuple[int, Delivery]] = field(default_factory=list)
    bad_signatures: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._bind()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/stripe?tenant=a%20b&x=1"

    def restart(self) -> WebhookReceiver:
        """Listen again on the same port after `stop()`."""
        self._bind(self.server.server_address[1])
        return self.start()

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        try:
            body = Webhook(self.secret).verify(raw, headers)
        except WebhookVerificationError:
            with self._lock:
                self.bad_signatures += 1
            return 401, None
        delivery = Delivery(path, {key.lower(): value for key, value in headers.items()}, body)
        with self._lock:
            if body.get("type") == "verification":
                self.verifications.append(delivery)
                self._lock.notify_all()
                return 200, self.echo(body["challenge"])
            status = self.script.pop(0) if self.script else 204
            if 200 <= status < 300:
                self.accepted.append(delivery)
            else:
                self.refused.append((status, delivery))
            self._lock.notify_all()
            return status, None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [each.body for each in self.accepted if "eventId" in each.body]

    def wait_for(self, predicate: Callable[[WebhookReceiver], bool], timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver: condition not met in {timeout} s; accepted {len(self.accepted)}, "
                        f"refused {[status for status, _ in self.refused]}"
                    )
                self._lock.wait(left)

    def wait_for_events(self, count: int, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        self.wait_for(lambda receiver: len(receiver.events()) >= count, timeout)
        return self.events()
