"""Client ID metadata documents: a client whose `client_id` is an HTTPS URL is described by the JSON document at
that URL, fetched when it first asks, instead of registering. The SDK's client speaks this; its server does not
resolve such ids, so this does. Anyone can make this server fetch such a URL, so the fetch goes to public
addresses only (public_network), within one deadline for all of it, and every answer, failures too, is kept a
few minutes."""

from __future__ import annotations

import logging
import time
from urllib.parse import SplitResult, urlsplit

import anyio
import httpx
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from .public_network import AddressPolicy, PolicedTransport, is_public
from .scopes import SCOPES

logger = logging.getLogger(__name__)

DEADLINE_SECONDS = 5.0  # the whole fetch: resolving, connecting, TLS, headers and every byte of the body
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_CLIENT_ID_CHARS = 2048
CACHE_SECONDS = 300.0  # an answer, and a failure alike
MAX_CACHED = 512
MAX_CONCURRENT_FETCHES = 4


class ClientDocuments:
    """Resolves document-URL client ids, keeping each answer a few minutes (a flow asks for its client three or
    four times). `permit` and `schemes` are seams for tests, which serve documents from loopback over plain
    HTTP; nothing in the configuration reaches them."""

    def __init__(self, permit: AddressPolicy = is_public, schemes: tuple[str, ...] = ("https",)) -> None:
        self.permit = permit
        self.schemes = schemes
        self._cache: dict[str, tuple[float, OAuthClientInformationFull | None]] = {}
        self._fetching = anyio.Semaphore(MAX_CONCURRENT_FETCHES)

    def names_document(self, client_id: str) -> bool:
        """Whether `client_id` is a URL this server would fetch a document from."""
        url = _url(client_id)
        if url is None or url.scheme not in self.schemes:
            return False
        return url.path not in ("", "/") and not url.query and not url.fragment and url.username is None

    async def client(self, url: str) -> OAuthClientInformationFull | None:
        """The client the document at `url` describes, or None when it cannot be fetched or does not qualify."""
        cached = self._cache.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        client = await self._fetch(url)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[url] = (time.monotonic() + CACHE_SECONDS, client)
        return client

    async def _fetch(self, url: str) -> OAuthClientInformationFull | None:
        try:
            with anyio.fail_after(DEADLINE_SECONDS):
                async with self._fetching:
                    body = await self._download(url)
        except TimeoutError:
            logger.warning("client metadata document %s took longer than %gs", url, DEADLINE_SECONDS)
            return None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            logger.warning("client metadata document %s could not be fetched: %s", url, error)
            return None
        return _client_from(url, body) if body is not None else None

    async def _download(self, url: str) -> bytes | None:
        # No redirects: the document must live at the URL that names the client. No proxy from the environment.
        async with (
            httpx.AsyncClient(transport=PolicedTransport(self.permit), follow_redirects=False, trust_env=False) as http,
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
        return body


def _url(client_id: str) -> SplitResult | None:
    """`client_id` as a URL with a host, or None for anything malformed (which is then no document's name)."""
    if len(client_id) > MAX_CLIENT_ID_CHARS or not client_id.isprintable() or " " in client_id:
        return None
    try:
        url = urlsplit(client_id)
        _ = url.port  # raises for a port that is not a number in range
        host = url.hostname
    except ValueError:
        return None
    return url if host else None


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
