"""The callbacks subscriptions POST to: which URLs are allowed (https to public addresses, checked before connecting
and on the address connected to; plain http only to the literal 127.0.0.1 or [::1] while `serve` itself is on
loopback), the signed request (Standard Webhooks headers plus X-MCP-Subscription-Id, to the URL exactly as given,
no redirects) and the verification whose challenge must be echoed."""

from __future__ import annotations

import ipaddress
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from ..auth.public_network import PolicedTransport, RefusedAddress, is_public
from ..errors import InvalidArgument
from ..settings import LOOPBACK_HOSTS

MAX_BODY_BYTES = 256 * 1024
MAX_URL_CHARS = 2048
LOOPBACK_LITERALS = frozenset({"127.0.0.1", "::1"})
CONNECTIONS = 64  # to all callbacks at once, per kind (public, loopback)
ERROR_BODY_CHARS = 200
USER_AGENT = "stripe-inbox (MCP Events webhook)"


class CallbackFailed(Exception):
    """The callback did not accept a verification: `reason` says why, for `data.reason` of -32015."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Answer:
    """How a callback answered one POST; status None: no answer (refused, unreachable, timed out)."""

    status: int | None
    body: bytes
    error: str | None  # None for a 2xx

    @property
    def ok(self) -> bool:
        return self.error is None


def check_callback_url(url: object, loopback_http: bool) -> str:
    """The callback URL, unchanged, when the policy allows it; InvalidArgument naming what is wrong."""
    if not isinstance(url, str) or not url:
        raise InvalidArgument("delivery.url must be a non-empty string")
    if len(url) > MAX_URL_CHARS:
        raise InvalidArgument(f"delivery.url is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as error:
        raise InvalidArgument(f"delivery.url does not parse: {error}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidArgument("delivery.url must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("delivery.url must not carry credentials (user:password@)")
    if parts.fragment or url.endswith("#"):
        raise InvalidArgument("delivery.url must not have a #fragment")
    if parts.scheme == "http":
        if parts.hostname not in LOOPBACK_LITERALS:
            raise InvalidArgument("delivery.url must be https://; plain http is allowed only to 127.0.0.1 or [::1]")
        if not loopback_http:
            raise InvalidArgument(
                "delivery.url: plain http to loopback is allowed only while the server itself listens on loopback "
                "with no public_url; use https://"
            )
        return url
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url
    if not is_public(literal):
        raise InvalidArgument(f"delivery.url: {literal} is not a public address")
    return url


def loopback_only(bound_host: str, public_url: str | None) -> bool:
    """Whether `serve`, bound to `bound_host`, is reachable from this machine alone: only then may callbacks be
    plain http to loopback (a client on another machine could otherwise aim the server at this one's ports)."""
    try:
        bound = ipaddress.ip_address(bound_host).is_loopback
    except ValueError:
        return False
    public = urlsplit(public_url).hostname if public_url else None
    return bound and (public is None or public in LOOPBACK_HOSTS)


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_loopback


class Callbacks:
    """The HTTP clients every POST to a callback goes through: one policed for public addresses, one for the
    loopback addresses plain http may reach."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout = timeout_seconds
        self._public = _client(PolicedTransport(is_public, CONNECTIONS), timeout_seconds)
        self._loopback = _client(PolicedTransport(_is_loopback, CONNECTIONS), timeout_seconds)

    async def aclose(self) -> None:
        await self._public.aclose()
        await self._loopback.aclose()

    async def post(self, url: str, secret: str, subscription_id: str, message_id: str, body: bytes) -> Answer:
        """POST `body` signed with `secret` (its `webhook-id` = `message_id`) to `url` exactly as given."""
        headers = signed_headers(secret, subscription_id, message_id, body)
        client = self._loopback if urlsplit(url).scheme == "http" else self._public
        try:
            response = await client.post(httpx.URL(url), content=body, headers=headers)
        except RefusedAddress as error:
            return Answer(None, b"", f"refused: {error}")
        except httpx.TimeoutException:
            return Answer(None, b"", f"timed out after {self.timeout:g} s")
        except httpx.HTTPError as error:
            return Answer(None, b"", f"no answer: {type(error).__name__}")
        if 200 <= response.status_code < 300:
            return Answer(response.status_code, response.content, None)
        text = response.content[:ERROR_BODY_CHARS].decode("utf-8", "replace")
        return Answer(response.status_code, response.content, f"HTTP {response.status_code}: {text}")

    async def verify(self, url: str, secret: str, subscription_id: str) -> None:
        """The signed verification POST; its challenge must come back. CallbackFailed says why it did not."""
        challenge = secrets.token_urlsafe(24)
        body = orjson.dumps({"type": "verification", "challenge": challenge})
        answer = await self.post(url, secret, subscription_id, f"msg_verify_{secrets.token_hex(8)}", body)
        if answer.status is None:
            reason = "address_refused" if (answer.error or "").startswith("refused") else "unreachable"
            raise CallbackFailed(reason, f"the callback could not be reached for verification: {answer.error}")
        if not answer.ok:
            raise CallbackFailed("http_status", f"the callback answered the verification with HTTP {answer.status}")
        try:
            echoed: Any = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            raise CallbackFailed("bad_echo", "the callback's answer to the verification is not JSON") from None
        if not isinstance(echoed, dict) or echoed.get("challenge") != challenge:
            raise CallbackFailed("challenge_mismatch", "the callback did not echo the verification's challenge")


def signed_headers(secret: str, subscription_id: str, message_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers over `body`, plus X-MCP-Subscription-Id."""
    now = datetime.fromtimestamp(int(time.time()), UTC)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body.decode()),
        "X-MCP-Subscription-Id": subscription_id,
    }


def _client(transport: httpx.AsyncBaseTransport, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, timeout=timeout)
