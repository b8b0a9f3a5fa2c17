"""Stripe's webhook signature scheme, verified against several secrets and bounded in time both ways."""

from __future__ import annotations

import time

import stripe

from .errors import DeliveryRejected

TOLERANCE_SECONDS = 300


def verify(payload: bytes, header: str | None, secrets: list[str], now: float | None = None) -> int:
    """Return the signed timestamp, or raise DeliveryRejected with the public error code.

    The `stripe` package checks one secret and only past timestamps; we try every secret and
    also refuse timestamps from the future, so a captured signature cannot be pre-dated.
    """
    if not header:
        raise DeliveryRejected("missing_signature", "no Stripe-Signature header")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise DeliveryRejected("invalid_payload", "the body is not UTF-8") from None
    timestamp = _timestamp(header)
    if not any(_matches(text, header, secret) for secret in secrets):
        raise DeliveryRejected("invalid_signature", "no v1 signature matches any configured webhook secret")
    skew = (time.time() if now is None else now) - timestamp
    if abs(skew) > TOLERANCE_SECONDS:
        direction = "old" if skew > 0 else "in the future"
        raise DeliveryRejected(
            "timestamp_out_of_tolerance",
            f"the signature timestamp is {abs(int(skew))} s {direction}; at most {TOLERANCE_SECONDS} s allowed",
        )
    return timestamp


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, exactly as Stripe would send it."""
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode("utf-8"), secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )


def _timestamp(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise DeliveryRejected("invalid_signature", "the Stripe-Signature header has no valid t= timestamp")


def _matches(text: str, header: str, secret: str) -> bool:
    try:
        # tolerance=None: the time window is checked above, in both directions.
        return stripe.WebhookSignature.verify_header(text, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return False
