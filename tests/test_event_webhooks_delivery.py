"""The delivery pass in-process, against a real receiver on loopback: a `gap` before what follows events retention
pruned, a thousand subscriptions served by one read of the new events, and a subscription whose secret no longer
opens failing alone while the others are delivered."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from stripe_inbox import Inbox
from stripe_inbox.event_feed import UnknownSubscription, feed
from stripe_inbox.event_webhooks.callback import Callbacks
from stripe_inbox.event_webhooks.delivery import WebhookDelivery
from stripe_inbox.event_webhooks.secret_box import SecretBox
from stripe_inbox.event_webhooks.subscriptions import WebhookSubscriptions
from stripe_inbox.models import Classification, EventSummary
from stripe_inbox.stores import StoredEvent
from stripe_inbox.stores.event_subscriptions import NewSubscription
from stripe_inbox.stores.interface import Audit

from .conftest import deliver, make_event
from .webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.anyio
AUDIT = Audit("test", "subscribe_events", {})


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = WebhookReceiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()).start()
    yield running
    running.stop()


@pytest.fixture
async def callbacks() -> AsyncIterator[Callbacks]:
    made = Callbacks(5.0)
    yield made
    await made.aclose()


def params(receiver: WebhookReceiver, **arguments: object) -> dict[str, object]:
    return {
        "name": "stripe.event",
        "arguments": arguments,
        "delivery": {"mode": "webhook", "url": receiver.url, "secret": receiver.secret},
    }


async def test_a_gap_comes_before_what_follows_events_retention_pruned(
    inbox: Inbox, http: httpx.AsyncClient, receiver: WebhookReceiver, callbacks: Callbacks
) -> None:
    subscribed = await WebhookSubscriptions(inbox, loopback_http=True).subscribe("client-a", params(receiver))
    pruned = [make_event("invoice.paid"), make_event("invoice.paid")]
    for event in pruned:
        assert (await deliver(http, event)).status_code == 200
        await inbox.ack(event["id"], "handled", None, "test")
    assert await inbox.prune(0) == 2
    kept = make_event("invoice.voided")
    await deliver(http, kept)
    delivery = WebhookDelivery(inbox)
    await delivery.deliver_once(callbacks)
    gap, event = (each.body for each in receiver.accepted)
    assert gap["type"] == "gap" and gap["cursor"]
    assert receiver.accepted[0].headers["webhook-id"].startswith("gap_")
    assert event["eventId"] == kept["id"]
    stored = await inbox.store.subscription(subscribed.id)
    assert stored is not None and stored.cursor == event["cursor"] and stored.delivered == 1
    await delivery.deliver_once(callbacks)  # nothing new: nothing sent again
    assert len(receiver.accepted) == 2


async def test_one_read_of_the_new_events_serves_a_thousand_subscriptions(
    inbox: Inbox, http: httpx.AsyncClient, receiver: WebhookReceiver, callbacks: Callbacks
) -> None:
    box = SecretBox.open(None, inbox.settings.events_key_file)
    start = (await feed.start(inbox, "stripe.event")).encode()
    customer = "cus_" + secrets.token_hex(6)
    for number in range(1000):
        subscription_id = f"sub_{number:04}"
        narrowed = {"customer": customer if number % 250 == 0 else f"cus_other{number}"}
        new = NewSubscription(
            subscription_id,
            "client-a",
            "stripe.event",
            narrowed,
            receiver.url,
            box.seal(receiver.secret, subscription_id),
            start,
            time.time() + 3600,
        )
        await inbox.store.save_subscription(new, time.time(), AUDIT)
    unwatched = [make_event("invoice.paid") for _ in range(20)]
    event = make_event("invoice.paid")
    event["data"]["object"]["customer"] = customer
    for each in [*unwatched[:10], event, *unwatched[10:]]:
        await deliver(http, each)
    triaged: list[str] = []
    assessed = inbox.assessed

    async def recording(events: Sequence[StoredEvent]) -> list[tuple[EventSummary, Classification]]:
        triaged.extend(each.id for each in events)
        return await assessed(events)

    inbox.assessed = recording  # type: ignore[method-assign]
    await WebhookDelivery(inbox).deliver_once(callbacks)
    assert triaged == [event["id"]], "only the event some subscription admits on its stored facts is triaged"
    assert sorted(each.headers["x-mcp-subscription-id"] for each in receiver.accepted) == [
        "sub_0000",
        "sub_0250",
        "sub_0500",
        "sub_0750",
    ]
    cursors = {each.cursor for each in await inbox.store.subscriptions()}
    assert len(cursors) == 1 and cursors != {start}  # all moved on together: the next pass reads once for all


async def test_a_subscription_whose_secret_does_not_open_fails_alone(
    inbox: Inbox, http: httpx.AsyncClient, receiver: WebhookReceiver, callbacks: Callbacks
) -> None:
    subscriptions = WebhookSubscriptions(inbox, loopback_http=True)
    good = await subscriptions.subscribe("client-a", params(receiver))
    bad = await subscriptions.subscribe("client-b", params(receiver))
    await inbox.store.db.fetch("UPDATE event_subscriptions SET secret = 'v1:AAAA' WHERE id = ? RETURNING id", bad.id)
    event = make_event("invoice.paid")
    await deliver(http, event)
    await WebhookDelivery(inbox).deliver_once(callbacks)
    assert [each.headers["x-mcp-subscription-id"] for each in receiver.accepted] == [good.id]
    stored = await inbox.store.subscription(bad.id)
    assert stored is not None and stored.delivered == 0 and stored.state == "active"


async def test_a_principal_ends_only_its_own_subscriptions(inbox: Inbox, receiver: WebhookReceiver) -> None:
    subscriptions = WebhookSubscriptions(inbox, loopback_http=True)
    mine = await subscriptions.subscribe("client-a", params(receiver))
    with pytest.raises(UnknownSubscription, match="no subscription"):
        await subscriptions.unsubscribe("client-b", {"id": mine.id})
    with pytest.raises(UnknownSubscription):  # named as the AI SDK names it: client-b's would be another id
        await subscriptions.unsubscribe("client-b", {**params(receiver), "delivery": {"url": receiver.url}})
    await subscriptions.unsubscribe("client-a", {**params(receiver), "delivery": {"url": receiver.url}})
    ended = await inbox.store.subscription(mine.id)
    assert ended is not None and ended.state == "ended" and ended.ended_reason == "unsubscribed"
    with pytest.raises(UnknownSubscription):  # ended: nothing left to end
        await subscriptions.unsubscribe("client-a", {"id": mine.id})
