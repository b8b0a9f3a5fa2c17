"""A reader's place in a feed, as the opaque string MCP Events hands out: the highest position read and, below it,
the positions not seen yet that a transaction committing late may still fill (PostgreSQL numbers rows before
they commit, so a row can commit just after one numbered higher; stores/changes.py's ChangeCursor copes alike).
A missed position is looked for again for GAP_SECONDS, then taken for a number no row will ever have."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument
from ..stores.changes import GAP_SECONDS, MAX_GAP

VERSION = 1
MAX_CURSOR_LENGTH = 64 * 1024


@dataclass(slots=True)
class FeedCursor:
    name: str  # the event type whose feed this is a place in
    position: int  # the highest position read
    gaps: dict[int, float] = field(default_factory=dict)  # position -> when first missed (epoch seconds)

    @property
    def read_after(self) -> int:
        """The position to read the feed after: the lowest open gap's predecessor, or the position."""
        return min(self.gaps, default=self.position + 1) - 1

    def take(self, position: int, now: float, settled: int = 0) -> bool:
        """Whether the row at `position`, read in order after `read_after`, is one this reader has not seen;
        positions skipped on the way become gaps, but for those up to `settled`, long committed or deleted."""
        if position > self.position:
            lowest = max(self.position + 1, position - MAX_GAP, settled + 1)
            self.gaps.update(dict.fromkeys(range(lowest, position), now))
            self.position = position
            return True
        return self.gaps.pop(position, None) is not None

    def expire(self, now: float, checked_through: float) -> None:
        """Forget the gaps missed over GAP_SECONDS ago that a read has just looked for (up to `checked_through`)."""
        for position, missed_at in list(self.gaps.items()):
            if position <= checked_through and now - missed_at > GAP_SECONDS:
                del self.gaps[position]

    def skip_to(self, position: int) -> None:
        """Read on from `position`: what lies at or below it is not looked for any more."""
        self.gaps = {gap: missed_at for gap, missed_at in self.gaps.items() if gap > position}
        self.position = max(self.position, position)

    def copy(self) -> FeedCursor:
        return FeedCursor(self.name, self.position, dict(self.gaps))

    def encode(self) -> str:
        """The opaque string: base64url of a small JSON document (gaps as runs missed at the same moment)."""
        runs: list[list[float]] = []
        for gap in sorted(self.gaps):
            missed_at = round(self.gaps[gap], 3)
            if runs and runs[-1][1] == gap - 1 and runs[-1][2] == missed_at:
                runs[-1][1] = gap
            else:
                runs.append([gap, gap, missed_at])
        document = {"v": VERSION, "n": self.name, "p": self.position, "g": runs}
        text = json.dumps(document, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    @classmethod
    def decode(cls, text: Any, name: str) -> FeedCursor:
        """The cursor `text` for the feed of `name`; InvalidArgument saying what is wrong otherwise."""
        if not isinstance(text, str) or not text or len(text) > MAX_CURSOR_LENGTH:
            raise InvalidArgument(f"cursor must be a cursor this server returned for {name}, or null, not {text!r}")
        try:
            document = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (ValueError, binascii.Error):
            raise InvalidArgument(f"cursor {_shown(text)} is not one this server returned") from None
        if not isinstance(document, dict) or document.get("v") != VERSION:
            raise InvalidArgument(f"cursor {_shown(text)} is not one this server returned")
        if document.get("n") != name:
            raise InvalidArgument(f"cursor {_shown(text)} belongs to {document.get('n')!r} events, not {name}")
        position, runs = document.get("p"), document.get("g")
        if not _count(position) or not isinstance(runs, list):
            raise InvalidArgument(f"cursor {_shown(text)} is damaged: no position")
        gaps: dict[int, float] = {}
        for run in runs:
            if not (isinstance(run, list) and len(run) == 3 and _count(run[0]) and _count(run[1])):
                raise InvalidArgument(f"cursor {_shown(text)} is damaged: a gap is malformed")
            low, high, missed_at = run
            if not (low <= high < position and isinstance(missed_at, int | float) and len(gaps) + high - low < MAX_GAP):
                raise InvalidArgument(f"cursor {_shown(text)} is damaged: a gap is out of range")
            gaps.update(dict.fromkeys(range(low, high + 1), float(missed_at)))
        return cls(name, position, gaps)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")
