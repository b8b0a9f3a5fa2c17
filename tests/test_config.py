"""Settings: precedence, TOML, and start-up errors that name the key but never a secret."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from stripe_inbox.errors import ConfigError, DeliveryRejected
from stripe_inbox.settings import generate_secret, load_settings, store_secret
from stripe_inbox.stripe.signature import sign, verify

from .conftest import OTHER_SECRET, SECRET


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STRIPE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("sk_live_abcdef123456", "looks like a Stripe API key (sk_…)"),
        ("rk_test_abcdef123456", "looks like a Stripe API key (rk_…)"),
        ("whsec_abc\ndef123456", "contains whitespace"),
        (f"{SECRET},,{OTHER_SECRET}", "entry 2 of 3 is empty"),
        ("hunter2hunter2", "does not look like a webhook signing secret"),
        ("whsec_short", "does not look like a webhook signing secret"),
    ],
)
def test_malformed_secret_is_named_but_never_printed(monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "STRIPE_WEBHOOK_SECRET" in message and problem in message
    for part in value.split(","):
        if len(part) > 6:
            assert part[6:] not in message


def test_secrets_are_comma_separated_with_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f" {SECRET} ,  {OTHER_SECRET} ")
    assert load_settings().webhook_secrets == [SECRET, OTHER_SECRET]


def test_precedence_flag_then_environment_then_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stripe-inbox.toml").write_text('db = "toml.db"\nevents = ["invoice.*"]\n')
    assert load_settings().db == "toml.db"
    monkeypatch.setenv("STRIPE_INBOX_DB", "env.db")
    assert load_settings().db == "env.db"
    assert load_settings(db="flag.db").db == "flag.db"
    assert load_settings().events == ["invoice.*"]


def test_api_key_accepts_either_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_x")
    assert load_settings().api_key == "sk_test_x"
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_y")
    assert load_settings().api_key == "sk_test_y"


def test_config_file_from_environment_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('[policy]\ninstructions = "be brief"\n')
    monkeypatch.setenv("STRIPE_INBOX_CONFIG", str(config))
    assert load_settings().policy.instructions == "be brief"
    with pytest.raises(ConfigError, match=r"config file nope\.toml does not exist"):
        load_settings("nope.toml")
    config.write_text("datbase = 'typo.db'\n")
    with pytest.raises(ConfigError, match=r"datbase: unknown setting in .*elsewhere\.toml"):
        load_settings()
    config.write_text("events = [\n")
    with pytest.raises(ConfigError, match=r"elsewhere\.toml"):
        load_settings()
    config.write_text('events = ["invoice*"]\n')
    with pytest.raises(ConfigError, match="'invoice\\*' is not an event type pattern"):
        load_settings()


def test_stored_secret_is_private_and_joins_configured_ones(tmp_path: Path) -> None:
    settings = load_settings(db=str(tmp_path / "a.db"), webhook_secret=SECRET)
    generated = generate_secret()
    store_secret(settings.secret_file, generated)
    assert stat.S_IMODE(settings.secret_file.stat().st_mode) == 0o600
    assert settings.webhook_secrets == [SECRET, generated]
    assert load_settings(db=str(tmp_path / "a.db")).webhook_secrets == [generated]


def test_signature_round_trip_and_codes() -> None:
    payload = b'{"id": "evt_1", "type": "invoice.paid"}'
    now = int(time.time())
    assert verify(payload, sign(payload, OTHER_SECRET, now), [SECRET, OTHER_SECRET]) == now
    for header, secrets, code in [
        (None, [SECRET], "missing_signature"),
        (sign(payload, SECRET, now), [OTHER_SECRET], "invalid_signature"),
        (sign(payload, SECRET, now - 301), [SECRET], "timestamp_out_of_tolerance"),
        (sign(payload, SECRET, now + 301), [SECRET], "timestamp_out_of_tolerance"),
        (f"t={now}", [SECRET], "invalid_signature"),
    ]:
        with pytest.raises(DeliveryRejected) as caught:
            verify(payload, header, secrets)
        assert caught.value.code == code
