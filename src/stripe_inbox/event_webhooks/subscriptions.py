"""Webhook subscriptions' rules, for MCP (`events/subscribe`, `events/unsubscribe`) and operators alike: who may
subscribe (an authenticated principal, within the limits), the deterministic id (the same principal, URL, event
type and arguments refresh one subscription), the callback verified before anything is saved, and the secret
sealed before it reaches the store."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..event_feed import CallbackRejected, Forbidden, SubscriptionLimit, UnknownSubscription, UnsupportedDelivery
from ..stores.event_subscriptions import NewSubscription, Subscription
from ..stores.interface import Audit
from . import source
from .callback import CallbackFailed, Callbacks, check_callback_url
from .secret_box import SecretBox, secret_bytes

if TYPE_CHECKING:
    from ..inbox import Inbox

MS_A_DAY = 86_400_000
OPERATOR = "operator"  # the principal of the static access token


@dataclass(frozen=True, slots=True)
class Subscribed:
    """What `events/subscribe` answers."""

    id: str
    refresh_before: float | None
    cursor: str | None
    truncated: bool

    def wire(self) -> dict[str, Any]:
        before = None if self.refresh_before is None else datetime.fromtimestamp(self.refresh_before, UTC).isoformat()
        return {"id": self.id, "refreshBefore": before, "cursor": self.cursor, "truncated": self.truncated}


def subscription_id(principal: str, url: str, name: str, canonical_arguments: str) -> str:
    """The same for the same principal, callback URL, event type and arguments: subscribing again refreshes."""
    digest = hashlib.sha256("\0".join((principal, url, name, canonical_arguments)).encode()).hexdigest()
    return "sub_" + digest[:32]


class WebhookSubscriptions:
    def __init__(self, inbox: Inbox, *, loopback_http: bool) -> None:
        """`loopback_http`: whether plain http callbacks to 127.0.0.1 / [::1] are allowed (serve on loopback with no
        non-loopback public_url)."""
        self.inbox = inbox
        self.settings = inbox.settings.event_subscriptions
        self.loopback_http = loopback_http
        self._box: SecretBox | None = None
        self._callbacks: Callbacks | None = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox.open(self.inbox.settings.events_key, self.inbox.settings.events_key_file)
        return self._box

    async def subscribe(self, principal: str | None, params: dict[str, Any]) -> Subscribed:
        """Verify the callback, then create or refresh the subscription; the errors DESIGN §9 names."""
        if not principal:
            raise Forbidden("webhook subscriptions need an authenticated client (an OAuth token or the access token)")
        selector = source.selector(params.get("name"), params.get("arguments"))
        url, secret = self._delivery(params.get("delivery"))
        lifetime_ms = _lifetime(params.get("ttlMs"), self.settings.default_ttl_days, self.settings.max_ttl_days)
        identity = subscription_id(principal, url, selector.name, _canonical(selector))
        cursor, truncated = await source.start(self.inbox, selector, params.get("cursor"), params.get("maxAgeMs"))
        existing = await self.inbox.store.subscription(identity)
        if existing is None or existing.state == "ended":
            await self._check_limits(principal)
        await self._verify(url, secret, identity)
        now = time.time()
        new = NewSubscription(
            id=identity,
            principal=principal,
            name=selector.name,
            arguments=selector.arguments,
            url=url,
            secret=self.box.seal(secret, identity),
            cursor=cursor,
            refresh_before=now + lifetime_ms / 1000,
        )
        audit = Audit(principal, "subscribe_events", {"name": selector.name, "arguments": selector.arguments})
        saved = await self.inbox.store.save_subscription(new, now, audit)
        return Subscribed(saved.id, saved.refresh_before, saved.cursor, truncated)

    async def unsubscribe(self, principal: str | None, params: dict[str, Any]) -> None:
        """End the caller's subscription, named by `id` or as the AI SDK names it (name, arguments, delivery.url)."""
        if not principal:
            raise Forbidden("webhook subscriptions need an authenticated client (an OAuth token or the access token)")
        identity = params.get("id")
        if identity is None:
            selector = source.selector(params.get("name"), params.get("arguments"))
            delivery = params.get("delivery")
            url = delivery.get("url") if isinstance(delivery, dict) else None
            if not isinstance(url, str):
                raise InvalidArgument("events/unsubscribe needs `id`, or `name`, `arguments` and `delivery.url`")
            identity = subscription_id(principal, url, selector.name, _canonical(selector))
        if not isinstance(identity, str):
            raise InvalidArgument("id must be a subscription id (sub_…) as events/subscribe returned it")
        found = await self.inbox.store.subscription(identity)
        if found is None or found.principal != principal or found.state == "ended":
            raise UnknownSubscription(f"no subscription {identity!r} of this client")
        audit = Audit(principal, "unsubscribe_events", {"subscription_id": identity})
        await self.inbox.store.end_subscription(identity, "unsubscribed", time.time(), audit, terminate=False)

    async def revoke(self, subscription_id: str, actor: str) -> Subscription:
        """The operator ends a subscription; its callback is told once (a `terminated` message)."""
        found = await self.inbox.store.subscription(subscription_id)
        if found is None or found.state == "ended":
            raise UnknownSubscription(
                f"no live subscription {subscription_id!r}; `stripe-inbox subscriptions list` shows them"
            )
        audit = Audit(actor, "revoke_subscription", {"subscription_id": subscription_id})
        await self.inbox.store.end_subscription(
            subscription_id, "revoked by the operator", time.time(), audit, terminate=True
        )
        return found

    async def aclose(self) -> None:
        if self._callbacks is not None:
            await self._callbacks.aclose()

    def _delivery(self, delivery: object) -> tuple[str, str]:
        if not isinstance(delivery, dict):
            raise InvalidArgument("delivery must be an object: {mode: 'webhook', url, secret}")
        mode = delivery.get("mode")
        if mode in ("poll", "push"):
            raise UnsupportedDelivery(f"events/subscribe delivers by webhook only; use events/{mode}")
        if mode != "webhook":
            raise InvalidArgument(f"delivery.mode must be 'webhook', not {mode!r}")
        unknown = sorted(set(delivery) - {"mode", "url", "secret"})
        if unknown:
            raise InvalidArgument(f"delivery has unknown field(s): {', '.join(unknown)}")
        url = check_callback_url(delivery.get("url"), self.loopback_http)
        secret = delivery.get("secret")
        secret_bytes(secret)
        return url, str(secret)

    async def _check_limits(self, principal: str) -> None:
        mine = await self.inbox.store.count_subscriptions(principal)
        if mine >= self.settings.max_per_principal:
            raise SubscriptionLimit(
                f"this client has {mine} subscriptions, the most allowed "
                "(event_subscriptions.max_per_principal); unsubscribe from one first"
            )
        everyone = await self.inbox.store.count_subscriptions()
        if everyone >= self.settings.max_subscriptions:
            raise SubscriptionLimit(
                f"the server has {everyone} subscriptions, the most allowed (event_subscriptions.max_subscriptions)"
            )

    async def _verify(self, url: str, secret: str, identity: str) -> None:
        if self._callbacks is None:
            self._callbacks = Callbacks(self.settings.timeout_seconds)
        try:
            await self._callbacks.verify(url, secret, identity)
        except CallbackFailed as failed:
            raise CallbackRejected(str(failed), failed.reason) from None


def _canonical(selector: source.Selector) -> str:
    return selector.key


def _lifetime(ttl_ms: object, default_days: float, max_days: float) -> float:
    """The subscription's lifetime in ms: ttlMs, cut to the maximum; the default when not given."""
    if ttl_ms is None:
        return default_days * MS_A_DAY
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
        raise InvalidArgument(f"ttlMs must be a positive whole number of milliseconds, or null, not {ttl_ms!r}")
    return float(min(ttl_ms, max_days * MS_A_DAY))
