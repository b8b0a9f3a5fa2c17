"""The store the inbox talks to: one object composed of a store per area, all over one connector. Its methods
are the area stores' own, named here so that callers need not know which area holds what."""

from __future__ import annotations

from .approvals import ApprovalStore
from .changes import ChangeLog
from .connector import Connector
from .event_subscriptions import EventSubscriptionStore
from .events import EventStore
from .feed import FeedStore
from .forwarding import ForwardStore
from .oauth import OAuthStore
from .outbox import OutboxStore
from .search_index import SearchIndexStore
from .state import StateStore


class Store:
    def __init__(self, connector: Connector) -> None:
        self.db = connector
        self.changes = ChangeLog(connector)
        self.events = EventStore(connector, self.changes)
        self.search_index = SearchIndexStore(connector, self.changes)
        self.outbox = OutboxStore(connector, self.changes)
        self.approving = ApprovalStore(connector, self.changes)
        self.forwarding = ForwardStore(connector, self.changes)
        self.oauth = OAuthStore(connector, self.changes)
        self.state = StateStore(connector, self.changes)
        self.event_subscriptions = EventSubscriptionStore(connector, self.changes)
        self.feeds = FeedStore(connector, self.changes)
        self._name_event_methods()
        self._name_delivery_methods()
        self._name_upkeep_methods()
        self._name_subscription_methods()

    def _name_event_methods(self) -> None:
        """The events, their search index and the change log."""
        self.watch_changes = self.changes.watch_changes
        self.change_marker = self.changes.change_marker
        self.waking = self.changes.waking
        self.add_events = self.events.add_events
        self.forward_new_events = self.events.forward_new_events
        self.get_event = self.events.get_event
        self.get_events = self.events.get_events
        self.list_events = self.events.list_events
        self.count_events = self.events.count_events
        self.timeline = self.events.timeline
        self.resolutions = self.events.resolutions
        self.currencies = self.events.currencies
        self.counts = self.events.counts
        self.oldest_pending = self.events.oldest_pending
        self.received_per_hour = self.events.received_per_hour
        self.audit_trail = self.events.audit_trail
        self.ack = self.events.ack
        self.claim_events = self.events.claim_events
        self.set_classification = self.events.set_classification
        self.add_audit = self.events.add_audit
        self.prune = self.events.prune
        self.events_created = self.events.events_created
        self.count_created = self.events.count_created
        self.unindexed = self.search_index.unindexed
        self.oldest_unindexed_at = self.search_index.oldest_unindexed_at
        self.queued_for_index = self.search_index.queued_for_index
        self.index = self.search_index.index
        self.feed_head = self.feeds.feed_head
        self.feed_seqs = self.feeds.feed_seqs
        self.feed_rows = self.feeds.feed_rows
        self.feed_first_since = self.feeds.feed_first_since
        self.feed_any_between = self.feeds.feed_any_between
        self.pruned_through = self.feeds.pruned_through

    def _name_delivery_methods(self) -> None:
        """The outbox, approvals and forwards."""
        self.tickets = self.outbox.tickets
        self.ticket = self.outbox.ticket
        self.notifications = self.outbox.notifications
        self.notification = self.outbox.notification
        self.add_ticket = self.outbox.add_ticket
        self.add_notification = self.outbox.add_notification
        self.retry_delivery = self.outbox.retry_delivery
        self.claim_deliveries = self.outbox.claim_deliveries
        self.finish_delivery = self.outbox.finish_delivery
        self.next_delivery_at = self.outbox.next_delivery_at
        self.delivery_counts = self.outbox.delivery_counts
        self.approvals = self.approving.approvals
        self.count_approvals = self.approving.count_approvals
        self.approval = self.approving.approval
        self.approval_of = self.approving.approval_of
        self.decide = self.approving.decide
        self.lapse_approvals = self.approving.lapse_approvals
        self.forward_schedule = self.forwarding.forward_schedule
        self.forward_round = self.forwarding.forward_round
        self.release_forwards = self.forwarding.release_forwards
        self.replay_forwards = self.forwarding.replay_forwards
        self.retry_forward = self.forwarding.retry_forward
        self.forwards = self.forwarding.forwards
        self.forward = self.forwarding.forward
        self.forward_counts = self.forwarding.forward_counts

    def _name_upkeep_methods(self) -> None:
        """OAuth records and the inbox's own state."""
        self.add_oauth_client = self.oauth.add_oauth_client
        self.oauth_client = self.oauth.oauth_client
        self.prune_oauth_clients = self.oauth.prune_oauth_clients
        self.add_oauth_request = self.oauth.add_oauth_request
        self.oauth_request = self.oauth.oauth_request
        self.take_oauth_request = self.oauth.take_oauth_request
        self.add_oauth_code = self.oauth.add_oauth_code
        self.oauth_code = self.oauth.oauth_code
        self.redeem_oauth_code = self.oauth.redeem_oauth_code
        self.oauth_token = self.oauth.oauth_token
        self.rotate_oauth_refresh_token = self.oauth.rotate_oauth_refresh_token
        self.touch_oauth_token = self.oauth.touch_oauth_token
        self.revoke_oauth_grant = self.oauth.revoke_oauth_grant
        self.revoke_oauth_token = self.oauth.revoke_oauth_token
        self.oauth_tokens = self.oauth.oauth_tokens
        self.get_state = self.state.get_state
        self.set_state = self.state.set_state
        self.claim_turn = self.state.claim_turn
        self.incidents = self.state.incidents
        self.open_incident = self.state.open_incident
        self.close_incident = self.state.close_incident
        self.failed_deliveries = self.state.failed_deliveries
        self.ping = self.state.ping

    def _name_subscription_methods(self) -> None:
        """MCP Events webhook subscriptions."""
        subscriptions = self.event_subscriptions
        self.save_subscription = subscriptions.save_subscription
        self.subscription = subscriptions.subscription
        self.subscriptions = subscriptions.subscriptions
        self.count_subscriptions = subscriptions.count_subscriptions
        self.subscription_counts = subscriptions.subscription_counts
        self.end_subscription = subscriptions.end_subscription
        self.claim_subscriptions = subscriptions.claim_subscriptions
        self.held_subscriptions = subscriptions.held_subscriptions
        self.record_delivered = subscriptions.record_delivered
        self.record_cursors = subscriptions.record_cursors
        self.record_failed_attempt = subscriptions.record_failed_attempt
        self.terminated = subscriptions.terminated
        self.release_subscriptions = subscriptions.release_subscriptions

    async def close(self) -> None:
        await self.db.close()
