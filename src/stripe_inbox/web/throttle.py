"""Failed sign-ins, counted per client address: a few mistakes are free, then each further one locks that
address out for twice as long as the one before, so guessing the access token through a form is hopeless."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5
FIRST_LOCK_SECONDS = 2.0
MAX_LOCK_SECONDS = 900.0
FORGET_AFTER_SECONDS = 3600.0  # a quiet hour wipes an address's slate
MAX_ADDRESSES = 10_000  # past that, the address quiet the longest is forgotten


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float
    locked_until: float


class SignInThrottle:
    """Say how long an address must wait before its next try; count its failures; forget them on success."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: dict[str, _Record] = {}  # least recently failed first

    def wait_seconds(self, address: str) -> int:
        """Whole seconds `address` must still wait before trying again; 0 when it may try now."""
        record = self._current(address)
        return 0 if record is None else max(0, math.ceil(record.locked_until - self._clock()))

    def failed(self, address: str) -> None:
        now = self._clock()
        record = self._current(address) or _Record(0, now, now)
        record.failures += 1
        record.last_failure = now
        if record.failures >= FREE_FAILURES:
            lock = FIRST_LOCK_SECONDS * 2 ** min(record.failures - FREE_FAILURES, 20)
            record.locked_until = now + min(lock, MAX_LOCK_SECONDS)
        self._records.pop(address, None)
        while len(self._records) >= MAX_ADDRESSES:
            del self._records[next(iter(self._records))]
        self._records[address] = record

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)

    def _current(self, address: str) -> _Record | None:
        record = self._records.get(address)
        if record is not None and self._clock() - record.last_failure > FORGET_AFTER_SECONDS:
            del self._records[address]
            return None
        return record
