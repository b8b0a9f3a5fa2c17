"""Outgoing actions a person agrees to first: a channel or tracker with `confirm = true` (and an e-mail channel
to the customer, unless it says `confirm = false`) sends only after someone approved, through MCP elicitation
while the tool call waits, or later from the dashboard or `stripe-inbox approvals`. Rejected, declined or lapsed,
nothing is sent; every answer is in the audit trail."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from .actions.channels import ConfigModel, needs_confirmation
from .models import Approval, DeliveryStatus
from .stores import Audit, DeliveryKind

if TYPE_CHECKING:
    from .actions.outbox import Outbox
    from .settings import Settings
    from .stores import Store

APPROVALS_URL = "/ui/approvals"
# What a person said when asked during the tool call; None: no one could be asked (or they dismissed it).
Consent = Literal["granted", "declined"]
DECLINED = "declined by the person asked to confirm it"
AWAITING = "awaiting a person's approval"


def first_state(config: ConfigModel, consent: Consent | None) -> tuple[DeliveryStatus, str | None]:
    """How a notification through `config` starts, and why: queued, unless a person must agree first and declined
    when asked during the call (rejected) or could not be asked (awaiting approval)."""
    if not needs_confirmation(config) or consent == "granted":
        return "queued", None
    if consent == "declined":
        return "rejected", DECLINED
    return "awaiting_approval", AWAITING


class Approvals:
    """What waits for a person's answer, over the store; an approved one is sent through the outbox at once."""

    def __init__(self, store: Store, settings: Settings, outbox: Outbox) -> None:
        self.store = store
        self.settings = settings
        self.outbox = outbox

    @property
    def timeout(self) -> timedelta:
        return timedelta(minutes=self.settings.approval_timeout_minutes)

    async def waiting(self) -> list[Approval]:
        """What waits for a person, oldest first; what has waited too long lapses first."""
        await self.lapse()
        return [self._with_deadline(approval) for approval in await self.store.approvals()]

    async def count_waiting(self) -> int:
        """How many wait for a person and have not lapsed: cheap enough for every page's navigation."""
        return await self.store.count_approvals(time.time() - self.timeout.total_seconds())

    async def where_to_approve(self, kind: DeliveryKind, ref_id: int) -> str:
        """What to tell the one who asked for a notification or ticket that now waits for a person."""
        approval = await self.store.approval_of(kind, ref_id)
        return (
            f"{AWAITING}: `stripe-inbox approvals approve {approval.id}` (or `reject {approval.id}`), or the "
            f"dashboard's approvals list at {APPROVALS_URL}; it lapses unsent after "
            f"{self.settings.approval_timeout_minutes:g} minutes"
        )

    async def approve(self, approval_id: int, actor: str) -> Approval:
        """Approve it and make the first attempt at once, as the tool call would have."""
        await self.lapse()
        decided = await self.store.decide(approval_id, True, None, time.time(), Audit(actor, "approve", {}))
        ref = decided.notification or decided.ticket
        assert ref is not None
        await self.outbox.deliver_now(decided.kind, ref.id)
        return self._with_deadline(await self.store.approval(approval_id))

    async def reject(self, approval_id: int, actor: str) -> Approval:
        await self.lapse()
        reason = f"rejected by {actor}"
        decided = await self.store.decide(approval_id, False, reason, time.time(), Audit(actor, "reject", {}))
        return self._with_deadline(decided)

    async def lapse(self) -> list[int]:
        """Reject, unsent, whatever has waited longer than `approval_timeout_minutes`."""
        now = time.time()
        minutes = self.settings.approval_timeout_minutes
        return await self.store.lapse_approvals(
            now - self.timeout.total_seconds(),
            f"lapsed: no one approved it within {minutes:g} minutes",
            now,
            Audit("approvals", "lapse", {"approval_timeout_minutes": minutes}),
        )

    def _with_deadline(self, approval: Approval) -> Approval:
        return approval.model_copy(update={"lapses_at": approval.created_at + self.timeout})
