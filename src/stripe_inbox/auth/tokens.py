"""The SDK's code and token shapes, each with the consent (grant) it descends from and its public id."""

from __future__ import annotations

from mcp.server.auth.provider import AccessToken, AuthorizationCode, RefreshToken


class InboxAuthorizationCode(AuthorizationCode):
    grant_id: str


class InboxAccessToken(AccessToken):
    token_id: str
    grant_id: str


class InboxRefreshToken(RefreshToken):
    token_id: str
    grant_id: str
