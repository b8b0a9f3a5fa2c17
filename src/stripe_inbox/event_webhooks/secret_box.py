"""The callbacks' signing secrets: checked as the draft asks (`whsec_` and base64 of 24 to 64 bytes), and stored
encrypted (AES-GCM, bound to the subscription's id) with a key kept outside the database: `events_key`
(STRIPE_INBOX_EVENTS_KEY) where replicas share no file, else a 0600 file beside the database, made on first use.
Whoever reads a database dump alone learns no secret."""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigError, InvalidArgument

KEY_BYTES = 32
NONCE_BYTES = 12
SECRET_BYTES = (24, 64)
BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
VERSION = "v1:"  # of the stored form, so that a later key rotation can tell old ciphertexts


def secret_bytes(secret: object) -> bytes:
    """The key a `whsec_…` secret stands for; InvalidArgument (never quoting it) when it is not one."""
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise InvalidArgument("delivery.secret must be a string starting with 'whsec_'")
    encoded = secret.removeprefix("whsec_")
    if not BASE64.fullmatch(encoded):
        raise InvalidArgument("delivery.secret must be 'whsec_' followed by standard base64")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise InvalidArgument("delivery.secret must be 'whsec_' followed by padded standard base64") from None
    low, high = SECRET_BYTES
    if not low <= len(raw) <= high:
        raise InvalidArgument(f"delivery.secret must hold {low} to {high} random bytes, not {len(raw)}")
    return raw


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"the events key must be base64 of {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    @classmethod
    def open(cls, configured: str | None, key_file: Path, *, create: bool = True) -> SecretBox:
        """The box of the configured key, else of the key in `key_file`, made there (0600) if it is missing and
        `create` (a subscription is being saved; delivery never makes a key its secrets could not have)."""
        if configured:
            return cls(_decode_key(configured, "events_key (STRIPE_INBOX_EVENTS_KEY)"))
        if not key_file.exists():
            if not create:
                raise ConfigError(f"the events key file {key_file} is missing: the subscriptions' secrets cannot open")
            _write_key(key_file, base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode())
        return cls(_decode_key(key_file.read_text().strip(), str(key_file)))

    def seal(self, secret: str, subscription_id: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), subscription_id.encode())
        return VERSION + base64.b64encode(nonce + sealed).decode()

    def unseal(self, stored: str, subscription_id: str) -> str:
        if not stored.startswith(VERSION):
            raise ConfigError(f"subscription {subscription_id}: its secret is stored in a form an unknown form")
        raw = base64.b64decode(stored.removeprefix(VERSION))
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], subscription_id.encode()).decode()
        except InvalidTag:
            raise ConfigError(
                f"subscription {subscription_id}: its secret does not open with this events key (another key?)"
            ) from None


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ConfigError(f"{where} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{where} must be base64 of {KEY_BYTES} bytes, not {len(key)}")
    return key


def _write_key(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
