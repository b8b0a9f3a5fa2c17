"""Prometheus metrics for one process: deliveries, ingress latency, tool calls, and the inbox's contents."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .models import Stats

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "stripe_inbox_deliveries",
            "Webhook deliveries by result (stored, duplicate, filtered or an error code) and HTTP status",
            ["result", "status"],
            registry=self.registry,
        )
        self._delivery_counters: dict[tuple[str, int], Counter] = {}
        self.ingress_latency = Histogram(
            "stripe_inbox_ingress_latency_seconds",
            "Time from request received to response, for POST /webhooks/stripe",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "stripe_inbox_tool_calls",
            "MCP tool calls by tool and outcome",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self.events = Gauge(
            "stripe_inbox_events",
            "Events in the inbox by status and type",
            ["status", "type"],
            registry=self.registry,
        )
        self.actions = Gauge(
            "stripe_inbox_actions",
            "Notifications and forwarded tickets by delivery state",
            ["state"],
            registry=self.registry,
        )
        self.forwards = Gauge(
            "stripe_inbox_forwards",
            "Forwards to [[forward]] destinations by destination and delivery state",
            ["destination", "state"],
            registry=self.registry,
        )
        self.subscriptions = Gauge(
            "stripe_inbox_event_subscriptions",
            "MCP Events webhook subscriptions by state (failing: active, and their last POST failed)",
            ["state"],
            registry=self.registry,
        )
        self.event_streams = Gauge(
            "stripe_inbox_event_streams",
            "MCP Events events/stream requests this process is serving now",
            registry=self.registry,
        )
        self.unindexed = Gauge(
            "stripe_inbox_search_unindexed_events",
            "Stored events the search index does not hold yet (the indexer catches up within seconds)",
            registry=self.registry,
        )
        self.oldest_pending = Gauge(
            "stripe_inbox_oldest_pending_age_seconds",
            "Age of the oldest pending event",
            registry=self.registry,
        )

    def record_delivery(self, result: str, status: int, seconds: float) -> None:
        counter = self._delivery_counters.get((result, status))
        if counter is None:  # looking a child up by its labels costs more than the increment itself
            counter = self._delivery_counters[result, status] = self.deliveries.labels(result, str(status))
        counter.inc()
        self.ingress_latency.observe(seconds)

    def record_tool_call(self, tool: str, failed: bool) -> None:
        self.tool_calls.labels(tool, "error" if failed else "ok").inc()

    def render(
        self, counts: list[tuple[str, str, int]], stats: Stats, forwards: list[tuple[str, str, int]] | None = None
    ) -> bytes:
        self.events.clear()
        for status, event_type, count in counts:
            self.events.labels(status, event_type).set(count)
        for state, count in stats.actions.items():
            self.actions.labels(state).set(count)
        self.forwards.clear()
        for destination, state, count in forwards or []:
            self.forwards.labels(destination, state).set(count)
        for state, count in stats.subscriptions.items():
            self.subscriptions.labels(state).set(count)
        self.oldest_pending.set(stats.oldest_pending_age_seconds or 0)
        self.unindexed.set(stats.unindexed)
        return generate_latest(self.registry)
