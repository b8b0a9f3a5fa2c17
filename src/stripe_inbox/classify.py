"""Deterministic triage: category, priority, a one-line summary, signals (each with the field it came
from) and suggested tool calls with ready arguments, by rules over Stripe's own fields."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .events import amount_of, customer_of, data_object, format_amount, major_units
from .models import PRIORITIES, Classification, Priority, Signal, SuggestedAction
from .policy import Policy, Rule

classify_log = logging.getLogger("stripe_inbox.classify")


@dataclass(frozen=True, slots=True)
class Kind:
    category: str
    priority: Priority
    ticket: bool = False  # a person must follow up
    notify: bool = False  # a team should know now


# Matched exactly first, then by the longest prefix ending in '.'; anything else is OTHER.
KINDS: dict[str, Kind] = {
    "checkout.session.completed": Kind("payment_succeeded", "low"),
    "checkout.session.async_payment_succeeded": Kind("payment_succeeded", "low"),
    "checkout.session.async_payment_failed": Kind("payment_failed", "high", ticket=True),
    "checkout.session.expired": Kind("checkout_expired", "low"),
    "checkout.session.": Kind("checkout", "low"),
    "payment_intent.succeeded": Kind("payment_succeeded", "low"),
    "payment_intent.payment_failed": Kind("payment_failed", "high", ticket=True),
    "payment_intent.requires_action": Kind("action_required", "normal"),
    "payment_intent.canceled": Kind("payment_canceled", "normal"),
    "payment_intent.": Kind("payment", "low"),
    "charge.succeeded": Kind("payment_succeeded", "low"),
    "charge.captured": Kind("payment_succeeded", "low"),
    "charge.failed": Kind("payment_failed", "high", ticket=True),
    "charge.refunded": Kind("refund", "normal"),
    "charge.refund.": Kind("refund", "low"),
    "charge.dispute.closed": Kind("dispute", "normal"),
    "charge.dispute.funds_withdrawn": Kind("dispute", "high", notify=True),
    "charge.dispute.": Kind("dispute", "urgent", ticket=True, notify=True),
    "charge.": Kind("payment", "low"),
    "radar.early_fraud_warning.": Kind("fraud_warning", "urgent", ticket=True, notify=True),
    "review.opened": Kind("fraud_warning", "high", ticket=True),
    "review.": Kind("fraud_warning", "normal"),
    "invoice.paid": Kind("payment_succeeded", "low"),
    "invoice.payment_succeeded": Kind("payment_succeeded", "low"),
    "invoice.payment_failed": Kind("payment_failed", "high", ticket=True),
    "invoice.payment_action_required": Kind("action_required", "normal"),
    "invoice.": Kind("invoice", "low"),
    "customer.subscription.created": Kind("subscription_started", "normal"),
    "customer.subscription.updated": Kind("subscription_changed", "low"),
    "customer.subscription.deleted": Kind("subscription_canceled", "high", ticket=True),
    "customer.subscription.trial_will_end": Kind("trial_ending", "normal"),
    "customer.subscription.": Kind("subscription_changed", "low"),
    "customer.": Kind("customer", "low"),
    "payout.failed": Kind("payout_failed", "urgent", ticket=True, notify=True),
    "payout.": Kind("payout", "low"),
    "account.": Kind("account", "normal"),
    "setup_intent.setup_failed": Kind("payment_method_failed", "normal"),
    "setup_intent.": Kind("payment_method", "low"),
}
OTHER = Kind("other", "low")
UNCLASSIFIED = "unclassified"  # the rules failed on this event: a person should look
CATEGORIES = sorted({kind.category for kind in KINDS.values()} | {OTHER.category, UNCLASSIFIED})

NOUNS = {
    "checkout.session": "Checkout session",
    "payment_intent": "Payment",
    "radar.early_fraud_warning": "Early fraud warning",
    "bank_account": "Bank account",
    "setup_intent": "Setup",
}
VERBS = {
    "payment_failed": "failed",
    "async_payment_failed": "failed",
    "async_payment_succeeded": "succeeded",
    "payment_action_required": "needs the customer to act",
    "requires_action": "needs the customer to act",
    "trial_will_end": "trial ends soon",
    "subscription.deleted": "canceled",
    "setup_failed": "failed",
    "funds_withdrawn": "funds withdrawn",
}


def kind_of(event_type: str) -> Kind:
    if event_type in KINDS:
        return KINDS[event_type]
    prefixes = [p for p in KINDS if p.endswith(".") and event_type.startswith(p)]
    return KINDS[max(prefixes, key=len)] if prefixes else OTHER


def classify(
    event: dict[str, Any],
    policy: Policy | None = None,
    rules: list[Rule] | None = None,
    superseded_by: str | None = None,
) -> Classification:
    """`superseded_by`: a later event that resolved this one (resolution.py), which leaves nothing to do.

    Stripe and the policy's rules can both surprise the rules here; an event they cannot classify is
    UNCLASSIFIED, logged, so that a list, a prompt or a push that shows it still works."""
    try:
        return _classify(event, policy, rules, superseded_by)
    except Exception as error:
        event_id = event.get("id") if isinstance(event.get("id"), str) else None
        classify_log.exception("could not classify event %s", json.dumps(event_id))
        return unclassified(error)


def unclassified(error: Exception) -> Classification:
    summary = f"could not be classified ({type(error).__name__}): read it with get_event and decide"
    return Classification(category=UNCLASSIFIED, priority="normal", summary=summary, signals=[], suggested_actions=[])


def _classify(
    event: dict[str, Any], policy: Policy | None, rules: list[Rule] | None, superseded_by: str | None
) -> Classification:
    event_type = str(event.get("type", ""))
    event_id = str(event.get("id", ""))
    obj = data_object(event)
    kind = kind_of(event_type)
    signals = _signals(event, obj, policy or Policy())
    facts = {signal.name: signal.value for signal in signals}
    facts.update(type=event_type, category=kind.category, livemode=bool(event.get("livemode")))
    priority = kind.priority
    if facts.get("high_value") and kind.category not in ("other", "customer", "account"):
        priority = PRIORITIES[min(PRIORITIES.index(priority) + 1, len(PRIORITIES) - 1)]
    summary = _summary(event_type, obj, facts, kind)
    rule = next((r for r in rules or [] if r.applies(event_type, facts, event)), None)
    if rule is not None and rule.priority is not None:
        priority = rule.priority
    values = {
        "summary": summary,
        "event_id": event_id,
        "type": event_type,
        "category": kind.category,
        "priority": priority,
        "customer": facts.get("customer") or "",
        "amount": facts.get("amount_display") or "",
    }
    if superseded_by is not None:
        summary = f"{summary} (resolved by {superseded_by})"
        priority = "low"
        note = f"resolved by {superseded_by}"
        actions = [
            SuggestedAction(tool="ack_event", arguments={"event_id": event_id, "outcome": "ignored", "note": note})
        ]
    elif rule is not None and rule.actions is not None:
        actions = [
            SuggestedAction(tool=a.tool, arguments=_render(a.tool, a.arguments, event_id, values)) for a in rule.actions
        ]
    else:
        actions = _default_actions(kind, priority, values)
    return Classification(
        category=kind.category, priority=priority, summary=summary, signals=signals, suggested_actions=actions
    )


# What each kind of object adds to the signals: (signal, path under data.object, whether it is an epoch date).
OBJECT_SIGNALS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "invoice": (("attempt_count", "attempt_count", False), ("next_retry", "next_payment_attempt", True)),
    "dispute": (("dispute_reason", "reason", False), ("evidence_due", "evidence_details.due_by", True)),
    "radar.early_fraud_warning": (("fraud_type", "fraud_type", False),),
    "review": (("review_reason", "reason", False),),
    "payout": (("failure_code", "failure_code", False), ("arrival_date", "arrival_date", True)),
    "subscription": (
        ("status", "status", False),
        ("cancellation_reason", "cancellation_details.reason", False),
        ("cancellation_feedback", "cancellation_details.feedback", False),
        ("trial_end", "trial_end", True),
    ),
    "payment_intent": (("cancellation_reason", "cancellation_reason", False),),
}


def _signals(event: dict[str, Any], obj: dict[str, Any], policy: Policy) -> list[Signal]:
    found: list[Signal] = []

    def add(name: str, value: Any, field: str) -> None:
        if value is not None and value != "":
            found.append(Signal(name=name, value=value, field=field))

    amount = amount_of(obj)
    if amount:
        field, minor, currency = amount
        major = major_units(minor, currency)
        add("amount", major, f"data.object.{field}")
        add("currency", currency.lower(), "data.object.currency")
        add("amount_display", format_amount(minor, currency), f"data.object.{field}")
        threshold = policy.high_value.get(currency.lower())
        if threshold is not None and major >= threshold:
            add("high_value", True, f"data.object.{field}")
    add("customer", customer_of(obj), "data.object.customer")
    error = _dict(obj.get("last_payment_error")) or _dict(obj.get("last_setup_error"))
    add("decline_code", error.get("decline_code") or error.get("code"), "data.object.last_payment_error.decline_code")
    add("decline_message", error.get("message"), "data.object.last_payment_error.message")
    outcome = _dict(obj.get("outcome"))
    if obj.get("object") == "charge" and not error:
        if obj.get("failure_code"):
            add("decline_code", obj["failure_code"], "data.object.failure_code")
        else:
            add("decline_code", outcome.get("reason"), "data.object.outcome.reason")
        add("decline_message", obj.get("failure_message"), "data.object.failure_message")
    add("risk_level", outcome.get("risk_level"), "data.object.outcome.risk_level")
    add("risk_score", outcome.get("risk_score"), "data.object.outcome.risk_score")
    refunded = obj.get("amount_refunded")
    if obj.get("object") == "charge" and isinstance(refunded, int) and refunded and amount:
        add("amount_refunded", major_units(refunded, amount[2]), "data.object.amount_refunded")
    for name, path, as_date in OBJECT_SIGNALS.get(str(obj.get("object")), ()):
        *parents, key = path.split(".")
        value = _at(obj, parents).get(key)
        add(name, _date(value) if as_date else value, f"data.object.{path}")
    if event.get("livemode") is False:
        add("test_mode", True, "livemode")
    add("account", event.get("account"), "account")
    return found


def _summary(event_type: str, obj: dict[str, Any], facts: dict[str, Any], kind: Kind) -> str:
    object_type = str(obj.get("object") or event_type.rsplit(".", 1)[0])
    noun = NOUNS.get(object_type, object_type.replace("_", " ").capitalize())
    head = f"{noun} {obj['id']}" if isinstance(obj.get("id"), str) else noun
    if facts.get("customer") and object_type != "customer":
        head += f" for {facts['customer']}"
    action = event_type.rsplit(".", 1)[-1]
    verb = VERBS.get(f"{object_type}.{action}") or VERBS.get(action) or action.replace("_", " ")
    parts = [f"{head} {verb}"]
    reason = _reason(facts)
    if reason:
        parts[0] += f": {reason}"
    if facts.get("attempt_count") and kind.category == "payment_failed":
        parts.append(f"attempt {facts['attempt_count']}")
    if facts.get("next_retry") and kind.category == "payment_failed":
        parts.append(f"next retry {facts['next_retry']}")
    if facts.get("evidence_due"):
        parts.append(f"evidence due {facts['evidence_due']}")
    if facts.get("trial_end") and kind.category == "trial_ending":
        parts.append(f"trial ends {facts['trial_end']}")
    if facts.get("amount_display"):
        parts.append(str(facts["amount_display"]))
    if facts.get("high_value"):
        parts.append("high value")
    return ", ".join(parts)


def _reason(facts: dict[str, Any]) -> str | None:
    code = facts.get("decline_code")
    if code:
        message = str(facts.get("decline_message") or "").rstrip(".") or "card declined"
        return f"{message[0].lower()}{message[1:]} ({code})"
    for name in ("dispute_reason", "fraud_type", "review_reason", "failure_code", "cancellation_reason"):
        if facts.get(name):
            return str(facts[name]).replace("_", " ")
    return None


def _default_actions(kind: Kind, priority: Priority, values: dict[str, Any]) -> list[SuggestedAction]:
    event_id = values["event_id"]
    actions = []
    if kind.ticket:
        actions.append(
            SuggestedAction(
                tool="create_ticket",
                arguments={"event_id": event_id, "title": values["summary"], "priority": priority},
            )
        )
    if kind.notify or priority == "urgent":
        actions.append(
            SuggestedAction(
                tool="notify", arguments={"channel": "log", "event_id": event_id, "message": values["summary"]}
            )
        )
    outcome = "escalated" if kind.ticket else "ignored" if kind is OTHER else "handled"
    actions.append(SuggestedAction(tool="ack_event", arguments={"event_id": event_id, "outcome": outcome}))
    return actions


def _render(tool: str, arguments: dict[str, str], event_id: str, values: dict[str, Any]) -> dict[str, Any]:
    ready: dict[str, Any] = {"event_id": event_id}
    if tool == "create_ticket":
        ready.update(title="{summary}", priority="{priority}")
    elif tool == "notify":
        ready.update(message="{summary}")
    elif tool == "ack_event":
        ready.update(outcome="handled")
    ready.update(arguments)
    return {name: value.format_map(values) if isinstance(value, str) else value for name, value in ready.items()}


def _date(epoch: Any) -> str | None:
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _at(obj: dict[str, Any], parents: list[str]) -> dict[str, Any]:
    for name in parents:
        obj = _dict(obj.get(name))
    return obj
