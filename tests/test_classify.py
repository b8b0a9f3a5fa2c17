"""Triage: every fixture type and the hand-written high-stakes events, policy rules, redaction."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from stripe_inbox import load_settings, open_inbox
from stripe_inbox.classify import classify
from stripe_inbox.errors import ConfigError
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp.server import create_mcp_server
from stripe_inbox.policy import Policy

from .conftest import SECRET, encode, fixture_events, needs_fixtures
from .test_fixtures import fresh_copies

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")

# type: (category, priority, {signal: value} that must be present)
EXPECTED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "account.external_account.created": ("account", "normal", {"account": "acct_1IuHosQveW0ONQsd"}),
    "account.updated": ("account", "normal", {"account": "acct_1IuHosQveW0ONQsd"}),
    "charge.captured": ("payment_succeeded", "low", {"amount": 1.0, "currency": "usd", "risk_level": "normal"}),
    "charge.dispute.created": ("dispute", "urgent", {"dispute_reason": "fraudulent", "evidence_due": "2022-04-04"}),
    "charge.failed": ("payment_failed", "high", {"decline_code": "card_declined", "amount": 20.0}),
    "charge.refund.updated": ("refund", "low", {"amount": 1.0}),
    "charge.refunded": ("refund", "normal", {"amount_refunded": 1.0}),
    "charge.succeeded": ("payment_succeeded", "low", {"amount": 20.0, "test_mode": True}),
    "checkout.session.completed": ("payment_succeeded", "low", {"amount": 30.0, "customer": "cus_00000000000000"}),
    "customer.created": ("customer", "low", {"customer": "cus_00000000000000"}),
    "customer.deleted": ("customer", "low", {"customer": "cus_00000000000000"}),
    "customer.subscription.created": ("subscription_started", "normal", {"status": "active"}),
    "customer.subscription.deleted": ("subscription_canceled", "high", {"customer": "cus_00000000000000"}),
    "customer.subscription.updated": ("subscription_changed", "low", {"customer": "cus_00000000000000"}),
    "customer.updated": ("customer", "low", {"customer": "cus_00000000000000"}),
    "invoice.created": ("invoice", "low", {"amount": 15.0}),
    "invoice.finalized": ("invoice", "low", {"amount": 20.0}),
    "invoice.paid": ("payment_succeeded", "low", {"amount": 20.0}),
    "invoice.payment_action_required": ("action_required", "normal", {"amount": 20.0}),
    "invoice.payment_failed": ("payment_failed", "high", {"attempt_count": 1, "amount": 20.0}),
    "invoice.payment_succeeded": ("payment_succeeded", "low", {"amount": 20.0}),
    "payment_intent.canceled": ("payment_canceled", "normal", {"cancellation_reason": "requested_by_customer"}),
    "payment_intent.created": ("payment", "low", {"amount": 20.0}),
    "payment_intent.payment_failed": (
        "payment_failed",
        "high",
        {"decline_code": "generic_decline", "decline_message": "Your card was declined."},
    ),
    "payment_intent.requires_action": ("action_required", "normal", {"customer": "cus_00000000000000"}),
    "payment_intent.succeeded": ("payment_succeeded", "low", {"amount": 20.0}),
    "payout.paid": ("payout", "low", {"amount": 11.0}),
    "setup_intent.succeeded": ("payment_method", "low", {"test_mode": True}),
}


def signals(result: Any) -> dict[str, Any]:
    return {signal.name: signal.value for signal in result.signals}


@needs_fixtures
def test_every_fixture_type_has_its_expected_triage() -> None:
    seen = set()
    for path in fixture_events():
        event = json.loads(path.read_bytes())
        category, priority, key_signals = EXPECTED[event["type"]]
        result = classify(event)
        assert (result.category, result.priority) == (category, priority), event["type"]
        assert key_signals.items() <= signals(result).items(), (event["type"], signals(result))
        for signal in result.signals:
            assert signal.field == "livemode" or signal.field == "account" or signal.field.startswith("data.object.")
        assert result.summary.startswith(
            (
                "Card ",
                "Account ",
                "Charge ",
                "Dispute ",
                "Refund ",
                "Checkout ",
                "Customer ",
                "Subscription ",
                "Invoice ",
                "Payment ",
                "Payout ",
                "Setup ",
            )
        )
        if "amount_display" in signals(result):
            assert signals(result)["amount_display"] in result.summary
        if signals(result).get("customer"):
            assert signals(result)["customer"] in result.summary
        assert result.suggested_actions[-1].tool == "ack_event"
        assert result.suggested_actions[-1].arguments["event_id"] == event["id"]
        seen.add(event["type"])
    assert seen == set(EXPECTED)


def event(event_type: str, obj: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": "evt_hand",
        "object": "event",
        "type": event_type,
        "created": 1_700_000_000,
        "livemode": True,
        "data": {"object": obj},
        **fields,
    }


def test_failed_invoice_summary_reads_as_a_person_would_write_it() -> None:
    result = classify(
        event(
            "invoice.payment_failed",
            {
                "id": "in_1",
                "object": "invoice",
                "customer": "cus_7",
                "amount_due": 4900,
                "currency": "usd",
                "attempt_count": 3,
                "next_payment_attempt": 1_700_259_200,
                "last_payment_error": {
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.",
                },
            },
        )
    )
    assert result.summary == (
        "Invoice in_1 for cus_7 failed: your card has insufficient funds (insufficient_funds), attempt 3, "
        "next retry 2023-11-17, USD 49.00"
    )
    assert signals(result)["next_retry"] == "2023-11-17" and signals(result)["decline_code"] == "insufficient_funds"
    assert [a.tool for a in result.suggested_actions] == ["create_ticket", "ack_event"]
    assert result.suggested_actions[0].arguments == {
        "event_id": "evt_hand",
        "title": result.summary,
        "priority": "high",
    }


@pytest.mark.parametrize(
    ("event_type", "obj", "category", "priority", "key_signals", "in_summary"),
    [
        (
            "charge.dispute.created",
            {
                "id": "du_1",
                "object": "dispute",
                "amount": 125000,
                "currency": "eur",
                "reason": "product_not_received",
                "evidence_details": {"due_by": 1_700_600_000},
            },
            "dispute",
            "urgent",
            {"dispute_reason": "product_not_received", "evidence_due": "2023-11-21"},
            "Dispute du_1 created: product not received, evidence due 2023-11-21, EUR 1,250.00",
        ),
        (
            "charge.dispute.closed",
            {
                "id": "du_2",
                "object": "dispute",
                "amount": 100,
                "currency": "usd",
                "reason": "fraudulent",
                "status": "won",
            },
            "dispute",
            "normal",
            {"dispute_reason": "fraudulent"},
            "Dispute du_2 closed: fraudulent",
        ),
        (
            "radar.early_fraud_warning.created",
            {
                "id": "issfr_1",
                "object": "radar.early_fraud_warning",
                "actionable": True,
                "charge": "ch_1",
                "fraud_type": "made_with_stolen_card",
            },
            "fraud_warning",
            "urgent",
            {"fraud_type": "made_with_stolen_card"},
            "Early fraud warning issfr_1 created: made with stolen card",
        ),
        (
            "review.opened",
            {"id": "prv_1", "object": "review", "reason": "rule", "charge": "ch_1"},
            "fraud_warning",
            "high",
            {"review_reason": "rule"},
            "Review prv_1 opened: rule",
        ),
        (
            "payout.failed",
            {
                "id": "po_1",
                "object": "payout",
                "amount": 98000,
                "currency": "usd",
                "failure_code": "account_closed",
                "arrival_date": 1_700_000_000,
            },
            "payout_failed",
            "urgent",
            {"failure_code": "account_closed", "amount": 980.0},
            "Payout po_1 failed: account closed, USD 980.00",
        ),
        (
            "customer.subscription.trial_will_end",
            {
                "id": "sub_1",
                "object": "subscription",
                "customer": "cus_1",
                "status": "trialing",
                "trial_end": 1_700_259_200,
            },
            "trial_ending",
            "normal",
            {"trial_end": "2023-11-17"},
            "Subscription sub_1 for cus_1 trial ends soon",
        ),
        (
            "customer.subscription.deleted",
            {
                "id": "sub_2",
                "object": "subscription",
                "customer": "cus_2",
                "status": "canceled",
                "cancellation_details": {"reason": "payment_failed", "feedback": "too_expensive"},
            },
            "subscription_canceled",
            "high",
            {"cancellation_reason": "payment_failed"},
            "Subscription sub_2 for cus_2 canceled: payment failed",
        ),
        (
            "checkout.session.expired",
            {"id": "cs_1", "object": "checkout.session", "amount_total": 1999, "currency": "gbp", "customer": None},
            "checkout_expired",
            "low",
            {"amount": 19.99},
            "Checkout session cs_1 expired, GBP 19.99",
        ),
        (
            "issuing_card.created",
            {"id": "ic_1", "object": "issuing.card"},
            "other",
            "low",
            {},
            "Issuing.card ic_1 created",
        ),
    ],
)
def test_hand_written_high_stakes_events(
    event_type: str, obj: dict[str, Any], category: str, priority: str, key_signals: dict[str, Any], in_summary: str
) -> None:
    result = classify(event(event_type, obj, account="acct_9"))
    assert (result.category, result.priority) == (category, priority)
    assert key_signals.items() <= signals(result).items()
    assert in_summary in result.summary
    assert signals(result)["account"] == "acct_9" and "test_mode" not in signals(result)
    if priority == "urgent":
        assert "notify" in [a.tool for a in result.suggested_actions]
    if category == "other":
        assert result.suggested_actions[-1].arguments["outcome"] == "ignored"


def test_high_value_raises_priority_per_currency() -> None:
    paid = event(
        "payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent", "amount": 250000, "currency": "usd"}
    )
    assert classify(paid).priority == "low"
    policy = Policy(high_value={"usd": 2000, "eur": 100})
    result = classify(paid, policy)
    assert result.priority == "normal" and signals(result)["high_value"] is True
    assert result.summary.endswith("USD 2,500.00, high value")
    yen = event(
        "payment_intent.succeeded", {"id": "pi_2", "object": "payment_intent", "amount": 2500, "currency": "jpy"}
    )
    assert "high_value" not in signals(classify(yen, Policy(high_value={"jpy": 3000})))
    assert signals(classify(yen, Policy(high_value={"jpy": 2500})))["amount"] == 2500.0


RULES_TOML = """
[channels.billing]
type = "log"

