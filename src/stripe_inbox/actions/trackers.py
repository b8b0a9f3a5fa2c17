"""Ticket trackers a ticket is forwarded to: GitHub Issues, or any HTTP endpoint."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, HttpUrl

from .channels import ConfigModel, env, post_json


class GitHubTracker(ConfigModel):
    type: Literal["github"]
    repository: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="owner/name")
    token_env: str = Field(description="environment variable holding a token that may create issues")
    api_base: HttpUrl = HttpUrl("https://api.github.com")
    labels: list[str] = Field(default_factory=lambda: ["stripe-inbox"])


class WebhookTracker(ConfigModel):
    type: Literal["webhook"]
    url: HttpUrl
    secret_env: str


TrackerConfig = Annotated[GitHubTracker | WebhookTracker, Field(discriminator="type")]


class TicketRequest(BaseModel):
    ticket_id: int
    event_id: str
    event_type: str
    title: str
    body: str
    priority: str


class TrackerReceipt(BaseModel):
    id: str | None = None
    url: str | None = None


async def forward(config: TrackerConfig, ticket: TicketRequest) -> TrackerReceipt:
    """Create the ticket in the tracker; raises DeliveryFailed, marked permanent when retrying cannot help."""
    if isinstance(config, GitHubTracker):
        response = await post_json(
            f"{str(config.api_base).rstrip('/')}/repos/{config.repository}/issues",
            {
                "title": ticket.title,
                "body": f"{ticket.body}\n\nStripe event `{ticket.event_id}` ({ticket.event_type}), "
                f"opened by stripe-inbox.".strip(),
                "labels": [*config.labels, f"priority: {ticket.priority}"],
            },
            headers={
                "Authorization": f"Bearer {env(config.token_env)}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        created = _json(response.content)
        number = created.get("number")
        return TrackerReceipt(id=None if number is None else f"#{number}", url=created.get("html_url"))
    response = await post_json(str(config.url), ticket.model_dump(), secret=env(config.secret_env))
    answer = _json(response.content)
    return TrackerReceipt(id=_text(answer.get("id")), url=_text(answer.get("url")))


def _json(content: bytes) -> dict[str, Any]:
    """The tracker's answer, if it is a JSON object; the ticket exists either way."""
    try:
        value = json.loads(content) if content else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
