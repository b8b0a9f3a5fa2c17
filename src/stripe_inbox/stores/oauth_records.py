"""The shapes the store speaks OAuth in: a consent request, an authorization code, an issued token. Each
secret (code, token, request id) appears only as its SHA-256 digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .connector import Row

TokenKind = Literal["access", "refresh"]


@dataclass(frozen=True, slots=True)
class OAuthRequest:
    """An authorization request waiting for the operator to allow or deny it."""

    client_id: str
    params: str  # the SDK's AuthorizationParams as JSON
    expires_at: float


@dataclass(frozen=True, slots=True)
class OAuthCode:
    client_id: str
    grant_id: str
    params: str  # the SDK's AuthorizationCode as JSON, its `code` field blank
    expires_at: float
    used_at: float | None


@dataclass(frozen=True, slots=True)
class NewOAuthToken:
    id: str  # public: what `tokens list` shows and `tokens revoke` takes
    token_hash: str
    kind: TokenKind
    grant_id: str  # the consent it descends from: the code's tokens and every rotation after
    client_id: str
    client_name: str | None
    scopes: tuple[str, ...]
    resource: str | None
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class OAuthToken:
    """An issued token as the operator sees it: never the token itself."""

    id: str
    kind: TokenKind
    grant_id: str
    client_id: str
    client_name: str | None
    scopes: tuple[str, ...]
    resource: str | None
    created_at: float
    expires_at: float
    last_used_at: float | None
    rotated_at: float | None  # a refresh token that was exchanged for the next pair
    revoked_at: float | None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and self.rotated_at is None and self.expires_at > now

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.rotated_at is not None:
            return "rotated"
        return "usable" if self.expires_at > now else "expired"


OAUTH_TOKEN_COLUMNS = (
    "id, kind, grant_id, client_id, client_name, scopes, resource, created_at, expires_at, last_used_at, "
    "rotated_at, revoked_at"
)


def oauth_token(row: Row) -> OAuthToken:
    (
        token_id,
        kind,
        grant_id,
        client_id,
        client_name,
        scopes,
        resource,
        created_at,
        expires_at,
        last_used_at,
        rotated_at,
        revoked_at,
    ) = row
    return OAuthToken(
        id=str(token_id),
        kind="refresh" if kind == "refresh" else "access",
        grant_id=str(grant_id),
        client_id=str(client_id),
        client_name=None if client_name is None else str(client_name),
        scopes=tuple(str(scopes).split()),
        resource=None if resource is None else str(resource),
        created_at=float(created_at),
        expires_at=float(expires_at),
        last_used_at=_optional_float(last_used_at),
        rotated_at=_optional_float(rotated_at),
        revoked_at=_optional_float(revoked_at),
    )


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)