[[rules]]
match = ["invoice.payment_failed", "charge.failed"]
when = { amount = { gte = 100 }, currency = "usd" }
priority = "urgent"
actions = [
  { tool = "create_ticket", title = "Big failure: {summary}", priority = "urgent" },
  { tool = "notify", channel = "billing", message = "{amount} failed for {customer}" },
  { tool = "ack_event", outcome = "escalated", note = "ticketed" },
]

[[rules]]
match = ["invoice.*"]
when = { "data.object.billing_reason" = ["manual"] }
priority = "low"
actions = [{ tool = "ack_event", outcome = "ignored" }]
"""


def invoice_failed(amount: int, billing_reason: str = "subscription_cycle") -> dict[str, Any]:
    return event(
        "invoice.payment_failed",
        {
            "id": "in_9",
            "object": "invoice",
            "customer": "cus_9",
            "amount_due": amount,
            "currency": "usd",
            "attempt_count": 1,
            "billing_reason": billing_reason,
        },
    )


def test_rules_from_config_set_priority_and_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stripe-inbox.toml").write_text(RULES_TOML)
    settings = load_settings(db=str(tmp_path / "r.db"))
    big = classify(invoice_failed(25000), settings.policy, settings.rules)
    assert big.priority == "urgent"
    assert [(a.tool, a.arguments) for a in big.suggested_actions] == [
        ("create_ticket", {"event_id": "evt_hand", "title": f"Big failure: {big.summary}", "priority": "urgent"}),
        ("notify", {"event_id": "evt_hand", "message": "USD 250.00 failed for cus_9", "channel": "billing"}),
        ("ack_event", {"event_id": "evt_hand", "outcome": "escalated", "note": "ticketed"}),
    ]
    small_manual = classify(invoice_failed(500, "manual"), settings.policy, settings.rules)
    assert small_manual.priority == "low"
    assert [(a.tool, a.arguments) for a in small_manual.suggested_actions] == [
        ("ack_event", {"event_id": "evt_hand", "outcome": "ignored"})
    ]
    untouched = classify(invoice_failed(500), settings.policy, settings.rules)
    assert untouched == classify(invoice_failed(500))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('match = ["invoice.*"]\nwhen = { amout = 5 }', "unknown field 'amout'"),
        ('match = ["invoice.*"]\nwhen = { amount = { over = 5 } }', "amount: unknown operator 'over'"),
        ('match = ["invoice.*"]\nactions = [{ tool = "refund" }]', "unknown tool 'refund'"),
        (
            'match = ["invoice.*"]\nactions = [{ tool = "notify", channel = "pager" }]',
            "notify names channel 'pager', which is not configured",
        ),
        ('match = ["invoice.*"]\nactions = [{ tool = "notify" }]', "notify needs a channel"),
        (
            'match = ["invoice.*"]\nactions = [{ tool = "create_ticket", title = "{nope}" }]',
            "create_ticket.title uses {nope}",
        ),
        ('match = ["invoice.*"]\nactions = [{ tool = "ack_event", outcome = "done" }]', "outcome must be one of"),
        (
            'match = ["invoice.*"]\nactions = [{ tool = "ack_event", colour = "red" }]',
            "ack_event has no argument 'colour'",
        ),
        ('match = ["invoice*"]', "'invoice*' is not an event type pattern"),
        ('match = ["invoice.*"]\npriority = "asap"', "rules.0.priority"),
        ("match = []", "rules.0.match"),
    ],
)
def test_bad_rules_fail_at_startup_naming_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stripe-inbox.toml").write_text(f"[[rules]]\n{rule}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(db=str(tmp_path / "r.db"))
    assert message in str(caught.value)


@needs_fixtures
@pytest.mark.anyio
async def test_redaction_hides_people_in_every_mcp_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stripe-inbox.toml").write_text('redact = ["email", "phone", "address", "name"]\n')
    settings = load_settings(db=str(tmp_path / "redact.db"), webhook_secret=SECRET)
    copies = fresh_copies()
    person = json.loads(copies[0][1])  # a real fixture, given the personal data a live charge carries
    person["id"] = "evt_person"
    person["data"]["object"].update(
        receipt_email="jenny.rosen@example.com",
        billing_details={
            "email": "jenny.rosen@example.com",
            "phone": "+1 415 555 0199",
            "name": "Jenny Rosen",
            "address": {"line1": "510 Townsend St", "city": "San Francisco", "postal_code": "94103"},
        },
        description="Order for jenny.rosen@example.com",
    )
    copies.append(("evt_person", encode(person)))
    personal = ["+1 415 555 0199", "Jenny Rosen", "510 Townsend St", "San Francisco"]
    async with open_inbox(settings) as inbox:
        for _, payload in copies:
            await inbox.store.add_events([IncomingEvent.parse(payload)], time.time())
        server = create_mcp_server(inbox)
        outputs: list[str] = []
        async with server.running(), Client(server) as client:
            outputs.append((await client.read_resource("stripe://events/pending")).contents[0].text)
            outputs.append(json.dumps((await client.call_tool("list_events", {"limit": 100})).structured_content))
            for event_id, _ in copies:
                outputs.append(
                    json.dumps((await client.call_tool("classify", {"event_id": event_id})).structured_content)
                )
                outputs.append(
                    json.dumps((await client.call_tool("get_event", {"event_id": event_id})).structured_content)
                )
                outputs.append((await client.read_resource(f"stripe://events/{event_id}")).contents[0].text)
                prompt = await client.get_prompt("draft_customer_email", {"event_id": event_id})
                outputs.append(prompt.messages[0].content.text)
            outputs.append((await client.get_prompt("triage_inbox")).messages[0].content.text)
        stored = await inbox.event("evt_person")
    text = "\n".join(outputs)
    assert EMAIL.findall(text) == []
    for value in personal:
        assert value not in text
    assert "[redacted]" in text and "Townsend" not in text
    assert stored.payload == encode(person)  # the stored event stays exact
    assert b"jenny.rosen@example.com" in stored.payload
