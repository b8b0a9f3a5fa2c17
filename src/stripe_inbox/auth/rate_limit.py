"""A token bucket per client address, in memory: enough to keep one address from filling the database through an
endpoint anyone may call (dynamic client registration)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """`allow(key)` spends one token of `key`'s bucket; buckets hold `burst` tokens and refill `per_minute` a
    minute. Keys are capped (`max_keys`): past that the fullest buckets, the idle ones, are forgotten first."""

    def __init__(self, per_minute: float, burst: int, max_keys: int = 10_000, clock: Clock = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str) -> float | None:
        """None when `key` may go ahead (and a token is spent); else the seconds until it may."""
        bucket = self._refilled(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate

    def wait(self, key: str) -> float | None:
        """Like `allow`, spending nothing: for limits that only failures spend (`allow` after one)."""
        bucket = self._refilled(key)
        return None if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate

    def _refilled(self, key: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        return bucket

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        idle = [key for key, bucket in self._buckets.items() if now - bucket.at >= full_after]
        for key in idle or list(self._buckets)[: self.max_keys // 2]:
            del self._buckets[key]


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
