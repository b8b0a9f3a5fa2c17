"""POST over kept-alive HTTP/1.1 connections to one URL, for forwarding. httpx cost ~1.6 ms of the event loop's CPU
per request here (its pool looks at every connection for each request), which the ingress shares; this does what a
forward needs in a tenth of that: one request line, a few headers, a response read by Content-Length or chunks.
No redirects are followed: Stripe counts a 3xx as a failure, and so do forwards."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
KEPT_BODY_BYTES = 1024  # of an answer's body; the rest is read and dropped


class PostFailed(Exception):
    """No answer: the connection failed or broke before a response came."""


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Poster:
    """Connections to one URL's origin, reused while the server keeps them open; one request per connection at a
    time (the caller bounds how many run at once)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        default = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default else f"{host}:{self.port}"
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._idle: list[Connection] = []
        self._tls_context = ssl.create_default_context() if self.tls else None

    async def post(self, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
        """The status code and the start of the body; PostFailed or TimeoutError when no answer came."""
        head = [f"POST {self.target} HTTP/1.1", f"Host: {self.host_header}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        async with asyncio.timeout(timeout):
            while self._idle:  # a kept-alive connection the server may have closed meanwhile: then try another
                connection = self._idle.pop()
                try:
                    return await self._exchange(connection, request, reused=True)
                except _Stale:
                    continue
            try:
                connection = await asyncio.open_connection(self.host, self.port, ssl=self._tls_context)
            except OSError as error:
                raise PostFailed(f"cannot connect: {type(error).__name__}") from None
            return await self._exchange(connection, request, reused=False)

    async def _exchange(self, connection: Connection, request: bytes, reused: bool) -> tuple[int, bytes]:
        reader, writer = connection
        answered = False
        try:
            writer.write(request)
            await writer.drain()
            status, fields = await _read_head(reader)
            answered = True
            kept = await _read_body(reader, fields, status)
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            writer.close()
            if reused and not answered:
                raise _Stale from None
            raise PostFailed(f"connection broken: {type(error).__name__}") from None
        except BaseException:  # a timeout or cancellation mid-exchange leaves the connection unusable
            writer.close()
            raise
        if fields.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append(connection)
        return status, kept

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class _Stale(Exception):
    pass


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    while True:  # a 1xx (100 Continue) comes before the real answer
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            raise ValueError("response head too large")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError("not an HTTP/1.x response")
        status = int(rest[:3])
        fields = {}
        for line in lines:
            name, _, value = line.partition(":")
            if name:
                fields[name.strip().lower()] = value.strip()
        if status >= 200:
            return status, fields


async def _read_body(reader: asyncio.StreamReader, fields: dict[str, str], status: int) -> bytes:
    if status in (204, 304):
        return b""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        kept = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16):
            chunk = await reader.readexactly(size + 2)
            kept += chunk[: max(0, KEPT_BODY_BYTES - len(kept))]
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        return kept[:KEPT_BODY_BYTES]
    if "content-length" in fields:
        return (await reader.readexactly(int(fields["content-length"])))[:KEPT_BODY_BYTES]
    fields["connection"] = "close"  # neither: the body runs until the server closes
    return (await reader.read())[:KEPT_BODY_BYTES]
