"""How `/mcp` is protected: not at all (loopback without a token), by the static access token alone, or, with
`public_url`, as an OAuth 2.1 protected resource whose tokens this server issues, the static token still
accepted beside them."""

from __future__ import annotations

from dataclasses import dataclass

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings

from ..settings import Settings
from ..stores import Store
from .provider import InboxAuthProvider


@dataclass(frozen=True)
class Protection:
    verifier: TokenVerifier
    settings: AuthSettings
    provider: InboxAuthProvider | None  # the authorization server, when there is one


class EitherToken:
    """The static access token, else a token the authorization server issued."""

    def __init__(self, static: TokenVerifier, provider: InboxAuthProvider) -> None:
        self.static = static
        self.provider = provider

    async def verify_token(self, token: str) -> AccessToken | None:
        return await self.static.verify_token(token) or await self.provider.load_access_token(token)


def protection(settings: Settings, store: Store, static: TokenVerifier | None) -> Protection | None:
    if static is None:
        return None
    if settings.public_url is None:
        # One shared bearer token and no OAuth server; the issuer is a required placeholder.
        return Protection(static, AuthSettings(issuer_url="http://127.0.0.1", resource_server_url=None), None)
    provider = InboxAuthProvider(store, settings.public_url)
    auth = AuthSettings(
        issuer_url=settings.public_url,
        # What the 401's WWW-Authenticate points clients to (RFC 9728).
        resource_server_url=f"{settings.public_url}/mcp",
        # Every token this server issues is bound to its /mcp at issuance, and the static token is its own.
        validate_token_resource=False,
    )
    return Protection(EitherToken(static, provider), auth, provider)
