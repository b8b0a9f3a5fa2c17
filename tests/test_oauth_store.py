"""The store's OAuth methods on SQLite and PostgreSQL: a code buys tokens once, a refresh token rotates once,
a consent request is answered once, and revoking ends a whole grant."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from stripe_inbox.auth.minting import digest, grant_id, public_id
from stripe_inbox.stores import Store, open_store
from stripe_inbox.stores.oauth_records import NewOAuthToken, TokenKind

from .postgres import postgres_schema

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened = await open_store(str(tmp_path / "oauth.db"))
        yield opened
        await opened.close()
        return
    async with postgres_schema() as url:
        opened = await open_store(url)
        yield opened
        await opened.close()


def pair(grant: str, now: float, client_id: str = "client-1") -> list[NewOAuthToken]:
    kinds: list[tuple[TokenKind, float]] = [("access", 3600), ("refresh", 86400)]
    return [
        NewOAuthToken(
            id=public_id(),
            token_hash=digest(f"{kind}-{grant}-{now}"),
            kind=kind,
            grant_id=grant,
            client_id=client_id,
            client_name="A client",
            scopes=("inbox:read",),
            resource="https://inbox.example.com/mcp",
            created_at=now,
            expires_at=now + lifetime,
        )
        for kind, lifetime in kinds
    ]


async def test_a_code_buys_tokens_once_even_when_two_redeem_it_at_once(store: Store) -> None:
    now = time.time()
    grant = grant_id()
    await store.add_oauth_code(digest("code"), "client-1", grant, "{}", now + 300)
    won: list[bool] = []

    async def redeem(attempt: int) -> None:
        won.append(await store.redeem_oauth_code(digest("code"), now, pair(grant, now + attempt)))

    async with anyio.create_task_group() as group:
        group.start_soon(redeem, 0)
        group.start_soon(redeem, 1)
    assert sorted(won) == [False, True]
    assert len(await store.oauth_tokens(now)) == 2
    code = await store.oauth_code(digest("code"))
    assert code is not None and code.used_at == now and code.grant_id == grant

    await store.add_oauth_code(digest("late"), "client-1", grant_id(), "{}", now - 1)
    assert not await store.redeem_oauth_code(digest("late"), now, pair(grant_id(), now))


async def test_a_refresh_token_rotates_once_and_takes_its_access_tokens_along(store: Store) -> None:
    now = time.time()
    grant = grant_id()
    first = pair(grant, now)
    await store.add_oauth_code(digest("code"), "client-1", grant, "{}", now + 300)
    assert await store.redeem_oauth_code(digest("code"), now, first)
    refresh_hash = first[1].token_hash

    assert await store.rotate_oauth_refresh_token(refresh_hash, now + 1, pair(grant, now + 1))
    assert not await store.rotate_oauth_refresh_token(refresh_hash, now + 2, pair(grant, now + 2))
    old_access, old_refresh = [await store.oauth_token(token.token_hash) for token in first]
    assert old_access is not None and old_access.revoked_at == now + 1 and not old_access.usable(now + 1)
    assert old_refresh is not None and old_refresh.rotated_at == now + 1
    usable = await store.oauth_tokens(now + 2)
    assert sorted(token.kind for token in usable) == ["access", "refresh"]
    assert len(await store.oauth_tokens()) == 4

    assert await store.revoke_oauth_token(usable[0].id, now + 3) == 2
    assert await store.oauth_tokens(now + 3) == []
    assert await store.revoke_oauth_token("tok_unknown", now + 3) is None


async def test_a_consent_request_is_answered_once_and_not_after_it_expires(store: Store) -> None:
    now = time.time()
    await store.add_oauth_request(digest("asked"), "client-1", '{"state": "s"}', now + 600)
    await store.add_oauth_request(digest("stale"), "client-1", "{}", now - 1)
    shown = await store.oauth_request(digest("asked"), now)
    assert shown is not None and shown.client_id == "client-1" and shown.params == '{"state": "s"}'
    assert await store.take_oauth_request(digest("asked"), now) == shown
    assert await store.take_oauth_request(digest("asked"), now) is None
    assert await store.oauth_request(digest("stale"), now) is None
    assert await store.take_oauth_request(digest("stale"), now) is None


async def test_registered_clients_are_kept_by_id(store: Store) -> None:
    await store.add_oauth_client("client-1", '{"client_id": "client-1"}', time.time())
    assert await store.oauth_client("client-1") == '{"client_id": "client-1"}'
    assert await store.oauth_client("client-2") is None
