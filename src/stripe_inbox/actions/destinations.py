"""Where events are forwarded: the `[[forward]]` tables of the settings, each an existing webhook handler. The
delivery itself is actions/forward.py's."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from ..events import check_patterns

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


class ForwardDestination(BaseModel):
    """A `[[forward]]` table: an existing webhook handler that gets every new event its patterns take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="how replays and the outbox name it")
    url: HttpUrl
    events: list[str] = Field(default_factory=lambda: ["*"])
    secret_env: str = Field(description="environment variable holding the destination's whsec_… secret")
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @field_validator("events")
    @classmethod
    def _check_events(cls, patterns: list[str]) -> list[str]:
        return check_patterns(patterns)

    def secrets(self) -> list[str]:
        """The signing secrets, read from the environment at start-up and kept in memory only; several
        (comma-separated) sign with each, as Stripe does while a secret is being rolled."""
        return [entry.strip() for entry in os.environ.get(self.secret_env, "").split(",")]
