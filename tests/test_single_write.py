"""Responses in one write (web/single_write.py), over real loopback transports: a response head that declares a
Content-Length reaches the peer only together with its body; everything else goes out as it is written."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from stripe_inbox.web.single_write import CONTINUE, HeadWithBody

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n"
BODY = b'{"received":true}'
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.fixture
async def connection() -> AsyncIterator[tuple[HeadWithBody, socket.socket]]:
    """The server side of a loopback connection as a response's cycle sees it, and the client's socket."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()
    server = await loop.create_server(lambda: _Accepting(accepted), "127.0.0.1", 0)
    client = socket.create_connection(server.sockets[0].getsockname()[:2])
    client.setblocking(False)
    with anyio.fail_after(5):
        transport = await accepted
    try:
        yield HeadWithBody(transport), client
    finally:
        transport.close()
        client.close()
        server.close()


class _Accepting(asyncio.Protocol):
    def __init__(self, accepted: asyncio.Future[asyncio.Transport]) -> None:
        self.accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted.set_result(transport)  # type: ignore[arg-type]


async def _received(client: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from `client`, waited for within a deadline."""
    data = b""
    with anyio.fail_after(5):
        while len(data) < size:
            await anyio.wait_readable(client)
            data += client.recv(65536)
    return data


def _nothing_yet(client: socket.socket) -> bool:
    # On loopback a send has reached the peer's socket by the time it returns: nothing there means nothing sent.
    try:
        client.recv(65536)
    except BlockingIOError:
        return True
    return False


async def test_a_head_with_a_content_length_goes_out_with_its_body(
    connection: tuple[HeadWithBody, socket.socket],
) -> None:
    transport, client = connection
    transport.write(HEAD)
    assert _nothing_yet(client)
    transport.write(BODY)
    assert await _received(client, len(HEAD + BODY)) == HEAD + BODY
    transport.write(b"more")  # anything after the body passes straight through
    assert await _received(client, 4) == b"more"


async def test_a_100_continue_and_a_streamed_head_are_written_at_once(
    connection: tuple[HeadWithBody, socket.socket],
) -> None:
    transport, client = connection
    transport.write(CONTINUE)
    assert await _received(client, len(CONTINUE)) == CONTINUE
    transport.write(CHUNKED_HEAD)  # an event stream's head must not wait for its first event
    assert await _received(client, len(CHUNKED_HEAD)) == CHUNKED_HEAD


async def test_closing_after_a_head_without_its_body_still_sends_the_head(
    connection: tuple[HeadWithBody, socket.socket],
) -> None:
    transport, client = connection
    transport.write(HEAD)
    assert _nothing_yet(client)
    transport.close()
    assert await _received(client, len(HEAD)) == HEAD
    assert transport.is_closing()
