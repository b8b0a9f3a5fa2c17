"""Responses in one write for `serve`'s HTTP/1.1 protocol. uvicorn writes a response's head and its body to the
socket separately, two sends for every webhook's 200; a send is a system call, the largest part of what a delivery
costs the event loop beyond the ingress's own work. Here a head that declares a Content-Length (the body follows it
at once: the ingress, Starlette's responses) waits for the body's bytes and goes out with them."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
DECLARES_LENGTH = b"\r\ncontent-length: "  # uvicorn writes header names in lower case, one per line


class SingleWriteResponses(HttpToolsProtocol):
    """HttpToolsProtocol whose responses with a Content-Length reach the socket in one write."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # Not for HEAD: uvicorn writes no body to a HEAD request, so a held head would never go.
        if cycle is not None and cycle.transport is self.transport and self.scope["method"] != "HEAD":
            cycle.transport = HeadWithBody(self.transport)


class HeadWithBody:
    """The transport as one request's cycle sees it: its response head, when it declares a Content-Length, is held
    and written together with the body's first write; everything else passes straight through."""

    __slots__ = ("_head_pending", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head_pending = True  # the cycle's first write, other than a 100 Continue, is the response head
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self._head_pending and data != CONTINUE:
            self._head_pending = False
            if DECLARES_LENGTH in data:
                self._held = data
                return
        self._transport.write(data)

    def close(self) -> None:
        """Closing after a head without its body (the app failed): the head still goes first, as uvicorn sends it."""
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
