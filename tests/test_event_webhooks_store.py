"""Webhook subscriptions' parts below MCP, on SQLite and PostgreSQL: the store (refresh keeps the id and moves the
generation, one replica at a time holds a lease, a cursor moves only under it), the sealed secrets, the callback URL
policy, and the signed verification against a real receiver on loopback."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

import anyio
import pytest

from stripe_inbox.errors import ConfigError, InvalidArgument
from stripe_inbox.event_webhooks.callback import CallbackFailed, Callbacks, check_callback_url
from stripe_inbox.event_webhooks.secret_box import SecretBox, secret_bytes
from stripe_inbox.stores import Store
from stripe_inbox.stores.event_subscriptions import NewSubscription
from stripe_inbox.stores.interface import Audit

from .test_oauth_store import store
from .webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.anyio
__all__ = ["store"]  # the fixture: a store on each database
AUDIT = Audit("test", "subscribe_events", {})


def whsec(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode()


def new(subscription_id: str = "sub_1", principal: str = "client-a", cursor: str | None = "c0") -> NewSubscription:
    return NewSubscription(
        id=subscription_id,
        principal=principal,
        name="stripe.event",
        arguments={"types": ["invoice.*"]},
        url="https://hooks.example.com/a?x=1",
        secret="v1:sealed",
        cursor=cursor,
        refresh_before=time.time() + 3600,
    )


async def test_subscribing_again_refreshes_the_same_row_and_moves_its_generation(store: Store) -> None:
    first = await store.save_subscription(new(cursor="c0"), time.time(), AUDIT)
    again = await store.save_subscription(new(cursor="c9"), time.time(), AUDIT)
    assert (first.generation, again.generation) == (0, 1)
    assert again.cursor == "c9" and again.state == "active"
    assert await store.count_subscriptions("client-a") == 1
    assert await store.count_subscriptions("client-b") == 0
    assert (await store.subscription_counts())["active"] == 1


async def test_one_owner_at_a_time_holds_a_subscription_and_only_it_moves_the_cursor(store: Store) -> None:
    await store.save_subscription(new(), time.time(), AUDIT)
    now = time.time()
    taken = [0, 0]

    async def claim(index: int, owner: str) -> None:
        taken[index] = await store.claim_subscriptions(owner, now, 60)

    async with anyio.create_task_group() as group:
        group.start_soon(claim, 0, "replica-a")
        group.start_soon(claim, 1, "replica-b")
    assert sorted(taken) == [0, 1]
    holder, other = ("replica-a", "replica-b") if taken[0] else ("replica-b", "replica-a")
    assert not await store.record_delivered("sub_1", other, 0, "c1", 1, now)
    assert await store.record_delivered("sub_1", holder, 0, "c1", 1, now)
    # a refresh meanwhile (generation 1) wins over a pass that read generation 0
    await store.save_subscription(new(cursor="c-replay"), now, AUDIT)
    assert not await store.record_delivered("sub_1", holder, 0, "c2", 1, now)
    await store.record_cursors(holder, [("sub_1", "c3", 0)])
    found = await store.subscription("sub_1")
    assert found is not None and found.cursor == "c-replay" and found.delivered == 1
    # a lapsed lease passes to whoever asks next
    assert await store.claim_subscriptions(other, now + 61, 60) == 1
    await store.release_subscriptions(other)
    assert (await store.subscription("sub_1")).lease_owner is None  # type: ignore[union-attr]


async def test_an_ended_subscription_is_left_alone_except_for_its_farewell(store: Store) -> None:
    await store.save_subscription(new(), time.time(), AUDIT)
    assert await store.end_subscription("sub_1", "revoked", time.time(), AUDIT, terminate=True)
    assert not await store.end_subscription("sub_1", "revoked", time.time(), AUDIT, terminate=True)
    now = time.time()
    assert await store.claim_subscriptions("replica-a", now, 60) == 1
    (held,) = await store.held_subscriptions("replica-a", now)
    assert held.state == "ended" and held.terminate_pending
    await store.terminated("sub_1", "replica-a")
    assert await store.claim_subscriptions("replica-a", now, 60) == 0
    assert await store.subscriptions() == []
    assert [each.ended_reason for each in await store.subscriptions(ended=True)] == ["revoked"]


async def test_a_failed_attempt_is_counted_and_a_410_ends_it(store: Store) -> None:
    await store.save_subscription(new(), time.time(), AUDIT)
    now = time.time()
    await store.claim_subscriptions("replica-a", now, 60)
    await store.record_failed_attempt("sub_1", "replica-a", "HTTP 503: busy", now + 5)
    failing = await store.subscription("sub_1")
    assert failing is not None and (failing.attempts, failing.failures, failing.state) == (1, 1, "active")
    assert (await store.subscription_counts())["failing"] == 1
    await store.record_failed_attempt("sub_1", "replica-a", "410", now, end_reason="gone (410 from the callback)")
    ended = await store.subscription("sub_1")
    assert ended is not None and ended.state == "ended" and ended.ended_reason == "gone (410 from the callback)"


def test_secrets_are_checked_as_the_draft_asks() -> None:
    assert len(secret_bytes(whsec(24))) == 24 and len(secret_bytes(whsec(64))) == 64
    for bad, says in [
        (whsec(23), "24 to 64 random bytes, not 23"),
        (whsec(65), "not 65"),
        ("sk_live_abc", "starting with 'whsec_'"),
        ("whsec_not base64!", "standard base64"),
        (42, "starting with 'whsec_'"),
    ]:
        with pytest.raises(InvalidArgument, match=says) as refused:
            secret_bytes(bad)
        assert str(bad) not in str(refused.value) or not isinstance(bad, str) or len(str(bad)) < 12


def test_a_sealed_secret_opens_only_with_its_key_and_its_subscription(tmp_path: Path) -> None:
    key_file = tmp_path / "inbox.db.events-key"
    box = SecretBox.open(None, key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    secret = whsec()
    sealed = box.seal(secret, "sub_1")
    assert secret not in sealed and secret.removeprefix("whsec_") not in sealed
    assert SecretBox.open(None, key_file).unseal(sealed, "sub_1") == secret
    with pytest.raises(ConfigError, match="does not open"):
        box.unseal(sealed, "sub_2")
    other = SecretBox.open(base64.b64encode(secrets.token_bytes(32)).decode(), key_file)
    with pytest.raises(ConfigError, match="another key"):
        other.unseal(sealed, "sub_1")
    with pytest.raises(ConfigError, match="is missing"):
        SecretBox.open(None, tmp_path / "absent", create=False)
    with pytest.raises(ConfigError, match="32 bytes"):
        SecretBox.open(base64.b64encode(b"short").decode(), key_file)


def test_callback_urls_are_https_to_public_addresses_or_http_to_literal_loopback() -> None:
    assert check_callback_url("https://hooks.example.com/x?a=1", False) == "https://hooks.example.com/x?a=1"
    assert check_callback_url("http://127.0.0.1:9/x", True) == "http://127.0.0.1:9/x"
    assert check_callback_url("http://[::1]:9/x", True) == "http://[::1]:9/x"
    for url, says in [
        ("http://127.0.0.1:9/x", "only while the server itself listens on loopback"),
        ("http://localhost:9/x", "only to 127.0.0.1 or \\[::1\\]"),
        ("http://hooks.example.com/x", "must be https://"),
        ("https://10.0.0.1/x", "10.0.0.1 is not a public address"),
        ("https://[::ffff:127.0.0.1]/x", "is not a public address"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("ftp://hooks.example.com/x", "absolute https://"),
        ("https://hooks.example.com:99999/x", "does not parse"),
        ("", "non-empty string"),
    ]:
        with pytest.raises(InvalidArgument, match=says):
            check_callback_url(url, False)


async def test_the_verification_is_signed_and_its_challenge_must_come_back() -> None:
    secret = whsec()
    receiver = WebhookReceiver(secret).start()
    callbacks = Callbacks(5.0)
    try:
        await callbacks.verify(receiver.url, secret, "sub_abc")
        (verification,) = receiver.verifications
        assert verification.headers["x-mcp-subscription-id"] == "sub_abc"
        assert verification.path == "/hooks/stripe?tenant=a%20b&x=1"  # the URL exactly as given
        assert verification.headers["content-type"] == "application/json"
        receiver.echo = lambda challenge: {"challenge": challenge + "x"}
        with pytest.raises(CallbackFailed) as wrong:
            await callbacks.verify(receiver.url, secret, "sub_abc")
        assert wrong.value.reason == "challenge_mismatch"
        with pytest.raises(CallbackFailed) as unsigned:
            await callbacks.verify(receiver.url, whsec(), "sub_abc")  # signed with another secret: 401
        assert unsigned.value.reason == "http_status" and receiver.bad_signatures == 1
    finally:
        receiver.stop()
    with pytest.raises(CallbackFailed) as down:
        await callbacks.verify(receiver.url, secret, "sub_abc")
    assert down.value.reason == "unreachable"
    await callbacks.aclose()
