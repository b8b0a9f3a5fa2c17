"""`serve` as an OAuth 2.1 authorization server for its own `/mcp`: the SDK's provider protocol over the inbox's
database. The SDK's handlers check requests (PKCE S256, exact redirect URIs, expiry); this decides who the
clients are, sends each authorization to the operator's consent page, and issues, rotates and revokes tokens."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mcp.server.auth.provider import (
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from ..settings import LOOPBACK_HOSTS
from ..stores import Store
from ..stores.oauth_records import NewOAuthToken, TokenKind
from .client_documents import ClientDocuments
from .minting import (
    ACCESS_TOKEN_PREFIX,
    CODE_PREFIX,
    CONSENT_PREFIX,
    REFRESH_TOKEN_PREFIX,
    digest,
    grant_id,
    mint,
    public_id,
)
from .scopes import SCOPES, granted
from .tokens import InboxAccessToken, InboxAuthorizationCode, InboxRefreshToken

logger = logging.getLogger(__name__)

# Under the dashboard's path, so that the browser brings the dashboard's session cookie (Path=/ui) along.
CONSENT_PATH = "/ui/oauth/consent"
CONSENT_SECONDS = 600  # for the operator to sign in and decide
CODE_SECONDS = 300
ACCESS_TOKEN_SECONDS = 3600
REFRESH_TOKEN_SECONDS = 30 * 86400
LAST_USE_RESOLUTION_SECONDS = 60  # last use is recorded at most this often per token, not on every request


@dataclass(frozen=True)
class ConsentRequest:
    """What the consent page shows: which client asks, for which scopes, to be sent back where."""

    client: OAuthClientInformationFull
    params: AuthorizationParams

    @property
    def client_name(self) -> str:
        return self.client.client_name or self.client.client_id


class InboxAuthProvider(OAuthAuthorizationServerProvider[InboxAuthorizationCode, InboxRefreshToken, InboxAccessToken]):
    def __init__(self, store: Store, public_url: str) -> None:
        self.store = store
        self.issuer = public_url
        self.resource = f"{public_url}/mcp"
        self.documents = ClientDocuments()

    # -- clients ---------------------------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if self.documents.names_document(client_id):
            return await self.documents.client(client_id)
        metadata = await self.store.oauth_client(client_id)
        return OAuthClientInformationFull.model_validate_json(metadata) if metadata else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        for uri in client_info.redirect_uris or []:
            if uri.scheme in ("javascript", "data", "file") or (
                uri.scheme == "http" and uri.host not in (*LOOPBACK_HOSTS, "[::1]")
            ):
                raise RegistrationError("invalid_redirect_uri", f"{uri.scheme}: redirect URIs are not accepted here")
        # Every client is public: a secret could only be checked here by keeping it in clear, which this server
        # does not do with secrets, and PKCE (required of all) is what ties a code to the client that asked.
        # RFC 7591 §3.2.1 lets the server replace requested metadata; the SDK answers with this very object.
        client_info.token_endpoint_auth_method = "none"
        client_info.client_secret = None
        client_info.client_secret_expires_at = None
        await self.store.add_oauth_client(client_info.client_id, client_info.model_dump_json(), time.time())
        logger.info("OAuth client registered: %s (%r)", client_info.client_id, client_info.client_name)

    # -- authorization ---------------------------------------------------------------------------

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        """Park the request and send the person to the consent page."""
        if params.resource is not None and params.resource.rstrip("/") != self.resource:
            raise AuthorizeError("invalid_target", f"this server issues tokens for {self.resource} only")
        asked = params.scopes or (client.scope.split() if client.scope else list(SCOPES))
        unknown = [scope for scope in asked if scope not in SCOPES]
        if unknown:
            raise AuthorizeError("invalid_scope", f"unknown scope {unknown[0]}; this server knows {' '.join(SCOPES)}")
        parked = params.model_copy(update={"scopes": granted(asked), "resource": self.resource})
        request_id = mint(CONSENT_PREFIX)
        await self.store.add_oauth_request(
            digest(request_id), client.client_id, parked.model_dump_json(), time.time() + CONSENT_SECONDS
        )
        return construct_redirect_uri(f"{self.issuer}{CONSENT_PATH}", request=request_id)

    async def consent_request(self, request_id: str) -> ConsentRequest | None:
        """The parked request, while it waits for an answer."""
        parked = await self.store.oauth_request(digest(request_id), time.time())
        if parked is None:
            return None
        client = await self.get_client(parked.client_id)
        return ConsentRequest(client, AuthorizationParams.model_validate_json(parked.params)) if client else None

    async def answer(self, request_id: str, allow: bool, read_only: bool = False) -> str | None:
        """The operator's answer: where to send the person next (the client's redirect URI with a code, or with
        `access_denied`), or None when the request is unknown, expired or answered already."""
        now = time.time()
        parked = await self.store.take_oauth_request(digest(request_id), now)
        client = await self.get_client(parked.client_id) if parked else None
        if parked is None or client is None:
            return None
        params = AuthorizationParams.model_validate_json(parked.params)
        if not allow:
            logger.info("OAuth consent denied to %s", client.client_id)
            return self._back_to_client(params, error="access_denied")
        scopes = granted([] if read_only else params.scopes or [])
        code = mint(CODE_PREFIX)
        authorization = AuthorizationCode(
            code="",
            scopes=scopes,
            expires_at=now + CODE_SECONDS,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=self.resource,
        )
        await self.store.add_oauth_code(
            digest(code), client.client_id, grant_id(), authorization.model_dump_json(), authorization.expires_at
        )
        logger.info("OAuth consent given to %s for %s", client.client_id, " ".join(scopes))
        return self._back_to_client(params, code=code)

    def _back_to_client(self, params: AuthorizationParams, **answer: str) -> str:
        # `iss` (RFC 9207) tells the client which server answered, against mix-up attacks.
        return construct_redirect_uri(str(params.redirect_uri), **answer, state=params.state, iss=self.issuer)

    # -- codes -----------------------------------------------------------------------------------

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> InboxAuthorizationCode | None:
        stored = await self.store.oauth_code(digest(authorization_code))
        if stored is None or stored.client_id != client.client_id:
            return None
        if stored.used_at is not None:
            # A code presented twice was seen by someone else: what it bought is revoked (RFC 6749 §4.1.2).
            revoked = await self.store.revoke_oauth_grant(stored.grant_id, time.time())
            logger.warning("OAuth code replayed by %s; revoked %d tokens", client.client_id, revoked)
            return None
        parked = AuthorizationCode.model_validate_json(stored.params)
        return InboxAuthorizationCode(
            **{**parked.model_dump(), "code": authorization_code, "grant_id": stored.grant_id}
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: InboxAuthorizationCode
    ) -> OAuthToken:
        tokens, issued = self._pair(client, authorization_code.grant_id, authorization_code.scopes)
        if not await self.store.redeem_oauth_code(digest(authorization_code.code), time.time(), issued):
            raise TokenError("invalid_grant", "authorization code was already used or has expired")
        return tokens

    # -- tokens ----------------------------------------------------------------------------------

    async def load_access_token(self, token: str) -> InboxAccessToken | None:
        if not token.startswith(ACCESS_TOKEN_PREFIX):
            return None
        stored = await self.store.oauth_token(digest(token))
        now = time.time()
        if stored is None or stored.kind != "access" or not stored.usable(now):
            return None
        if stored.last_used_at is None or now - stored.last_used_at >= LAST_USE_RESOLUTION_SECONDS:
            await self.store.touch_oauth_token(stored.id, now)
        return InboxAccessToken(
            token=token,
            client_id=stored.client_id,
            scopes=list(stored.scopes),
            expires_at=int(stored.expires_at),
            resource=stored.resource,
            token_id=stored.id,
            grant_id=stored.grant_id,
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> InboxRefreshToken | None:
        if not refresh_token.startswith(REFRESH_TOKEN_PREFIX):
            return None
        stored = await self.store.oauth_token(digest(refresh_token))
        now = time.time()
        if stored is None or stored.kind != "refresh" or stored.client_id != client.client_id:
            return None
        if stored.rotated_at is not None and stored.revoked_at is None:
            # A refresh token used again after it was rotated has two holders: end the grant for both.
            revoked = await self.store.revoke_oauth_grant(stored.grant_id, now)
            logger.warning("OAuth refresh token reused by %s; revoked %d tokens", client.client_id, revoked)
            return None
        if not stored.usable(now):
            return None
        return InboxRefreshToken(
            token=refresh_token,
            client_id=stored.client_id,
            scopes=list(stored.scopes),
            expires_at=int(stored.expires_at),
            resource=stored.resource,
            token_id=stored.id,
            grant_id=stored.grant_id,
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: InboxRefreshToken, scopes: list[str]
    ) -> OAuthToken:
        tokens, issued = self._pair(client, refresh_token.grant_id, granted(scopes))
        if not await self.store.rotate_oauth_refresh_token(digest(refresh_token.token), time.time(), issued):
            raise TokenError("invalid_grant", "refresh token is no longer valid")
        return tokens

    async def revoke_token(self, token: InboxAccessToken | InboxRefreshToken) -> None:
        revoked = await self.store.revoke_oauth_grant(token.grant_id, time.time())
        logger.info("OAuth tokens of %s revoked by the client: %d", token.client_id, revoked)

    def _pair(
        self, client: OAuthClientInformationFull, grant_id: str, scopes: list[str]
    ) -> tuple[OAuthToken, list[NewOAuthToken]]:
        now = time.time()
        access, refresh = mint(ACCESS_TOKEN_PREFIX), mint(REFRESH_TOKEN_PREFIX)
        lifetimes: list[tuple[str, TokenKind, int]] = [
            (access, "access", ACCESS_TOKEN_SECONDS),
            (refresh, "refresh", REFRESH_TOKEN_SECONDS),
        ]
        issued = [
            NewOAuthToken(
                id=public_id(),
                token_hash=digest(secret),
                kind=kind,
                grant_id=grant_id,
                client_id=client.client_id,
                client_name=client.client_name,
                scopes=tuple(scopes),
                resource=self.resource,
                created_at=now,
                expires_at=now + lifetime,
            )
            for secret, kind, lifetime in lifetimes
        ]
        tokens = OAuthToken(
            access_token=access, expires_in=ACCESS_TOKEN_SECONDS, scope=" ".join(scopes), refresh_token=refresh
        )
        return tokens, issued
