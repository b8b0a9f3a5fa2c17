"""Notification channels: how each is configured, and how a message reaches it."""

from __future__ import annotations

import json
import logging
import os
import re
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


# One plain addr-spec and nothing else: no display name, no list, no group, no comment, no quoting, no line break.
# The characters are RFC 5322's atext (non-ASCII letters too) and a domain of dotted labels.
PLAIN_ADDRESS = r"^[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(\.[\w-]+)+$"
Address = Annotated[str, Field(pattern=PLAIN_ADDRESS, description="one plain email address, as name@example.com")]


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where a message leaves for someone outside, a person may want to agree first: see needs_confirmation.
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


def needs_confirmation(config: ConfigModel) -> bool:
    """Whether what this channel or tracker sends waits for a person's approval: as `confirm` says, else only an
    e-mail to the customer does."""
    if config.confirm is not None:
        return config.confirm
    return isinstance(config, EmailChannel) and config.to == CUSTOMER


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
    """The one address a message goes to; resolves to = "customer" from the event, refusing any value that is not
    exactly one plain address (a list, a display name or a group there would send it elsewhere too)."""
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
            problem = address_problem(value)
            if problem is not None:
                raise InvalidArgument(
                    f"event {event.get('id')!r}: the customer email in data.object.{path} is not one plain address "
                    f"({problem}); nothing was sent"
                )
            return value.strip()
    raise InvalidArgument(
        f"event {event.get('id')!r} has no customer email address (looked in data.object {', '.join(EMAIL_FIELDS)})"
    )


def address_problem(value: str) -> str | None:
    """Why `value` is not exactly one plain email address, or None when it is one."""
    value = value.strip()
    if any(not character.isprintable() for character in value):
        return "it holds a line break or another control character"
    if "<" in value or ">" in value or '"' in value:
        return "it holds a display name or an address in angle brackets"
    if ":" in value or ";" in value:
        return "it is a group of addresses"
    if "," in value or value.count("@") > 1:
        return "it holds several addresses"
    if re.fullmatch(PLAIN_ADDRESS, value) is None:
        return "expected the form name@example.com"
    return None


def header_problem(name: str, value: str) -> str | None:
    """Why `value` cannot be the single-line header `name` of a message (a line break there would start another
    header, such as Bcc), or None."""
    if any(not character.isprintable() for character in value):
        return f"{name} must be one line of text, without line breaks or other control characters"
    return None


async def send(config: ChannelConfig, message: Message) -> None:
    """Deliver one message; raises DeliveryFailed, marked permanent when retrying cannot help."""
    if isinstance(config, LogChannel):
        # One record per message: a line break from the text cannot forge a log line of its own.
        subject = f"{one_line(message.subject)}: " if message.subject else ""
        log.info("notify [%s] %s%s", message.channel, subject, one_line(message.text))
    elif isinstance(config, SlackChannel):
        await post_json(env(config.webhook_url_env) or "", slack_payload(message))
    elif isinstance(config, WebhookChannel):
        await post_json(str(config.url), message.model_dump(), secret=env(config.secret_env))
    else:
        await _send_email(config, message)


def one_line(text: str) -> str:
    """`text` with every line break and control character written as its escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def slack_text(text: str) -> str:
    """`text` as Slack shows it, never as its markup: Slack's three control characters escaped, so `<!channel>` or
    `<https://evil|label>` in a message or an event's field arrives as plain text, not a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: Message) -> dict[str, Any]:
    event = f"`{slack_text(message.event_id)}` {slack_text(message.event_type or '')}" if message.event_id else None
    facts = [
        f"*{label}:* {value}"
        for label, value in (
            ("Event", event),
            ("Customer", slack_text(message.customer) if message.customer else None),
            ("Amount", slack_text(message.amount) if message.amount else None),
        )
        if value
    ]
    text = slack_text(message.text)
    headline = f"*{slack_text(message.subject)}*\n{text}" if message.subject else text
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": headline}}]
    if facts:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "  ·  ".join(facts)}]})
    fallback = " | ".join([text, *(f.replace("*", "") for f in facts)])
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


def _email(config: EmailChannel, message: Message) -> EmailMessage:
    """The message as e-mail; what was stored before recipients and subjects were checked is checked again here,
    so such a row fails for good instead of reaching other addresses."""
    recipient = message.recipient or ""
    subject = message.subject or (f"Stripe {message.event_type}" if message.event_type else "stripe-inbox")
    problem = header_problem("the subject", subject)
    if (recipient_problem := address_problem(recipient)) is not None:
        problem = f"the recipient is not one plain address: {recipient_problem}"
    if problem is not None:
        raise DeliveryFailed(problem, permanent=True)
    email = EmailMessage()
    email["From"] = str(config.from_)
    email["To"] = recipient.strip()
    email["Subject"] = subject
    email.set_content(message.text)
    return email


async def _send_email(config: EmailChannel, message: Message) -> None:
    email = _email(config, message)
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
