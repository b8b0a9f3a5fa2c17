"""Stripe's webhook signature scheme, verified against several secrets and bounded in time both ways."""

from __future__ import annotations

import hmac
import time

import stripe

from ..errors import DeliveryRejected

TOLERANCE_SECONDS = 300
MAX_TIMESTAMP_DIGITS = 12  # Unix seconds until the year 33658
SCHEME = stripe.WebhookSignature.EXPECTED_SCHEME  # "v1"; read once: the stripe module resolves names lazily
# hashlib lets go of the GIL to hash a long message in one call (HMAC.update from 2,048 bytes), and the event loop then
# waits to get it back from the ingest thread, up to a switch interval (5 ms): far longer than the hash takes.
GIL_KEEPING_CHUNK = 2047


def verify(payload: bytes, header: str | None, secrets: list[str], now: float | None = None) -> int:
    """Return the signed timestamp, or raise DeliveryRejected with the public error code.

    Stripe's scheme (`stripe.WebhookSignature`): HMAC-SHA256 over "<t>.<body>", hex, in `v1=` entries.
    The `stripe` package checks one secret, only past timestamps, and decodes the body for each try; we
    hash the received bytes against every secret and every `v1`, and also refuse timestamps from the
    future, so a captured signature cannot be pre-dated. The tests hold this to the package's verdicts.
    """
    if not header:
        raise DeliveryRejected("missing_signature", "no Stripe-Signature header")
    timestamp, signatures = _parse(header)
    signed = b"%d." % timestamp + payload
    expected = [_hmac_sha256_hex(secret.encode(), signed) for secret in secrets]
    if not any(hmac.compare_digest(mine, theirs) for mine in expected for theirs in signatures):
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


def _hmac_sha256_hex(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of `message`, fed in pieces small enough that the GIL stays with the event loop."""
    mac = hmac.new(key, digestmod="sha256")
    view = memoryview(message)
    for start in range(0, len(view), GIL_KEEPING_CHUNK):
        mac.update(view[start : start + GIL_KEEPING_CHUNK])
    return mac.hexdigest()


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and timestamp is None:
            timestamp = _timestamp(value)
        elif key == SCHEME and value.isascii():  # "v0" never counts; a non-ASCII value is no hex digest
            signatures.append(value)
    if timestamp is None:
        raise DeliveryRejected("invalid_signature", "the Stripe-Signature header has no t= timestamp")
    return timestamp, signatures


def _timestamp(value: str) -> int:
    # str.isdigit() also takes "²" and other digits int() refuses; and int() refuses thousands of digits.
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_TIMESTAMP_DIGITS:
        raise DeliveryRejected(
            "invalid_signature", "the Stripe-Signature header's t= is not a Unix timestamp in seconds"
        )
    return int(value)
