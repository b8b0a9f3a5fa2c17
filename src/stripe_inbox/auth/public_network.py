"""Outbound HTTP to addresses on the public internet only, for fetches that anyone can point this server at (client
ID metadata documents): never loopback, private, link-local, shared (CGNAT), multicast or reserved ranges. The
check happens where the socket connects, on the address actually connected to, so a name that resolves to a
public address when asked and a private one a moment later (DNS rebinding) gains nothing."""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Callable, Iterable

import anyio
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]


def is_public(address: IPAddress) -> bool:
    """Whether `address` is a unicast address on the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 wrapped in IPv6 (mapped, 6to4, Teredo) may reach the IPv4 address it carries: refused outright.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


class RefusedAddress(httpcore.ConnectError):
    """A connection this policy does not allow; httpx reports it as a ConnectError."""


class PolicedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with every TCP connection checked against `permit`: the name is resolved here,
    each address checked, and the peer of the socket checked again once connected. TLS still verifies the
    certificate against the name, which httpcore passes separately."""

    def __init__(self, permit: AddressPolicy = is_public) -> None:
        self.permit = permit
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port)
        refused = [address for address in addresses if not self.permit(address)]
        if refused:
            raise RefusedAddress(f"{host} resolves to {refused[0]}, which is not a public address")
        error: Exception = RefusedAddress(f"{host} has no address")
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as failed:
                error = failed
                continue
            peer = ipaddress.ip_address(stream.get_extra_info("server_addr")[0])
            if not self.permit(peer):
                await stream.aclose()
                raise RefusedAddress(f"{host} connected to {peer}, which is not a public address")
            return stream
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("unix sockets are not on the public internet")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise httpcore.ConnectError(f"{host} could not be resolved: {error}") from error
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class PolicedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over PolicedBackend; no proxy from the environment (it would be the peer instead)."""

    def __init__(self, permit: AddressPolicy = is_public, max_connections: int = 4) -> None:
        super().__init__(retries=0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=PolicedBackend(permit),
            max_connections=max_connections,
        )
