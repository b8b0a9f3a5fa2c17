"""Deterministic triage: a category, priority, summary, signals and suggested tool calls for an event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .events import amount_of, customer_of, data_object, format_amount
from .models import Classification, Priority, Signal, SuggestedAction


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    priority: Priority
    ticket: bool = False  # a person must follow up


# Matched exactly first, then by the longest prefix ending in '.'.
RULES: dict[str, Rule] = {
    "checkout.session.completed": Rule("payment_succeeded", "low"),
    "checkout.session.async_payment_succeeded": Rule("payment_succeeded", "low"),
    "checkout.session.async_payment_failed": Rule("payment_failed", "high", ticket=True),
    "checkout.session.expired": Rule("checkout_expired", "low"),
    "payment_intent.succeeded": Rule("payment_succeeded", "low"),
    "payment_intent.payment_failed": Rule("payment_failed", "high", ticket=True),
    "payment_intent.requires_action": Rule("action_required", "normal"),
    "payment_intent.canceled": Rule("payment_canceled", "normal"),
    "payment_intent.": Rule("payment", "low"),
    "charge.succeeded": Rule("payment_succeeded", "low"),
    "charge.captured": Rule("payment_succeeded", "low"),
    "charge.failed": Rule("payment_failed", "high", ticket=True),
    "charge.refunded": Rule("refund", "normal"),
    "charge.refund.": Rule("refund", "normal"),
    "charge.dispute.": Rule("dispute", "urgent", ticket=True),
    "radar.early_fraud_warning.": Rule("fraud_warning", "urgent", ticket=True),
    "review.": Rule("fraud_warning", "high", ticket=True),
    "charge.": Rule("payment", "low"),
    "invoice.paid": Rule("payment_succeeded", "low"),
    "invoice.payment_succeeded": Rule("payment_succeeded", "low"),
    "invoice.payment_failed": Rule("payment_failed", "high", ticket=True),
    "invoice.payment_action_required": Rule("action_required", "normal"),
    "invoice.": Rule("invoice", "low"),
    "customer.subscription.created": Rule("subscription_started", "normal"),
    "customer.subscription.updated": Rule("subscription_changed", "low"),
    "customer.subscription.deleted": Rule("subscription_canceled", "high"),
    "customer.subscription.trial_will_end": Rule("trial_ending", "normal"),
    "customer.subscription.": Rule("subscription_changed", "low"),
    "customer.": Rule("customer", "low"),
    "payout.failed": Rule("payout_failed", "urgent", ticket=True),
    "payout.": Rule("payout", "low"),
    "account.": Rule("account", "normal"),
    "setup_intent.setup_failed": Rule("payment_failed", "normal"),
    "setup_intent.": Rule("payment_method", "low"),
}
OTHER = Rule("other", "low")


def rule_for(event_type: str) -> Rule:
    if event_type in RULES:
        return RULES[event_type]
    prefixes = [p for p in RULES if p.endswith(".") and event_type.startswith(p)]
    return RULES[max(prefixes, key=len)] if prefixes else OTHER


def classify(event: dict[str, Any]) -> Classification:
    event_type = str(event.get("type", ""))
    event_id = str(event.get("id", ""))
    obj = data_object(event)
    rule = rule_for(event_type)
    signals = _signals(event, obj)
    return Classification(
        category=rule.category,
        priority=rule.priority,
        summary=_summary(event_type, obj, signals, rule),
        signals=signals,
        suggested_actions=_actions(event_id, event_type, rule, signals),
    )


def _signals(event: dict[str, Any], obj: dict[str, Any]) -> list[Signal]:
    found: list[Signal] = []

    def add(name: str, value: Any, field: str) -> None:
        if value is not None and value != "":
            found.append(Signal(name=name, value=value, field=field))

    amount = amount_of(obj)
    if amount:
        field, minor, currency = amount
        add("amount", format_amount(minor, currency), f"data.object.{field}")
    add("customer", customer_of(obj), "data.object.customer")
    error = obj.get("last_payment_error") if isinstance(obj.get("last_payment_error"), dict) else {}
    add("decline_code", error.get("decline_code") or error.get("code"), "data.object.last_payment_error")
    add("decline_message", error.get("message"), "data.object.last_payment_error.message")
    add("failure_code", obj.get("failure_code"), "data.object.failure_code")
    add("failure_message", obj.get("failure_message"), "data.object.failure_message")
    outcome = obj.get("outcome") if isinstance(obj.get("outcome"), dict) else {}
    add("decline_reason", outcome.get("reason"), "data.object.outcome.reason")
    add("risk_level", outcome.get("risk_level"), "data.object.outcome.risk_level")
    add("risk_score", outcome.get("risk_score"), "data.object.outcome.risk_score")
    if obj.get("object") == "invoice":
        add("attempt_count", obj.get("attempt_count"), "data.object.attempt_count")
        add("next_payment_attempt", obj.get("next_payment_attempt"), "data.object.next_payment_attempt")
    if obj.get("object") == "dispute":
        add("dispute_reason", obj.get("reason"), "data.object.reason")
        evidence = obj.get("evidence_details") if isinstance(obj.get("evidence_details"), dict) else {}
        add("evidence_due_by", evidence.get("due_by"), "data.object.evidence_details.due_by")
    details = obj.get("cancellation_details") if isinstance(obj.get("cancellation_details"), dict) else {}
    add(
        "cancellation_reason",
        details.get("reason") or obj.get("cancellation_reason"),
        "data.object.cancellation_details.reason",
    )
    if event.get("livemode") is False:
        add("test_mode", True, "livemode")
    add("connect_account", event.get("account"), "account")
    return found


def _summary(event_type: str, obj: dict[str, Any], signals: list[Signal], rule: Rule) -> str:
    values = {signal.name: signal.value for signal in signals}
    noun = str(obj.get("object", "object")).replace("_", " ").replace(".", " ").capitalize()
    subject = f"{noun} {obj['id']}" if obj.get("id") else noun
    if values.get("customer"):
        subject += f" for {values['customer']}"
    what = event_type.rsplit(".", 1)[-1].replace("_", " ")
    reason = values.get("decline_code") or values.get("failure_code") or values.get("dispute_reason")
    parts = [f"{subject}: {what}"]
    if reason:
        parts[0] += f" ({reason})"
    if values.get("attempt_count") and rule.category == "payment_failed":
        parts.append(f"attempt {values['attempt_count']}")
    if values.get("amount"):
        parts.append(str(values["amount"]))
    return ", ".join(parts)


def _actions(event_id: str, event_type: str, rule: Rule, signals: list[Signal]) -> list[SuggestedAction]:
    actions: list[SuggestedAction] = []
    if rule.ticket:
        actions.append(
            SuggestedAction(
                tool="create_ticket",
                arguments={
                    "event_id": event_id,
                    "title": f"{rule.category.replace('_', ' ').capitalize()}: {event_type} {event_id}",
                    "priority": rule.priority,
                },
            )
        )
    if rule.priority in ("high", "urgent"):
        actions.append(
            SuggestedAction(
                tool="notify",
                arguments={
                    "channel": "log",
                    "event_id": event_id,
                    "message": f"{rule.category}: {event_type}",
                },
            )
        )
    outcome = "escalated" if rule.ticket else "handled" if rule is not OTHER else "ignored"
    actions.append(SuggestedAction(tool="ack_event", arguments={"event_id": event_id, "outcome": outcome}))
    return actions
