"""What every area store stands on: the connector, and the change log its writes tell watchers through."""

from __future__ import annotations

from .changes import ChangeLog
from .connector import Connector


class AreaStore:
    """One area of the inbox's tables (events, outbox, forwards, …), over the connector all areas share."""

    def __init__(self, db: Connector, changes: ChangeLog) -> None:
        self.db = db
        self.changes = changes
