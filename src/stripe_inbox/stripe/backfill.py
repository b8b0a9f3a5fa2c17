"""Closing delivery gaps from Stripe's Events API: page through what Stripe kept, insert what is missing
through the same path as the ingress, and remember where to continue."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from ..errors import DeliveryRejected, InvalidArgument
from ..events import IncomingEvent
from ..inbox import Inbox
from ..models import utc
from .api import StripeAPI

backfill_log = logging.getLogger("stripe_inbox.backfill")
STATE_KEY = "backfill"
RETENTION_DAYS = 30  # how long Stripe's Events API keeps events
MAX_TYPES_FILTER = 20  # Stripe takes at most this many exact types[] per request


class BackfillResult(BaseModel):
    since: datetime = Field(description="events created at or after this were asked for")
    new: int = Field(description="events the inbox did not have")
    already_present: int
    filtered: int = Field(description="events whose type the configured filter does not keep")
    refused: int = Field(0, description="events the ingress would refuse too (too deeply nested, no id): skipped")
    pages: int
    resumed: bool = Field(description="true when this run continued one that was interrupted")
    continue_from: datetime | None = Field(description="where a plain backfill will start next time")


def start_of(since: str | None, days: float | None, now: float | None = None) -> float | None:
    """The Unix time a backfill starts from, from --since DATE or --days N (None: continue as remembered)."""
    if since is not None and days is not None:
        raise InvalidArgument("give --since or --days, not both")
    now = time.time() if now is None else now
    if days is not None:
        if not 0 < days <= RETENTION_DAYS:
            raise InvalidArgument(
                f"days must be more than 0 and at most {RETENTION_DAYS}: Stripe keeps events {RETENTION_DAYS} days"
            )
        return now - days * 86400
    if since is None:
        return None
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise InvalidArgument(f"since {since!r} is not a date: use YYYY-MM-DD or an ISO 8601 time") from None
    start = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if start < now - RETENTION_DAYS * 86400:
        raise InvalidArgument(
            f"since {since} is more than {RETENTION_DAYS} days ago: Stripe no longer has those events"
        )
    return start


async def backfill(
    inbox: Inbox,
    api: StripeAPI,
    since: float | None = None,
    undelivered_only: bool = False,
    progress: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """Insert the events Stripe has that the inbox lacks. An interrupted run is resumed by the next plain
    one (no `since`); a finished run is continued from the newest event it saw."""
    state = json.loads(await inbox.store.get_state(STATE_KEY) or "{}")
    run: dict[str, Any] | None = state.get("run")
    resumed = since is None and run is not None
    if not resumed:
        start = since if since is not None else state.get("continue_from", time.time() - RETENTION_DAYS * 86400)
        run = {
            "since": start,
            "undelivered_only": undelivered_only,
            "starting_after": None,
            "newest": None,
            "new": 0,
            "already_present": 0,
            "filtered": 0,
            "pages": 0,
        }
    assert run is not None
    params: dict[str, Any] = {"created": {"gte": int(run["since"])}}
    if run["undelivered_only"]:
        params["delivery_success"] = "false"
    if not inbox.filter.everything and not inbox.filter.prefixes and len(inbox.filter.exact) <= MAX_TYPES_FILTER:
        params["types"] = sorted(inbox.filter.exact)

    has_more = True
    while has_more:
        if run["starting_after"]:
            params["starting_after"] = run["starting_after"]
        payloads, has_more = await api.events_page(params)
        if not payloads:
            break
        events = _parsed(payloads)
        run["refused"] = run.get("refused", 0) + len(payloads) - len(events)
        for result in await inbox.accept(events):
            run[{"stored": "new", "duplicate": "already_present", "filtered": "filtered"}[result]] += 1
        run["pages"] += 1
        run["starting_after"] = json.loads(payloads[-1])["id"]
        run["newest"] = max(run["newest"] or 0, 0, *(event.created for event in events))
        # Saved after the page is stored: an interruption repeats at most this page, never skips one.
        await inbox.store.set_state(STATE_KEY, json.dumps({**state, "run": run}))
        if progress is not None:
            progress(_result(run, resumed, None))

    continue_from = max(run["newest"] or run["since"], state.get("continue_from", 0))
    await inbox.store.set_state(STATE_KEY, json.dumps({"continue_from": continue_from}))
    return _result(run, resumed, continue_from)


def _parsed(payloads: list[bytes]) -> list[IncomingEvent]:
    """The page's events; one the ingress would refuse is skipped and logged, not the end of the run."""
    events = []
    for payload in payloads:
        try:
            events.append(IncomingEvent.parse(payload))
        except DeliveryRejected as error:
            backfill_log.warning("skipped an event Stripe listed: %s", error)
    return events


def _result(run: dict[str, Any], resumed: bool, continue_from: float | None) -> BackfillResult:
    return BackfillResult(
        since=utc(run["since"]),  # type: ignore[arg-type]
        new=run["new"],
        already_present=run["already_present"],
        filtered=run["filtered"],
        refused=run.get("refused", 0),
        pages=run["pages"],
        resumed=resumed,
        continue_from=utc(continue_from),
    )
