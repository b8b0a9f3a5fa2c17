"""Bounds on a request's head (request line and headers) for `serve`'s HTTP/1.1 protocol. uvicorn's httptools
parser keeps a header that has not ended in memory however long it grows, and waits for it however slowly it
comes: a few unterminated 32 MB headers cost hundreds of MB, and idle connections hold descriptors forever.
Here a head longer than `max_header_bytes` gets 431, one not complete within `header_timeout_seconds` gets
408, and the connection is closed. The cost per request is a counter and a timer, as uvicorn's keep-alive."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..settings import HttpLimits


class HeadLimitedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses a head that is too long or too slow. `limits` is set by `head_limited`."""

    limits: HttpLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True  # the bytes received belong to a request head not yet complete
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing, while a head is unfinished: a chunk that completes its head (with a body, however
        # large) never counts. A head starts at the connection, or at the first byte of a kept-alive request.
        if self._head_pending and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, "Request header fields too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        if self._head_timer is None:  # the first byte of a later request on a kept-alive connection
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_bytes = 0
        self._stop_head_timer()
        super().on_headers_complete()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._head_pending and not self.transport.is_closing():
            self._refuse(408, "Request header not received in time.")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close, as uvicorn answers a request it cannot parse; what the parser holds of the
        head is freed with the connection."""
        self._stop_head_timer()
        if self.cycle is None or self.cycle.response_complete:  # never inside a pipelined response
            head = [STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n", b"connection: close\r\n"]
            length = b"content-length: " + str(len(message)).encode() + b"\r\n\r\n"
            self.transport.write(b"".join([*head, length, message.encode()]))
        self.transport.close()


def head_limited(limits: HttpLimits) -> type[HeadLimitedProtocol]:
    """The protocol class to give uvicorn's `http` option."""
    return type("HeadLimited", (HeadLimitedProtocol,), {"limits": limits})
