"""Realistic test-mode events for `trigger`, written from Stripe's documented object shapes."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

API_VERSION = "2025-09-30.clover"
Obj = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _customer() -> tuple[str, str]:
    return _id("cus"), "jenny.rosen@example.com"


def _card_error(decline_code: str = "insufficient_funds") -> Obj:
    return {
        "charge": _id("ch"),
        "code": "card_declined",
        "decline_code": decline_code,
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "Your card has insufficient funds.",
        "payment_method": {
            "id": _id("pm"),
            "object": "payment_method",
            "type": "card",
            "card": {"brand": "visa", "last4": "9995", "exp_month": 12, "exp_year": 2030},
        },
        "type": "card_error",
    }


def checkout_session_completed(now: int) -> Obj:
    customer, email = _customer()
    return {
        "id": _id("cs_test"),
        "object": "checkout.session",
        "amount_subtotal": 4900,
        "amount_total": 4900,
        "created": now - 60,
        "currency": "usd",
        "customer": customer,
        "customer_details": {"email": email, "name": "Jenny Rosen", "address": {"country": "US"}},
        "customer_email": email,
        "livemode": False,
        "mode": "subscription",
        "payment_status": "paid",
        "status": "complete",
        "subscription": _id("sub"),
        "invoice": _id("in"),
        "metadata": {},
        "success_url": "https://example.com/success",
    }


def payment_intent(now: int, status: str, error: Obj | None = None) -> Obj:
    customer, email = _customer()
    return {
        "id": _id("pi"),
        "object": "payment_intent",
        "amount": 4900,
        "amount_received": 4900 if error is None else 0,
        "capture_method": "automatic",
        "created": now - 5,
        "currency": "usd",
        "customer": customer,
        "description": "Pro plan",
        "last_payment_error": error,
        "latest_charge": _id("ch"),
        "livemode": False,
        "metadata": {},
        "payment_method": _id("pm"),
        "payment_method_types": ["card"],
        "receipt_email": email,
        "status": status,
    }


def invoice(now: int, paid: bool) -> Obj:
    customer, email = _customer()
    return {
        "id": _id("in"),
        "object": "invoice",
        "account_country": "US",
        "amount_due": 4900,
        "amount_paid": 4900 if paid else 0,
        "amount_remaining": 0 if paid else 4900,
        "attempt_count": 1 if paid else 3,
        "attempted": True,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": now - 3600,
        "currency": "usd",
        "customer": customer,
        "customer_email": email,
        "customer_name": "Jenny Rosen",
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_test/test_inv",
        "livemode": False,
        "next_payment_attempt": None if paid else now + 3 * 86400,
        "number": "A1B2C3D4-0007",
        "paid": paid,
        "status": "paid" if paid else "open",
        "subscription": _id("sub"),
        "subtotal": 4900,
        "total": 4900,
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": _id("il"),
                    "object": "line_item",
                    "amount": 4900,
                    "currency": "usd",
                    "description": "1 x Pro (at $49.00 / month)",
                }
            ],
            "has_more": False,
            "url": "/v1/invoices/lines",
        },
    }


def subscription(now: int, status: str, canceled: bool = False) -> Obj:
    customer, _ = _customer()
    return {
        "id": _id("sub"),
        "object": "subscription",
        "billing_cycle_anchor": now - 86400,
        "cancel_at_period_end": False,
        "canceled_at": now if canceled else None,
        "cancellation_details": {
            "comment": None,
            "feedback": "too_expensive" if canceled else None,
            "reason": "cancellation_requested" if canceled else None,
        },
        "collection_method": "charge_automatically",
        "created": now - 86400,
        "currency": "usd",
        "customer": customer,
        "ended_at": now if canceled else None,
        "livemode": False,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": _id("si"),
                    "object": "subscription_item",
                    "quantity": 1,
                    "price": {
                        "id": _id("price"),
                        "object": "price",
                        "currency": "usd",
                        "unit_amount": 4900,
                        "product": _id("prod"),
                        "recurring": {"interval": "month"},
                    },
                }
            ],
            "has_more": False,
        },
        "latest_invoice": _id("in"),
        "metadata": {},
        "status": status,
    }


def charge_refunded(now: int) -> Obj:
    customer, email = _customer()
    return {
        "id": _id("ch"),
        "object": "charge",
        "amount": 4900,
        "amount_captured": 4900,
        "amount_refunded": 4900,
        "billing_details": {
            "email": email,
            "name": "Jenny Rosen",
            "phone": None,
            "address": {"country": "US"},
        },
        "captured": True,
        "created": now - 86400,
        "currency": "usd",
        "customer": customer,
        "livemode": False,
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": 12,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": _id("pi"),
        "receipt_email": email,
        "refunded": True,
        "status": "succeeded",
    }


def dispute_created(now: int) -> Obj:
    return {
        "id": _id("du"),
        "object": "dispute",
        "amount": 4900,
        "charge": _id("ch"),
        "created": now,
        "currency": "usd",
        "evidence_details": {
            "due_by": now + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "payment_intent": _id("pi"),
        "reason": "fraudulent",
        "status": "needs_response",
    }


SAMPLES: dict[str, Callable[[int], Obj]] = {
    "checkout.session.completed": checkout_session_completed,
    "payment_intent.succeeded": lambda now: payment_intent(now, "succeeded"),
    "payment_intent.payment_failed": lambda now: payment_intent(now, "requires_payment_method", _card_error()),
    "invoice.paid": lambda now: invoice(now, paid=True),
    "invoice.payment_failed": lambda now: invoice(now, paid=False),
    "customer.subscription.created": lambda now: subscription(now, "active"),
    "customer.subscription.updated": lambda now: subscription(now, "past_due"),
    "customer.subscription.deleted": lambda now: subscription(now, "canceled", canceled=True),
    "charge.refunded": charge_refunded,
    "charge.dispute.created": dispute_created,
}


def sample_event(event_type: str, now: int | None = None) -> bytes:
    """A fresh event of `event_type` (new ids, current time) as the JSON bytes Stripe would send."""
    now = int(time.time()) if now is None else now
    obj = SAMPLES[event_type](now)
    event = {
        "id": _id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": now,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": _id("req"), "idempotency_key": secrets.token_hex(16)},
        "type": event_type,
    }
    if event_type == "customer.subscription.updated":
        event["data"]["previous_attributes"] = {"status": "active"}
    return json.dumps(event, indent=2).encode()
