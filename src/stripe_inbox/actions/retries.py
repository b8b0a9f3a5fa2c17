"""How the outbox retries what it could not deliver (notifications, tickets and forwards alike): `[outbox]` in the
settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SECONDS_A_DAY = 86400.0


class OutboxPolicy(BaseModel):
    """How undelivered notifications and tickets are retried: exponential backoff, bounded attempts."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_seconds: float = Field(default=5.0, gt=0, le=SECONDS_A_DAY)
    retry_max_seconds: float = Field(default=3600.0, gt=0, le=7 * SECONDS_A_DAY)
    # A forward destination that fails this many times in a row is paused for pause_seconds, then probed.
    pause_after_failures: int = Field(default=5, ge=1, le=1000)
    pause_seconds: float = Field(default=60.0, gt=0, le=SECONDS_A_DAY)
