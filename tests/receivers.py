"""Real servers on loopback that channels deliver to: an HTTP receiver and an SMTP server."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from aiosmtpd.controller import Controller


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LoopbackHTTP:
    """An HTTP server on loopback that answers each POST with JSON (`_answer`), bound at once (so its URL is known)
    but listening only after `start()`: until then, and after `stop()`, a connection is refused, as when the
    receiver is down."""

    server: ThreadingHTTPServer
    thread: threading.Thread | None

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        """The status and JSON (None: no body) a POST is answered with."""
        raise NotImplementedError

    def _answered(self, path: str, headers: dict[str, str], raw: bytes) -> None:
        """What follows the answer."""

    def _bind(self, port: int = 0) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = owner._answer(self.path, dict(self.headers), raw)
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                owner._answered(self.path, dict(self.headers), raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler, bind_and_activate=False)
        self.server.allow_reuse_address = True
        self.server.server_bind()
        self.thread = None

    def start(self) -> Self:
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=10)
            self.thread = None
        self.server.server_close()


@dataclass
class HTTPReceiver(LoopbackHTTP):
    """Records every request; answers from `responses` (path -> (status, JSON)), else 200 {}."""

    responses: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._bind()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        return self.responses.get(path, (200, {}))

    def _answered(self, path: str, headers: dict[str, str], raw: bytes) -> None:
        self.requests.append(Received("POST", path, headers, raw))
        self.arrived.set()


def _free_port() -> int:
    with socket.socket() as probe:  # aiosmtpd needs the number before it binds
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


class SMTPReceiver:
    def __init__(self) -> None:
        self.mailbox = _Mailbox()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=_free_port())

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def messages(self) -> list[tuple[str, list[str], Message]]:
        return self.mailbox.messages

    def __enter__(self) -> SMTPReceiver:
        self.controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.controller.stop()
