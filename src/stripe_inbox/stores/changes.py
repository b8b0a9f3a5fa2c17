"""The change log: every write that changes an event records the event's id, in the same transaction, in
`changes`, whose sequence numbers readers follow from where they last read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# PostgreSQL hands out sequence numbers before commit, so a change can commit just after one numbered
# higher. A gap below the highest number read is looked for again for this long; after that it is taken
# for a rolled-back transaction, which leaves one for good.
GAP_SECONDS = 10.0
MAX_GAP = 10_000  # more numbers than transactions in flight at once could hold


class ChangeCursor:
    """Where one reader is in the change log: the highest number read, and the gaps below it."""

    def __init__(self, position: int) -> None:
        self.position = position
        self._gaps: dict[int, float] = {}  # number -> when it was first missed

    @property
    def read_after(self) -> int:
        """The number to read the log after: the lowest open gap's predecessor, or the position."""
        return min(self._gaps, default=self.position + 1) - 1

    def take(self, rows: Sequence[Sequence[Any]], now: float) -> set[str]:
        """The event ids in `rows` (seq, event_id), read after `read_after`, that this reader has not seen."""
        changed = set()
        for seq, event_id in rows:
            if seq > self.position:
                self._gaps.update(dict.fromkeys(range(max(self.position + 1, seq - MAX_GAP), seq), now))
                self.position = seq
                changed.add(event_id)
            elif self._gaps.pop(seq, None) is not None:
                changed.add(event_id)
        for seq, missed_at in list(self._gaps.items()):
            if now - missed_at > GAP_SECONDS:
                del self._gaps[seq]
        return changed
