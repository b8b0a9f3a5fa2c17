"""OAuth (issue #18): clients, consent requests, codes and tokens; secrets only as digests."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .area import AreaStore
from .connector import Transaction
from .interface import Audit
from .journal import record_audit
from .oauth_records import OAUTH_TOKEN_COLUMNS, NewOAuthToken, OAuthCode, OAuthRequest, OAuthToken, oauth_token

# A used authorization code is remembered this long past its expiry, so a replay is still told apart (and
# revokes what the code bought) rather than looking like a code that never existed.
CODE_REPLAY_MEMORY_SECONDS = 3600.0


class OAuthStore(AreaStore):
    async def add_oauth_client(self, client_id: str, metadata: str, at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO oauth_clients (client_id, metadata, registered_at) VALUES (?, ?, ?)",
                client_id,
                metadata,
                at,
            )

    async def oauth_client(self, client_id: str) -> str | None:
        """A registered client's metadata (JSON), or None."""
        rows = await self.db.fetch("SELECT metadata FROM oauth_clients WHERE client_id = ?", client_id)
        return str(rows[0][0]) if rows else None

    async def prune_oauth_clients(self, registered_before: float) -> int:
        """Forget registered clients that never got a token and registered before then; how many. Registration
        is open to anyone, so what nobody used must not stay."""
        async with self.db.transaction() as tx:
            pruned = await tx.fetch(
                "DELETE FROM oauth_clients WHERE registered_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM oauth_tokens WHERE oauth_tokens.client_id = oauth_clients.client_id) "
                "RETURNING client_id",
                registered_before,
            )
        return len(pruned)

    async def add_oauth_request(self, request_hash: str, client_id: str, params: str, expires_at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM oauth_requests WHERE expires_at < ?", time.time())
            await tx.execute(
                "INSERT INTO oauth_requests (request_hash, client_id, params, expires_at) VALUES (?, ?, ?, ?)",
                request_hash,
                client_id,
                params,
                expires_at,
            )

    async def oauth_request(self, request_hash: str, now: float) -> OAuthRequest | None:
        rows = await self.db.fetch(
            "SELECT client_id, params, expires_at FROM oauth_requests WHERE request_hash = ? AND expires_at > ?",
            request_hash,
            now,
        )
        return OAuthRequest(str(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None

    async def take_oauth_request(self, request_hash: str, now: float) -> OAuthRequest | None:
        """The request, removed, so that one consent answers it once; None when unknown, answered or expired."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "DELETE FROM oauth_requests WHERE request_hash = ? RETURNING client_id, params, expires_at",
                request_hash,
            )
        if not rows or float(rows[0][2]) <= now:
            return None
        return OAuthRequest(str(rows[0][0]), str(rows[0][1]), float(rows[0][2]))

    async def add_oauth_code(
        self, code_hash: str, client_id: str, grant_id: str, params: str, expires_at: float
    ) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM oauth_codes WHERE expires_at < ?", time.time() - CODE_REPLAY_MEMORY_SECONDS)
            await tx.execute(
                "INSERT INTO oauth_codes (code_hash, client_id, grant_id, params, expires_at) VALUES (?, ?, ?, ?, ?)",
                code_hash,
                client_id,
                grant_id,
                params,
                expires_at,
            )

    async def oauth_code(self, code_hash: str) -> OAuthCode | None:
        rows = await self.db.fetch(
            "SELECT client_id, grant_id, params, expires_at, used_at FROM oauth_codes WHERE code_hash = ?", code_hash
        )
        if not rows:
            return None
        client_id, grant_id, params, expires_at, used_at = rows[0]
        return OAuthCode(str(client_id), str(grant_id), str(params), float(expires_at), used_at)

    async def redeem_oauth_code(self, code_hash: str, at: float, tokens: Sequence[NewOAuthToken]) -> bool:
        """Use the code up and store the tokens it buys, together; False (and nothing stored) when the code
        is unknown, expired or already used."""
        async with self.db.transaction() as tx:
            used = await tx.fetch(
                "UPDATE oauth_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL AND expires_at > ? "
                "RETURNING code_hash",
                at,
                code_hash,
                at,
            )
            if not used:
                return False
            await _add_oauth_tokens(tx, tokens)
        return True

    async def oauth_token(self, token_hash: str) -> OAuthToken | None:
        """The token with this digest, whatever its state."""
        rows = await self.db.fetch(f"SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE token_hash = ?", token_hash)
        return oauth_token(rows[0]) if rows else None

    async def rotate_oauth_refresh_token(self, token_hash: str, at: float, tokens: Sequence[NewOAuthToken]) -> bool:
        """Retire a usable refresh token and its grant's access tokens, and store the next pair, together;
        False (and nothing changed) when it is not usable."""
        async with self.db.transaction() as tx:
            retired = await tx.fetch(
                "UPDATE oauth_tokens SET rotated_at = ? WHERE token_hash = ? AND kind = 'refresh' "
                "AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > ? RETURNING grant_id",
                at,
                token_hash,
                at,
            )
            if not retired:
                return False
            await tx.execute(
                "UPDATE oauth_tokens SET revoked_at = ? WHERE grant_id = ? AND kind = 'access' AND revoked_at IS NULL",
                at,
                retired[0][0],
            )
            await _add_oauth_tokens(tx, tokens)
        return True

    async def touch_oauth_token(self, token_id: str, at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE oauth_tokens SET last_used_at = ? WHERE id = ?", at, token_id)

    async def revoke_oauth_grant(self, grant_id: str, at: float, audit: Audit | None = None) -> int:
        """Revoke every token descending from one consent; how many of them were still usable. With `audit`,
        the revocation is in the audit trail, written in the same transaction."""
        async with self.db.transaction() as tx:
            revoked = await tx.fetch(
                "UPDATE oauth_tokens SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL "
                "RETURNING rotated_at, expires_at",
                at,
                grant_id,
            )
            usable = sum(1 for rotated_at, expires_at in revoked if rotated_at is None and expires_at > at)
            if audit is not None:
                await record_audit(tx, at, audit, None, {"grant_id": grant_id, "revoked": usable})
        return usable

    async def revoke_oauth_token(self, token_id: str, at: float, audit: Audit | None = None) -> int | None:
        """Revoke the token with this public id and the rest of its grant (the client loses access, not one of
        its two tokens); None when no token has this id."""
        rows = await self.db.fetch("SELECT grant_id FROM oauth_tokens WHERE id = ?", token_id)
        return await self.revoke_oauth_grant(str(rows[0][0]), at, audit) if rows else None

    async def oauth_tokens(self, now: float | None = None) -> list[OAuthToken]:
        """The tokens still usable at `now`, newest first; every token ever issued when `now` is None. What
        `stripe-inbox tokens list` prints and a tokens page of the dashboard can render."""
        if now is None:
            rows = await self.db.fetch(f"SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens ORDER BY created_at DESC")
        else:
            rows = await self.db.fetch(
                f"SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE revoked_at IS NULL AND rotated_at IS NULL "
                "AND expires_at > ? ORDER BY created_at DESC",
                now,
            )
        return [oauth_token(row) for row in rows]


async def _add_oauth_tokens(tx: Transaction, tokens: Sequence[NewOAuthToken]) -> None:
    for token in tokens:
        await tx.execute(
            "INSERT INTO oauth_tokens (id, token_hash, kind, grant_id, client_id, client_name, scopes, resource, "
            "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            token.id,
            token.token_hash,
            token.kind,
            token.grant_id,
            token.client_id,
            token.client_name,
            " ".join(token.scopes),
            token.resource,
            token.created_at,
            token.expires_at,
        )
