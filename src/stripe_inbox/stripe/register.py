"""Registering this inbox as a webhook endpoint on the Stripe account, and keeping its signing secret."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlparse

from pydantic import BaseModel

from ..errors import InvalidArgument
from ..events import check_patterns
from ..settings import Settings, store_secret
from .api import StripeAPI, StripeAPIError


class Registration(BaseModel):
    endpoint_id: str | None
    url: str
    enabled_events: list[str]
    secret_file: str | None
    request: str
    notes: list[str]


def endpoint_params(url: str, events: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The create request for `url`; Stripe takes '*' or exact types, so prefix patterns become '*'."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidArgument(f"--url {url!r} is not an http(s) URL, e.g. https://inbox.example.com/webhooks/stripe")
    check_patterns(events)
    notes = []
    if parsed.scheme != "https":
        notes.append("Stripe only delivers live-mode events to https URLs")
    if not parsed.path.endswith(("/webhooks/stripe", "/webhooks/stripe/thin")):
        notes.append("the URL does not end with /webhooks/stripe, where `stripe-inbox serve` listens")
    enabled = events
    if any(pattern.endswith(".*") for pattern in events) or "*" in events:
        if events != ["*"]:
            notes.append("Stripe endpoints take exact types or '*': registering '*'; the inbox filters the rest")
        enabled = ["*"]
    return {"url": url, "enabled_events": enabled, "description": "stripe-inbox"}, notes


async def register(
    settings: Settings, url: str, events: list[str] | None, force: bool = False, dry_run: bool = False
) -> Registration:
    params, notes = endpoint_params(url, events or settings.events)
    request = f"POST {settings.api_base.rstrip('/')}/v1/webhook_endpoints\n{urlencode(_form(params))}"
    if dry_run:
        return Registration(
            endpoint_id=None,
            url=url,
            enabled_events=params["enabled_events"],
            secret_file=None,
            request=request,
            notes=notes,
        )
    api = StripeAPI(settings.api_key, settings.api_base)
    existing = [endpoint["id"] async for endpoint in api.webhook_endpoints() if endpoint.get("url") == url]
    if existing and not force:
        raise StripeAPIError(
            f"an endpoint for {url} already exists ({', '.join(existing)}): two endpoints for one URL deliver "
            "every event twice. Pass --force to create another anyway."
        )
    endpoint = await api.create_webhook_endpoint(params)
    secret = endpoint.get("secret")
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise StripeAPIError(f"Stripe created {endpoint.get('id')} but returned no signing secret")
    store_secret(settings.secret_file, secret)
    return Registration(
        endpoint_id=endpoint.get("id"),
        url=url,
        enabled_events=params["enabled_events"],
        secret_file=str(settings.secret_file),
        request=request,
        notes=notes,
    )


def _form(params: dict[str, Any]) -> list[tuple[str, str]]:
    """As the stripe package form-encodes it."""
    pairs = []
    for key, value in params.items():
        if isinstance(value, list):
            pairs += [(f"{key}[{index}]", str(item)) for index, item in enumerate(value)]
        else:
            pairs.append((key, str(value)))
    return pairs
