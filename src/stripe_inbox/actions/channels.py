"""Notification channels: how each is configured, and how a message reaches it."""

from __future__ import annotations

import json
import logging
import os
from email.message import EmailMessage
from typing import Annotated, Any, Literal

import aiosmtplib
import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from ..errors import DeliveryFailed, InvalidArgument
from ..stripe.signature import sign

log = logging.getLogger("stripe_inbox.notify")

SIGNATURE_HEADER = "Stripe-Inbox-Signature"
SEND_TIMEOUT_SECONDS = 10
CUSTOMER = "customer"
# Where Stripe objects carry the customer's address, in the order we trust them.
EMAIL_FIELDS = ("customer_email", "receipt_email", "customer_details.email", "billing_details.email", "email")


Address = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="an email address")]


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where a message leaves for someone outside, a person may want to agree first; see approvals.py.
    confirm: bool | None = Field(default=None, description="send only after a person agreed")

    @model_validator(mode="after")
    def _environment_is_set(self) -> ConfigModel:
        for field, value in self:
            if field.endswith("_env") and value is not None and not os.environ.get(value):
                raise ValueError(f"{field}: environment variable {value} is not set")
        return self


def env(name: str | None) -> str | None:
    """The value of a secret named in the config; read at use, never stored."""
    return os.environ.get(name) if name else None


class LogChannel(ConfigModel):
    type: Literal["log"] = "log"


class SlackChannel(ConfigModel):
    type: Literal["slack"]
    webhook_url_env: str = Field(description="environment variable holding the incoming-webhook URL")

    @model_validator(mode="after")
    def _holds_a_url(self) -> SlackChannel:
        if not (env(self.webhook_url_env) or "").startswith(("https://", "http://")):
            raise ValueError(f"webhook_url_env: {self.webhook_url_env} does not hold an http(s) URL")
        return self


class EmailChannel(ConfigModel):
    type: Literal["email"]
    host: str
    port: int = Field(default=587, gt=0, lt=65536)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username_env: str | None = None
    password_env: str | None = None
    from_: Address = Field(alias="from")
    to: Literal["customer"] | Address


class WebhookChannel(ConfigModel):
    type: Literal["webhook"]
    url: HttpUrl
    secret_env: str = Field(description="environment variable holding the HMAC signing secret")


ChannelConfig = Annotated[LogChannel | SlackChannel | EmailChannel | WebhookChannel, Field(discriminator="type")]


class Message(BaseModel):
    """What a channel sends: the text, and the facts about the event it concerns."""

    channel: str
    text: str
    subject: str | None = None
    recipient: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    customer: str | None = None
    amount: str | None = None


def recipient_for(config: ChannelConfig, event: dict[str, Any] | None) -> str | None:
    """The address a message goes to; resolves to = "customer" from the event."""
    if not isinstance(config, EmailChannel):
        return None
    if config.to != CUSTOMER:
        return str(config.to)
    if event is None:
        raise InvalidArgument("this channel sends to the customer: pass the event_id the message is about")
    obj = event.get("data", {}).get("object", {})
    for path in EMAIL_FIELDS:
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and "@" in value:
            return value
    raise InvalidArgument(
        f"event {event.get('id')!r} has no customer email address (looked in data.object {', '.join(EMAIL_FIELDS)})"
    )


async def send(config: ChannelConfig, message: Message) -> None:
    """Deliver one message; raises DeliveryFailed, marked permanent when retrying cannot help."""
    if isinstance(config, LogChannel):
        log.info("notify [%s] %s%s", message.channel, f"{message.subject}: " if message.subject else "", message.text)
    elif isinstance(config, SlackChannel):
        await post_json(env(config.webhook_url_env) or "", slack_payload(message))
    elif isinstance(config, WebhookChannel):
        await post_json(str(config.url), message.model_dump(), secret=env(config.secret_env))
    else:
        await _send_email(config, message)


def slack_payload(message: Message) -> dict[str, Any]:
    facts = [
        f"*{label}:* {value}"
        for label, value in (
            ("Event", f"`{message.event_id}` {message.event_type}" if message.event_id else None),
            ("Customer", message.customer),
            ("Amount", message.amount),
        )
        if value
    ]
    headline = f"*{message.subject}*\n{message.text}" if message.subject else message.text
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": headline}}]
    if facts:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "  ·  ".join(facts)}]})
    fallback = " | ".join([message.text, *(f.replace("*", "") for f in facts)])
    return {"text": fallback, "blocks": blocks}


async def post_json(
    url: str, payload: dict[str, Any], secret: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = json.dumps(payload).encode()
    all_headers = {"Content-Type": "application/json", "User-Agent": "stripe-inbox", **(headers or {})}
    if secret:
        all_headers[SIGNATURE_HEADER] = sign(body, secret)  # Stripe's own scheme, so receivers know it
    try:
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT_SECONDS) as client:
            response = await client.post(url, content=body, headers=all_headers)
    except httpx.TimeoutException:
        raise DeliveryFailed("timed out", permanent=False) from None
    except httpx.TransportError as error:
        raise DeliveryFailed(f"cannot connect: {type(error).__name__}", permanent=False) from None
    if response.status_code >= 300:
        # Throttling and server errors pass; any other refusal will not change on retry.
        retry = response.status_code in (408, 429) or response.status_code >= 500
        raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:200]}", permanent=not retry)
    return response


async def _send_email(config: EmailChannel, message: Message) -> None:
    email = EmailMessage()
    email["From"] = str(config.from_)
    email["To"] = message.recipient or ""
    email["Subject"] = message.subject or (f"Stripe {message.event_type}" if message.event_type else "stripe-inbox")
    email.set_content(message.text)
    try:
        await aiosmtplib.send(
            email,
            hostname=config.host,
            port=config.port,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            username=env(config.username_env),
            password=env(config.password_env),
            timeout=SEND_TIMEOUT_SECONDS,
        )
    except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPSenderRefused) as error:
        raise DeliveryFailed(f"refused by the mail server: {error}", permanent=True) from None
    except aiosmtplib.SMTPAuthenticationError:
        raise DeliveryFailed("the mail server refused the credentials", permanent=True) from None
    except (aiosmtplib.SMTPException, OSError) as error:
        raise DeliveryFailed(f"mail server unavailable: {type(error).__name__}", permanent=False) from None
