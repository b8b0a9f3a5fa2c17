"""Codes and tokens: random, recognisable by a prefix, and kept only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets

ACCESS_TOKEN_PREFIX = "sio_at_"
REFRESH_TOKEN_PREFIX = "sio_rt_"
CODE_PREFIX = "sio_code_"
CONSENT_PREFIX = "sio_consent_"


def mint(prefix: str) -> str:
    """256 random bits; the prefix lets secret scanners and people tell what leaked."""
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What the database holds instead of `secret`: enough to look it up, useless to present."""
    return hashlib.sha256(secret.encode()).hexdigest()


def public_id() -> str:
    """A token's name for `tokens list` and `tokens revoke`: not a secret, and unrelated to the token."""
    return "tok_" + secrets.token_hex(6)


def grant_id() -> str:
    """Names one consent: the code it gave and every token descending from that code share it."""
    return "grant_" + secrets.token_hex(8)
