"""Client ID metadata documents: a client whose `client_id` is an HTTPS URL is described by the JSON document at
that URL, fetched when it first asks, instead of registering. The SDK's client speaks this; its server does not
resolve such ids, so this does."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import httpx
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from ..settings import LOOPBACK_HOSTS
from .scopes import SCOPES

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 64 * 1024
CACHE_SECONDS = 300.0
MAX_CACHED = 512


class ClientDocuments:
    """Resolves document-URL client ids, keeping each answer a few minutes (a flow asks for its client three or
    four times). Plain HTTP is accepted only for loopback documents, and only when `serve` itself is on
    loopback (tests, local tools)."""

    def __init__(self, allow_loopback_http: bool) -> None:
        self.allow_loopback_http = allow_loopback_http
        self._cache: dict[str, tuple[float, OAuthClientInformationFull]] = {}

    def names_document(self, client_id: str) -> bool:
        url = urlsplit(client_id)
        if url.path in ("", "/") or url.query or url.fragment or not url.hostname:
            return False
        if url.scheme == "https":
            return True
        return self.allow_loopback_http and url.scheme == "http" and url.hostname in LOOPBACK_HOSTS

    async def client(self, url: str) -> OAuthClientInformationFull | None:
        """The client the document at `url` describes, or None when it cannot be fetched or does not qualify."""
        cached = self._cache.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        client = await self._fetch(url)
        if client is not None:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[url] = (time.monotonic() + CACHE_SECONDS, client)
        return client

    async def _fetch(self, url: str) -> OAuthClientInformationFull | None:
        try:
            # No redirects: the document must live at the URL that names the client.
            async with (
                httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as http,
                http.stream("GET", url, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    logger.warning("client metadata document %s answered HTTP %s", url, response.status_code)
                    return None
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        logger.warning("client metadata document %s is larger than %d bytes", url, MAX_DOCUMENT_BYTES)
                        return None
        except httpx.HTTPError as error:
            logger.warning("client metadata document %s could not be fetched: %s", url, type(error).__name__)
            return None
        return _client_from(url, body)


def _client_from(url: str, body: bytes) -> OAuthClientInformationFull | None:
    try:
        client = OAuthClientInformationFull.model_validate_json(body)
    except ValidationError:
        logger.warning("client metadata document %s is not valid client metadata", url)
        return None
    if client.client_id != url:
        logger.warning("client metadata document %s names another client_id", url)
        return None
    # Nobody can hold a secret shared through a public document, and there is no key here to check a signed
    # assertion with: such a client is public, and PKCE is what binds its code to it.
    if client.token_endpoint_auth_method not in (None, "none") or client.client_secret is not None:
        logger.warning("client metadata document %s asks for client authentication this server lacks", url)
        return None
    if not client.redirect_uris:
        logger.warning("client metadata document %s lists no redirect_uris", url)
        return None
    return client.model_copy(update={"token_endpoint_auth_method": "none", "scope": client.scope or " ".join(SCOPES)})
